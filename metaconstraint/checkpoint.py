"""Checkpoints: one format, written atomically, and the one way back from a checkpoint to a policy.

A checkpoint (``checkpoints/step<N>.pt`` in each member's run folder, :mod:`metaconstraint.runs`)
is data, never code (read with ``weights_only=True``): a dict of format :data:`CHECKPOINT_FORMAT`
with

- ``format``, ``algorithm``, ``dataset``, ``seed``, ``members`` (the seeds trained together),
  ``config`` (the run's resolved config), ``iteration``, ``member_records`` (members with their own
  hyperparameters, when there are);
- ``state``: this member's parameters, optimizer states, meta-parameters with their optimizers
  and schedule counters, outer-loss state;
- ``sampler``, ``rng``: this member's batch sampler and torch's, numpy's and Python's generators;
- ``accumulator``, ``metrics_records``, ``timing``: the open logging window's metric sums, how many
  metric records were written, the clocks;
- ``normalizer``: the state normalisation's ``mean`` and ``std``.

Everything the next iteration reads is in it, so resuming reproduces the uninterrupted run bit for
bit (on CPU). A checkpoint of another format is refused with a message naming both formats.

:func:`checked_state` stacks members' states and checks them against an algorithm's networks; it is
the core of the trainer's restore and of :func:`load_policy`, the policy loader behind
:func:`load_run_policy` (``evaluate``, ``export``) and ``datasets collect --policy``.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils._pytree import tree_map

from metaconstraint.algorithms import Algorithm, ProblemSpec
from metaconstraint.config import ConfigError, RunConfig, algorithm_class, build_configs, resolved_config
from metaconstraint.engine.members import stack_members
from metaconstraint.members import Member, member_records, members_from_records
from metaconstraint.monitor import named_leaves
from metaconstraint.problem import open_dataset, resolve_device, score_policy
from metaconstraint.rl.buffer import StateNormalizer
from metaconstraint.runs import (
    ResumeError,
    atomic_write,
    checkpoint_path,
    checkpoint_paths,
    checkpoint_step,
    prune_checkpoints,
    read_run_folder,
    run_directory,
)

CHECKPOINT_FORMAT = 1
TRACKER_KEYS = ("loggers", "wandb_mode", "wandb_project", "mlflow_tracking_uri")
RESUME_FREE_KEYS = ("out", "device", "threads", "compile", "gemm", *TRACKER_KEYS)  # may differ between a checkpoint and the run resuming it

__all__ = [
    "CHECKPOINT_FORMAT",
    "RESUME_FREE_KEYS",
    "ResumePlan",
    "RunPolicy",
    "check_format",
    "checked_state",
    "evaluate_run",
    "load_checkpoint",
    "load_policy",
    "load_run_policy",
    "newest_header",
    "plan_resume",
    "save_checkpoint",
]


# ----------------------------------------------------------------------------- files
def save_checkpoint(directory: Path, step: int, payload: dict[str, Any], keep: int | None = 2) -> Path:
    """Atomically write ``checkpoints/step<N>.pt``; then keep the newest ``keep`` (``None``: keep all).

    If the write fails (a full disk), the temporary file is removed and the checkpoints already
    there are untouched.
    """
    path = checkpoint_path(directory, step)
    # Serialise in memory first: torch's zip writer turns a failed file write (ENOSPC) into an
    # opaque RuntimeError, while a plain write of the bytes raises the OSError callers handle.
    serialised = io.BytesIO()
    torch.save(payload, serialised)
    atomic_write(path, lambda handle: handle.write(serialised.getbuffer()))
    if keep is not None:
        prune_checkpoints(directory, keep)
    return path


def load_checkpoint(path: Path, device="cpu") -> dict[str, Any]:
    """A checkpoint is data, never code: ``weights_only=True``."""
    return torch.load(path, map_location=device, weights_only=True)


def check_format(path: Path, payload: Any) -> None:
    """Raise :class:`ResumeError` unless ``payload`` is a checkpoint of :data:`CHECKPOINT_FORMAT`."""
    found = payload.get("format") if isinstance(payload, dict) else None
    if found != CHECKPOINT_FORMAT:
        what = "is not a metaconstraint checkpoint" if found is None else f"has checkpoint format {found}"
        raise ResumeError(f"{path} {what}; this version of metaconstraint reads checkpoint format {CHECKPOINT_FORMAT}.")


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint of this format, on the CPU; :class:`ResumeError` says why one cannot be read."""
    try:
        payload = load_checkpoint(path, "cpu")
    except Exception as error:  # noqa: BLE001  (truncated, corrupt, not a checkpoint)
        raise ResumeError(f"checkpoint {path} cannot be read ({type(error).__name__}: {error}).") from None
    check_format(path, payload)
    return payload


