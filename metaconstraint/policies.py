"""Behaviour policies for ``datasets collect``: ``random``, a trained run, or a Python function.

A policy maps one flat observation ``(obs_dim,)`` to an action ``(act_dim,)``
(:data:`metaconstraint.rl.collect.Policy`). A trained policy is the deterministic actor of a run
folder's newest checkpoint (or of a given checkpoint file), with the run's state normalisation.
This module sits beside :mod:`metaconstraint.training` (it reads run folders and builds
algorithms); :mod:`metaconstraint.rl.collect` only ever sees the callable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from metaconstraint.algorithms import ProblemSpec
from metaconstraint.config import ConfigError, algorithm_class, build_configs
from metaconstraint.rl.buffer import StateNormalizer
from metaconstraint.rl.collect import CollectError, Policy, import_policy
from metaconstraint.runs import checkpoint_paths, load_checkpoint
from metaconstraint.training import CHECKPOINT_FORMAT, stack_states, tree_signature

__all__ = ["load_trained_policy", "resolve_policy"]


def _checkpoint_file(path: Path) -> Path:
    if path.is_file():
        return path
    if path.is_dir():
        found = checkpoint_paths(path)
        if found:
            return found[-1]
        raise CollectError(f"--policy {path}: the run folder has no checkpoint yet (checkpoints/step<N>.pt).")
    raise CollectError(
        f"--policy {path}: no such run folder or checkpoint. Use random, a run folder "
        f"(OUT/<algorithm>/<dataset>/seed<K>), a checkpoint file, or module:function."
    )


def load_trained_policy(path: Path, observation_dim: int, action_dim: int, max_action: float) -> Policy:
    """The deterministic policy of a run folder's newest checkpoint (or of a checkpoint file) for an
    environment with these sizes; a checkpoint trained on other sizes is refused."""
    file = _checkpoint_file(Path(path))
    try:
        payload = load_checkpoint(file, "cpu")
    except Exception as error:  # noqa: BLE001  (truncated, corrupt, not a checkpoint)
        raise CollectError(f"--policy {file}: not a readable checkpoint ({type(error).__name__}: {error}).") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CollectError(f"--policy {file}: not a metaconstraint checkpoint of format {CHECKPOINT_FORMAT}.")
    try:
        run, algorithm_config = build_configs({**payload["config"], "device": "cpu"}, source=f"{file}")
    except ConfigError as error:
        raise CollectError(f"--policy {file}: its config cannot be read ({error}).") from None
    spec = ProblemSpec(observation_dim, action_dim, max_action, run.steps)
    algorithm = algorithm_class(run.algorithm)(algorithm_config, spec, 1, torch.device("cpu"))
    state = stack_states([payload["state"]], torch.device("cpu"))
    if tree_signature(algorithm.init_state([run.seed])) != tree_signature(state):
        raise CollectError(
            f"--policy {file}: the policy was trained on {payload.get('dataset')} and does not fit this environment "
            f"({observation_dim}-d observations, {action_dim}-d actions)."
        )
    normalizer = StateNormalizer(payload["normalizer"]["mean"], payload["normalizer"]["std"])

    @torch.no_grad()
    def act(observation: np.ndarray) -> np.ndarray:
        obs = torch.as_tensor(np.asarray(observation, dtype=np.float32)).reshape(1, 1, -1)
        return algorithm.act(state, normalizer(obs)).reshape(-1).numpy()

    act.__name__ = f"{run.algorithm} {payload.get('dataset')} seed{payload.get('seed')} step{payload.get('iteration')}"
    return act


def resolve_policy(spec: str, observation_dim: int, action_dim: int, max_action: float) -> Policy | str:
    """``"random"`` as is; an existing path as a trained policy; ``module:function`` imported."""
    if spec == "random":
        return spec
    if Path(spec).exists() or "/" in spec or spec.endswith(".pt"):
        return load_trained_policy(Path(spec), observation_dim, action_dim, max_action)
    if ":" in spec:
        function = import_policy(spec)
        return function
    raise CollectError(
        f"--policy {spec!r}: use random, a run folder or checkpoint file of a trained policy, or a Python function "
        f"as module:function."
    )
