"""Behaviour policies for ``datasets collect``: ``random``, a trained run, or a Python function.

A policy maps one flat observation ``(obs_dim,)`` to an action ``(act_dim,)``
(:data:`metaconstraint.rl.collect.Policy`). A trained policy is the deterministic actor of a run
folder's newest checkpoint (or of a given checkpoint file), with the run's state normalisation.
The checkpoint is read by :func:`metaconstraint.checkpoint.load_policy`, the one policy loader;
:mod:`metaconstraint.rl.collect` only ever sees the callable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from metaconstraint.checkpoint import load_policy
from metaconstraint.config import ConfigError
from metaconstraint.rl.collect import CollectError, Policy, import_policy
from metaconstraint.runs import ResumeError, checkpoint_paths

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
        policy = load_policy(file, (observation_dim, action_dim, max_action), torch.device("cpu"))
    except ConfigError as error:
        raise CollectError(f"--policy {file}: its config cannot be read ({error}).") from None
    except ResumeError as error:
        raise CollectError(
            f"--policy {file}: {error} (this environment has {observation_dim}-d observations, {action_dim}-d actions)."
        ) from None
    algorithm, state, normalizer, payload = policy.algorithm, policy.state, policy.normalizer, policy.payload

    @torch.no_grad()
    def act(observation: np.ndarray) -> np.ndarray:
        obs = torch.as_tensor(np.asarray(observation, dtype=np.float32)).reshape(1, 1, -1)
        return algorithm.act(state, normalizer(obs)).reshape(-1).numpy()

    act.__name__ = f"{policy.run.algorithm} {payload.get('dataset')} seed{payload.get('seed')} step{payload.get('iteration')}"
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