def newest_header(directory: Path) -> dict[str, Any] | None:
    """The newest readable checkpoint of ``directory`` (tensors memory-mapped), or ``None``."""
    for path in reversed(checkpoint_paths(directory)):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001  (an unreadable one: the trainer reports it on restore)
            continue
    return None


# ----------------------------------------------------------------------------- random generators
def global_rng_state() -> dict[str, Any]:
    """torch's, numpy's and Python's global generators, as checkpointable data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
    }


def set_global_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["internal"].tolist()), p["gauss_next"]))


# ----------------------------------------------------------------------------- states
def tree_signature(tree: Any) -> dict[str, str]:
    """``path -> "shape dtype"`` for tensors and ``path -> type name`` for other leaves."""
    return {
        path: (f"{tuple(leaf.shape)} {str(leaf.dtype).replace('torch.', '')}" if isinstance(leaf, Tensor) else type(leaf).__name__)
        for path, leaf in named_leaves(tree)
    }


def checked_state(algorithm: Algorithm, seeds: list[int], states: list[Any], device, where: str) -> Any:
    """Members' checkpointed ``states`` as one state on ``device``, checked against the networks of
    ``algorithm`` (initialised for ``seeds``); :class:`ResumeError` lists what differs."""
    try:
        state = tree_map(lambda leaf: leaf.to(device) if isinstance(leaf, Tensor) else leaf, stack_members(states))
    except ValueError:
        raise ResumeError(f"the checkpoints of {where} disagree on a counter.") from None
    expected, found = tree_signature(algorithm.init_state(seeds)), tree_signature(state)
    differences = [
        f"{key}: {found.get(key, 'missing')} in the checkpoint, {expected.get(key, 'absent')} here"
        for key in sorted(set(expected) | set(found))
        if expected.get(key) != found.get(key)
    ]
    if differences:
        more = f" (and {len(differences) - 3} more)" if len(differences) > 3 else ""
        raise ResumeError(
            f"{where} does not fit the networks of {algorithm.name}: {'; '.join(differences[:3])}{more}. It was "
            f"written by another algorithm, dataset or network shape."
        )
    return state


# ----------------------------------------------------------------------------- policies
@dataclass(frozen=True)
class RunPolicy:
    """A checkpoint's policy: the algorithm (one member), its state, the state normalisation, the
    dataset's description (``None`` when the caller gave only sizes) and the checkpoint's payload."""

    run: RunConfig
    algorithm: Algorithm
    state: dict[str, Any]
    normalizer: StateNormalizer
    info: Any  # rl.data.DatasetInfo
    payload: dict[str, Any]
    checkpoint: Path


def load_policy(
    path: Path, sizes: tuple[int, int, float], device: torch.device, values: dict[str, Any] | None = None, info=None
) -> RunPolicy:
    """The policy of the checkpoint ``path`` for ``(observation_dim, action_dim, max_action)``, built
    from the config ``values`` (default: the one the checkpoint saved); with the dataset's ``info``,
    the checkpoint must also have been trained on it. :class:`ResumeError` says what does not fit."""
    payload = read_checkpoint(path)
    run, algorithm_config = build_configs({**(values or payload["config"]), "device": str(device)}, source=f"{path}")
    if info is not None and (payload.get("algorithm") != run.algorithm or payload.get("dataset") != info.dataset_id):
        raise ResumeError(f"checkpoint {path} does not belong to this run ({payload.get('algorithm')}, {payload.get('dataset')}).")
    algorithm = algorithm_class(run.algorithm)(algorithm_config, ProblemSpec(*sizes, run.steps), 1, device)
    state = checked_state(algorithm, [run.seed], [payload["state"]], device, f"checkpoint {path}")
    normalizer = StateNormalizer(payload["normalizer"]["mean"].to(device), payload["normalizer"]["std"].to(device))
    return RunPolicy(run, algorithm, state, normalizer, info, payload, Path(path))


def load_run_policy(run_dir: Path, device: str = "cpu", eval_envs: int = 1) -> tuple[RunPolicy, Any]:
    """The policy of a run folder's newest checkpoint and ``eval_envs`` copies of its evaluation
    environment; every mismatch (no checkpoint, another run's checkpoint, other networks) is a
    :class:`ResumeError` that says which."""
    values = read_run_folder(run_dir)
    run, _ = build_configs({**values, "device": device}, source=f"{Path(run_dir) / 'config.toml'}")
    torch_device = resolve_device(device)
    paths = checkpoint_paths(run_dir)
    if not paths:
        raise ResumeError(f"{run_dir} has no checkpoint yet.")
    _, info, env = open_dataset(run.dataset, eval_envs)
    sizes = (info.observation_dim, info.action_dim, info.max_action)
    return load_policy(paths[-1], sizes, torch_device, values, info), env


def evaluate_run(run_dir: Path, episodes: int | None = None, device: str = "cpu") -> dict[str, Any]:
    """Score the newest checkpoint of a run folder again on seeded episodes.

    Returns ``{"step", "seed", "episodes", "scores" (E,), "mean", "std"}``; with the run's own episode
    count it reproduces the score of that checkpoint's evaluation.
    """
    if episodes is not None and episodes < 1:
        raise ResumeError(f"--episodes must be at least 1, got {episodes}.")
    episodes = episodes or build_configs({**read_run_folder(run_dir), "device": device})[0].eval_episodes
    policy, env = load_run_policy(run_dir, device, min(episodes, 100))  # more episodes play in rounds
    scores = score_policy(policy.algorithm, policy.state, policy.normalizer, policy.info, env, 1, episodes,
                          resolve_device(device))[0]
    return {
        "run": str(run_dir),
        "step": int(policy.payload["iteration"]),
        "seed": policy.run.seed,
        "episodes": episodes,
        "scores": [float(s) for s in scores],
        "mean": float(np.mean(scores)),
        "std": float(np.std(scores)),
    }


# ----------------------------------------------------------------------------- resuming
@dataclass(frozen=True)
class ResumePlan:
    """How to continue the run in a run folder: its flat config ``values`` (with ``out`` where the
    folder is, and ``seed``/``seeds`` of every member trained with it), the seed folders resumed
    together, the newest checkpoint's iteration (``None``: none yet) and whether it had finished."""

    values: dict[str, Any]
    directories: list[Path]
    iteration: int | None
    finished: bool
    members: list[Member] | None = None  # hyperparameter members trained together (None: seeds of one config)


def plan_resume(run_dir: Path) -> ResumePlan:
    """Read a run folder for ``--resume``: every seed trained with it resumes with it."""
    values = read_run_folder(run_dir)
    header = newest_header(Path(run_dir))
    members = [int(values.get("seed", 0))]
    iteration = None
    hyper_members = None
    if header is not None:
        members = [int(s) for s in header.get("members", members)]
        iteration = int(header.get("iteration", 0))
        if header.get("member_records"):  # members with their own hyperparameters: the run's shared config
            hyper_members = members_from_records(header["member_records"])
            values = {**header["config"], "out": values["out"]}
    out = Path(values["out"])
    if hyper_members is None and members != list(range(members[0], members[0] + len(members))):
        hyper_members = [Member(seed, {}, values.get("tag")) for seed in members]  # e.g. fine-tuned seeds 0, 2
    if hyper_members is None:
        values["seed"], values["seeds"] = members[0], len(members)
        directories = [run_directory(out, values["algorithm"], values["dataset"], s, values.get("tag")) for s in members]
        together = f"seeds {members}"
    else:
        directories = [run_directory(out, values["algorithm"], values["dataset"], m.seed, m.tag) for m in hyper_members]
        together = f"the members {[m.name for m in hyper_members]}"
    missing = [str(d) for d in directories if not (d / "config.toml").is_file()]
    if missing:
        raise ResumeError(
            f"{run_dir} was trained together with {together} in one vectorised run, and they resume "
            f"together; the folder(s) {', '.join(missing)} are missing."
        )
    length = values["finetune"]["online_steps"] if values.get("finetune") else values.get("steps")
    finished = all((d / "summary.json").is_file() for d in directories) and iteration == length
    return ResumePlan(values, directories, iteration, finished, hyper_members)


def newest_common_checkpoints(directories: list[Path], notify) -> tuple[int, list[Path], list[dict[str, Any]]] | None:
    """``(iteration, files, payloads)`` of the newest iteration every folder has a readable
    checkpoint of, or ``None`` when none has any; an unreadable one is reported through ``notify``
    and an older iteration tried."""
    available = [{checkpoint_step(p): p for p in checkpoint_paths(d)} for d in directories]
    if not any(available):
        return None
    common = sorted(set.intersection(*(set(a) for a in available)), reverse=True)
    if not common:
        raise ResumeError(
            f"the seed folders {[str(d) for d in directories]} have no checkpoint of the same iteration "
            f"({[sorted(a) for a in available]}), so they cannot be resumed together."
        )
    for step in common:
        files = [a[step] for a in available]
        try:
            return step, files, [load_checkpoint(f, "cpu") for f in files]
        except Exception as error:  # noqa: BLE001  (truncated, corrupt or foreign file: try an older one)
            notify(f"warning: a checkpoint of iteration {step} cannot be read ({type(error).__name__}: "
                   f"{str(error).splitlines()[0] if str(error) else ''}); trying an older one.")
    raise ResumeError(f"none of the checkpoints in {directories[0] / 'checkpoints'} can be read.")


def drop_newer_checkpoints(directory: Path, step: int) -> None:
    """Delete the checkpoints after iteration ``step`` (a resumed run rewrites them)."""
    for path in checkpoint_paths(directory):
        if checkpoint_step(path) > step:
            path.unlink(missing_ok=True)


def check_payload(
    path: Path, payload: Any, k: int, algorithm: str, dataset_id: str, members: list[Member], member_sweep: bool
) -> None:
    """Raise :class:`ResumeError` unless ``payload`` is member ``k``'s checkpoint of this run: this
    format, algorithm, dataset, seeds and (with a member sweep) members."""
    check_format(path, payload)
    where = f"checkpoint {path}"
    seeds = [m.seed for m in members]
    if payload["algorithm"] != algorithm:
        raise ResumeError(
            f"{where} was written by the algorithm {payload['algorithm']}, not {algorithm}: it belongs to another run."
        )
    if payload["dataset"] != dataset_id:
        raise ResumeError(f"{where} was trained on {payload['dataset']}, not {dataset_id}: it belongs to another run.")
    if payload["members"] != seeds or payload["seed"] != seeds[k]:
        raise ResumeError(
            f"{where} is seed {payload['seed']} of a run of seeds {payload['members']}; this run trains seeds {seeds}."
        )
    expected = member_records(members) if member_sweep else None
    if payload.get("member_records") != expected:
        found = [m.name for m in members_from_records(payload.get("member_records") or [])] or "its seeds alone"
        raise ResumeError(f"{where} was trained with the members {found}; this run trains {[m.name for m in members]}.")


def current_form(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config as this version writes it: keys renamed since read by their old names,
    keys added since at their defaults (which keep the old behaviour). A config this version cannot
    read is compared as it is (and so differs)."""
    try:
        run, algorithm = build_configs(saved, source="checkpoint")
    except ConfigError:
        return saved
    free = {key: saved[key] for key in RESUME_FREE_KEYS if key in saved}
    return {**resolved_config(run, algorithm), **{k: saved[k] for k in ("dataset",) if k in saved}, **free}


def check_config(path: Path, saved: dict[str, Any], resolved: dict[str, Any]) -> None:
    """Raise :class:`ResumeError` when the checkpoint's config differs from the run's ``resolved`` one
    beyond :data:`RESUME_FREE_KEYS` (after :func:`current_form`: a run started by an older version
    resumes when only names and added defaults changed)."""
    saved = current_form(saved)
    keys = sorted((set(saved) | set(resolved)) - set(RESUME_FREE_KEYS))
    changed = [
        f"{key} (checkpoint {saved.get(key)!r}, now {resolved.get(key)!r})" for key in keys if saved.get(key) != resolved.get(key)
    ]
    if changed:
        raise ResumeError(
            f"checkpoint {path} was written with another configuration: {', '.join(changed)}. Resuming "
            f"continues a run exactly as it was configured; start a new run to change it."
        )
