"""The one training loop every algorithm runs, with evaluation, metrics, checkpoints and summaries.

``Trainer(run_config, algorithm_config).fit()`` trains ``seeds`` members as one vectorised
computation and writes one run folder per seed (:mod:`metaconstraint.runs`).

Reliability, in one place:

- A checkpoint (``checkpoints/step<N>.pt``, one per seed folder) holds everything the next
  iteration reads: parameters and optimizer states, meta-parameters with their optimizers and
  schedule counters, outer-loss state, every random generator (torch, numpy, python, each member's
  sampler), the metric sums of the open logging window and how many metric records were written.
  Resuming from it reproduces the uninterrupted run bit for bit (on CPU). Evaluation needs no
  state: its episodes are seeded (:mod:`metaconstraint.rl.evaluation`).
- :class:`DivergenceGuard` watches every metric and the constraint scale on the device, keeps the
  first bad iteration per quantity, and is read only when metrics are flushed (no host sync per
  iteration). A diverged run stops with :class:`TrainingDiverged` and never checkpoints a bad state.
- SIGINT/SIGTERM ask the loop to checkpoint the current iteration and stop
  (:class:`TrainingInterrupted`).
"""

from __future__ import annotations

import contextlib
import math
import random
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from metaconstraint.algorithms import Algorithm, AlgorithmConfig, ProblemSpec
from metaconstraint.config import RunConfig, algorithm_class, build_configs, load_config_file, resolved_config, to_toml
from metaconstraint.engine import member
from metaconstraint.engine.compiled import compile_seconds
from metaconstraint.engine.gemm import set_gemm
from metaconstraint.members import Member, member_configs, member_records, members_from_records
from metaconstraint.memory import check_batch_fits
from metaconstraint.rl import data as data_module
from metaconstraint.rl.buffer import MemberSampler, OfflineBuffer, StateNormalizer
from metaconstraint.rl.evaluation import evaluate_returns
from metaconstraint.runs import (
    MetricsLog,
    RunFolderError,
    atomic_write_json,
    atomic_write_text,
    check_writable,
    checkpoint_paths,
    checkpoint_step,
    environment_record,
    load_checkpoint,
    prune_checkpoints,
    record_resume,
    remove_temporary_files,
    run_directory,
    save_checkpoint,
)

CHECKPOINT_FORMAT = 1
TRACKER_KEYS = ("loggers", "wandb_mode", "wandb_project", "mlflow_tracking_uri")
RESUME_FREE_KEYS = ("out", "device", "threads", "compile", "gemm", *TRACKER_KEYS)  # may differ between a checkpoint and the run resuming it


COMPILE_FROM_STEPS = 50_000  # runs this long compile by default: compiling (1-2 min) is repaid within ~10k iterations


def compile_wanted(run: RunConfig) -> bool:
    """The run option ``compile``, or by default whether the run is long enough to repay compiling."""
    return run.compile if run.compile is not None else run.steps >= COMPILE_FROM_STEPS


class RunLogger:
    """A sink for a run's records beside metrics.jsonl/csv (TensorBoard, W&B, MLflow, ...).

    ``start`` gets the resolved config (with hyperparameter members, a list: each member's
    config.toml) and the seed folders; ``log`` one record per seed (the rows
    written to metrics.jsonl, ``step`` included); ``finish`` the summaries.
    """

    def start(self, config: dict[str, Any] | list[dict[str, Any]], seeds: list[int], directories: list[Path]) -> None: ...

    def log(self, rows: list[dict[str, Any]]) -> None: ...

    def finish(self, summaries: list[dict[str, Any]]) -> None: ...

    def close(self) -> None:
        """End the sink's runs of a run that stopped early (diverged, interrupted, failed)."""


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite value or an insane constraint scale.

    ``quantity`` and ``iteration`` name the first bad value; ``seeds`` the members it hit.
    """

    def __init__(self, message: str, quantity: str, iteration: int, seeds: list[int]):
        super().__init__(message)
        self.quantity, self.iteration, self.seeds = quantity, iteration, seeds


class TrainingInterrupted(RuntimeError):
    """SIGINT or SIGTERM stopped the run after checkpointing ``iteration``."""

    def __init__(self, message: str, iteration: int, signal_number: int, directories: list[Path]):
        super().__init__(message)
        self.iteration, self.signal_number, self.directories = iteration, signal_number, directories


class ResumeError(ValueError):
    """A run folder or checkpoint that cannot be continued; the message says why."""


class DeviceError(ValueError):
    pass


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise DeviceError(f"unknown device '{name}' (use cpu, cuda or cuda:N).") from None
    if device.type not in ("cpu", "cuda"):
        raise DeviceError(f"--device {name}: only cpu and cuda devices are supported.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {name}: this machine has no CUDA device (torch {torch.__version__}).")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s).")
    return device


def final_score(scores: list[float], rule: str, k: int) -> float:
    """``last``: the final evaluation's mean; ``mean_last_k``: mean of the last ``k`` evaluations."""
    if rule == "mean_last_k":
        return float(np.mean(scores[-k:]))
    return float(scores[-1])


# ----------------------------------------------------------------------------- device-side records
@dataclass
class Accumulator:
    """Running sums of per-iteration metrics, on the device (no host sync until ``drain``)."""

    sums: dict[str, Tensor] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, metrics: dict[str, Tensor]) -> None:
        for name, value in metrics.items():
            if name in self.sums:
                self.sums[name] += value
                self.counts[name] += 1
            else:
                self.sums[name] = value.detach().clone().float()
                self.counts[name] = 1

    def drain(self) -> dict[str, np.ndarray]:
        means = {name: (total / self.counts[name]).cpu().numpy() for name, total in self.sums.items()}
        self.sums, self.counts = {}, {}
        return means

    def member(self, k: int) -> dict[str, Any]:
        """Member ``k``'s open window (copies), for a checkpoint."""
        return {"sums": {n: s[k].clone() for n, s in self.sums.items()}, "counts": dict(self.counts)}

    @classmethod
    def stacked(cls, members: list[dict[str, Any]], device) -> "Accumulator":
        names = list(members[0]["sums"])
        sums = {n: torch.stack([m["sums"][n] for m in members]).to(device) for n in names}
        return cls(sums, dict(members[0]["counts"]))


class DivergenceGuard:
    """The first iteration at which each watched quantity went bad, per member, kept on the device.

    ``observe`` (every iteration, no host sync) marks a metric that is NaN or infinite, and the
    constraint scale when it leaves ``[scale_min, scale_max]`` or is not finite. For each set of
    metric names an iteration reports, ``first[names]`` is ``(Q, M)`` with 0 for "never"
    (iterations are 1-based). ``bad`` (at a metrics flush, which syncs anyway) reads it back.
    """

    def __init__(self, num_members: int, device: torch.device, scale_min: float, scale_max: float, scale_name: str = "alpha"):
        self.num_members, self.device = num_members, device
        self.scale_min, self.scale_max, self.scale_name = scale_min, scale_max, scale_name
        self.first: dict[tuple[str, ...], Tensor] = {}

    def observe(self, iteration: int, metrics: dict[str, Tensor], scale: Tensor | None) -> None:
        values = list(metrics.values())
        names = tuple(metrics)
        if scale is not None:
            scale = scale.detach()
            sane = (scale >= self.scale_min) & (scale <= self.scale_max)  # NaN fails both
            values.append(torch.where(sane, scale, math.nan))
            names += (self.scale_name,)
        if not values:
            return
        bad = ~torch.isfinite(torch.stack(values))
        first = self.first.get(names)
        if first is None:
            first = self.first[names] = torch.zeros((len(names), self.num_members), dtype=torch.long, device=self.device)
        first.masked_fill_((first == 0) & bad, iteration)

    def bad(self) -> list[tuple[int, str, list[int]]]:
        """``(first iteration, quantity, member indices hit then)`` of every bad quantity, earliest first."""
        earliest: dict[str, np.ndarray] = {}
        for names, first in self.first.items():
            first = first.cpu().numpy()
            for q, name in enumerate(names):
                row = np.where(first[q] > 0, first[q], np.iinfo(np.int64).max)
                earliest[name] = np.minimum(earliest[name], row) if name in earliest else row
        found = []
        for name, row in earliest.items():
            step = int(row.min())
            if step != np.iinfo(np.int64).max:
                found.append((step, name, [int(k) for k in np.flatnonzero(row == step)]))
        return sorted(found)


def _leaves(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            yield from _leaves(value, f"{prefix}[{i}]")
    else:
        yield prefix, tree


def _seed_list(seeds: list[int]) -> str:
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(str(s) for s in seeds)


def non_finite_tensors(state: Any) -> list[str]:
    """Paths of the floating-point tensors of ``state`` holding a NaN or infinity (one host sync)."""
    named = [(path, t) for path, t in _leaves(state) if isinstance(t, Tensor) and t.is_floating_point()]
    if not named:
        return []
    finite = torch.stack([torch.isfinite(t).all() for _, t in named]).cpu().tolist()
    return [path for (path, _), ok in zip(named, finite) if not ok]


def tree_signature(tree: Any) -> dict[str, str]:
    """``path -> "shape dtype"`` for tensors and ``path -> type name`` for other leaves."""
    return {
        path: (f"{tuple(leaf.shape)} {str(leaf.dtype).replace('torch.', '')}" if isinstance(leaf, Tensor) else type(leaf).__name__)
        for path, leaf in _leaves(tree)
    }


def stack_states(trees: list[Any], device) -> Any:
    """Per-member trees -> one tree with a leading member dimension; Python leaves must agree."""
    first = trees[0]
    if isinstance(first, dict):
        return {k: stack_states([t[k] for t in trees], device) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(stack_states([t[i] for t in trees], device) for i in range(len(first)))
    if isinstance(first, Tensor):
        return torch.stack(trees).to(device)
    if any(t != first for t in trees[1:]):
        raise ResumeError(f"the seed folders' checkpoints disagree on a counter ({[t for t in trees]}).")
    return first


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


# ----------------------------------------------------------------------------- signals
class _StopRequest:
    signal_number: int | None = None


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[_StopRequest]:
    """SIGINT/SIGTERM set a flag the loop reads between iterations; a second one stops at once."""
    request = _StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum, frame):
        if request.signal_number is not None:
            raise KeyboardInterrupt
        request.signal_number = signum

    previous = {}
    for number in (signal.SIGINT, signal.SIGTERM):
        previous[number] = signal.signal(number, handler)
    try:
        yield request
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


# ----------------------------------------------------------------------------- datasets
def check_environment_spaces(info, env) -> None:
    """Raise :class:`~metaconstraint.rl.data.DatasetError` unless the dataset's observation and action
    spaces are those of its evaluation environment (else training would end in a crash at the first
    evaluation)."""
    import gymnasium as gym

    obs_space, act_space = env.single_observation_space, env.single_action_space
    problems = []
    for kind, space, dim in (("observation", obs_space, info.observation_dim), ("action", act_space, info.action_dim)):
        if not isinstance(space, gym.spaces.Box):
            problems.append(f"the environment's {kind} space is {type(space).__name__}, not Box")
        elif int(np.prod(space.shape)) != dim:
            problems.append(f"{kind}s have {dim} dimensions in the dataset but {int(np.prod(space.shape))} in the environment")
    if not problems and (
        not np.allclose(np.asarray(act_space.low, dtype=np.float64).reshape(-1), info.action_low)
        or not np.allclose(np.asarray(act_space.high, dtype=np.float64).reshape(-1), info.action_high)
    ):
        problems.append("the action bounds differ between the dataset and the environment")
    if problems:
        raise data_module.DatasetError(
            f"Dataset {info.dataset_id} does not match its evaluation environment {info.env_id or '(unnamed)'}: "
            f"{'; '.join(problems)}. A policy trained on it could not be evaluated. Check the env_spec and "
            f"eval_env_spec in the dataset's metadata, or recreate the dataset."
        )


def open_dataset(name: str, eval_envs: int = 1):
    """``(dataset, info, eval_env)`` after every check that needs no transitions: the dataset
    exists, is readable, is not empty, and matches its evaluation environment."""
    dataset = data_module.load_dataset(name)
    info = data_module.dataset_info(dataset)
    if info.total_steps == 0 or info.total_episodes == 0:
        raise data_module.DatasetError(
            f"Dataset {info.dataset_id} is empty ({info.total_episodes} episodes, {info.total_steps} steps): "
            f"there is nothing to train on. Download or collect it again."
        )
    env = data_module.make_eval_env(dataset, eval_envs)
    check_environment_spaces(info, env)
    return dataset, info, env


# ----------------------------------------------------------------------------- the trainer
class Trainer:
    """Trains one algorithm on one dataset for ``seeds`` members; ``fit()`` returns the summaries."""

    def __init__(
        self,
        run: RunConfig,
        algorithm_config: AlgorithmConfig,
        progress: Callable | None = None,
        loggers: list[RunLogger] | None = None,
        notify: Callable[[str], None] | None = None,
        members: list[Member] | None = None,
    ):
        """``members``: the run's members (seed, config values, tag), e.g. from
        :func:`~metaconstraint.members.expand_members`; default: seeds ``seed..seed+seeds-1`` of one config."""
        self.run = run
        from metaconstraint.trackers import make_loggers

        self.loggers = list(loggers or []) + make_loggers(run)
        self.notify = notify or (lambda message: print(message, file=sys.stderr))
        self.algorithm_config = algorithm_config
        self.device = resolve_device(run.device)
        if run.threads is not None:
            torch.set_num_threads(run.threads)
        set_gemm(run.gemm or "default")
        self.members = list(members) if members else [Member(run.seed + i, {}, run.tag) for i in range(run.seeds)]
        self.seeds = [m.seed for m in self.members]
        self.member_sweep = any(m.values for m in self.members)  # hyperparameter members beside the seeds
        member_algorithm_configs, varied = member_configs(algorithm_class(run.algorithm), algorithm_config, self.members)
        self.progress = progress
        self.dataset, self.info, self._eval_env = open_dataset(run.dataset, len(self.seeds) * run.eval_episodes)
        check_batch_fits(getattr(algorithm_config, "batch_size", None), len(self.seeds), self.info, self.device)
        self.dataset_id = self.info.dataset_id
        self.directories = [
            run_directory(run.out, run.algorithm, self.dataset_id, m.seed, m.tag) for m in self.members
        ]
        if len(set(self.directories)) != len(self.directories):
            raise RunFolderError(f"two members of this run would share a run folder: {[m.name for m in self.members]}.")
        for directory in self.directories:
            check_writable(directory)
        transitions = data_module.preprocess_rewards(
            data_module.load_transitions(self.dataset, reward_offset=run.reward_offset),
            center=bool(run.reward_center), scale=run.reward_scale or 1.0,
        )
        if len(transitions.rewards) == 0:
            raise data_module.DatasetError(f"Dataset {self.dataset_id} holds no transitions: there is nothing to train on.")
        normalize = getattr(algorithm_config, "normalize_states", True)
        self.normalizer = (
            StateNormalizer.fit(transitions.observations, device=self.device)
            if normalize
            else StateNormalizer.identity(self.info.observation_dim, self.device)
        )
        self.buffer = OfflineBuffer(transitions, self.normalizer, self.device)
        spec = ProblemSpec(self.info.observation_dim, self.info.action_dim, self.info.max_action, run.steps)
        self.algorithm: Algorithm = algorithm_class(run.algorithm)(algorithm_config, spec, len(self.seeds), self.device)
        if varied:
            self.algorithm.set_member_values(varied)
        if compile_wanted(run) and not self.algorithm.compile() and run.compile:
            self.notify(f"--compile: {run.algorithm} has no compiled form; it runs eagerly.")
        self.resolved = {**resolved_config(run, algorithm_config), "dataset": self.dataset_id}
        # each member's config.toml: exactly the config of the separate run it stands for
        self.member_resolved = [
            {**resolved_config(run.model_copy(update={"seed": m.seed, "seeds": 1, "tag": m.tag}), c), "dataset": self.dataset_id}
            for m, c in zip(self.members, member_algorithm_configs)
        ]
        self.last_checkpoint: int | None = None

    # ----------------------------------------------------------------------------- evaluation
    def evaluate(self, state: dict[str, Any], episodes: int | None = None) -> np.ndarray:
        """D4RL-normalised scores (x100), ``(M, E)``, on the shared episodes ``0..E-1``, played in
        rounds of ``eval_episodes`` environments per member."""
        episodes = episodes or self.run.eval_episodes
        return score_policy(self.algorithm, state, self.normalizer, self.info, self._eval_env, len(self.seeds), episodes, self.device)

    # ----------------------------------------------------------------------------- run folders
    def _write_start(self) -> None:
        """Fresh run folders: config, environment; stale checkpoints and summaries of an earlier
        run in the same folders are removed (never mix two runs)."""
        environment = environment_record()
        created = [d for d in self.directories if not d.exists()]
        try:
            for config, directory in zip(self.member_resolved, self.directories):
                directory.mkdir(parents=True, exist_ok=True)
                remove_temporary_files(directory)
                for stale in checkpoint_paths(directory):
                    stale.unlink()
                (directory / "summary.json").unlink(missing_ok=True)
                atomic_write_text(directory / "config.toml", to_toml(config))
                atomic_write_json(directory / "environment.json", environment)
        except OSError as error:
            for directory in created:  # nothing half-written
                shutil.rmtree(directory, ignore_errors=True)
            raise RunFolderError(f"cannot create the run folder {directory}: {error.strerror or error}.") from None

    def _payload(self, k: int, iteration: int, state, generator_state, logs, timing, accumulator, rng) -> dict[str, Any]:
        payload = {
            "format": CHECKPOINT_FORMAT,
            "algorithm": self.run.algorithm,
            "dataset": self.dataset_id,
            "seed": self.seeds[k],
            "members": list(self.seeds),
            "config": self.resolved,
            "iteration": iteration,
            "state": member(state, k, copy=True),  # copies: the real optimizer steps update buffers in place
            "sampler": generator_state,
            "accumulator": accumulator.member(k),
            "metrics_records": len(logs[k].records),
            "timing": dict(timing),
            "rng": rng,
            "normalizer": {"mean": self.normalizer.mean.cpu(), "std": self.normalizer.std.cpu()},
        }
        if self.member_sweep:  # which folders resume together, and each one's values
            payload["member_records"] = member_records(self.members)
        return payload

    def _checkpoint(self, iteration: int, state, sampler: MemberSampler, logs: list[MetricsLog], timing, accumulator) -> None:
        """Every seed folder's checkpoint, then pruning: the newest iteration all folders share
        always survives a crash in between."""
        generator_states = sampler.get_state()
        rng = global_rng_state()
        for k, directory in enumerate(self.directories):
            payload = self._payload(k, iteration, state, generator_states[k], logs, timing, accumulator, rng)
            try:
                save_checkpoint(directory, iteration, payload, keep=None)
            except OSError as error:
                kept = (
                    f"The previous checkpoint (iteration {self.last_checkpoint}) is intact: free some space, then "
                    f"continue with `metaconstraint resume {directory}`."
                    if self.last_checkpoint is not None
                    else "No earlier checkpoint exists, so the run has to start again."
                )
                raise RunFolderError(
                    f"cannot write the checkpoint of iteration {iteration} in {directory / 'checkpoints'} "
                    f"({error.strerror or error}). {kept}"
                ) from None
        for directory in self.directories:
            with contextlib.suppress(OSError):
                prune_checkpoints(directory, self.run.keep_checkpoints)
        self.last_checkpoint = iteration

    def _write_metrics(self, logs: list[MetricsLog], rows: list[dict[str, Any]]) -> None:
        for log, row in zip(logs, rows):
            log.append([row])
            try:
                log.flush()
            except OSError as error:
                raise RunFolderError(
                    f"cannot write the metrics of {log.directory} ({error.strerror or error}). "
                    + (
                        f"The last checkpoint (iteration {self.last_checkpoint}) is intact: free some space, then "
                        f"continue with `metaconstraint resume {log.directory}`."
                        if self.last_checkpoint is not None
                        else "No checkpoint exists yet, so the run has to start again."
                    )
                ) from None

    def _summary(self, k: int, scores: list[dict[str, Any]], state, timing) -> dict[str, Any]:
        values = [s["score"] for s in scores]
        meta = {name: float(v[k]) for name, v in self.algorithm.meta_parameters(state).items()}
        scale = self.algorithm.constraint_scale(state)
        summary = {
            "algorithm": self.run.algorithm,
            "dataset": self.dataset_id,
            "seed": self.seeds[k],
            "final_score": final_score(values, self.run.final_score_rule, self.run.final_score_k),
            "final_score_rule": self.run.final_score_rule,
            "scores": scores,
            "steps": timing["iterations"],
            "wall_seconds": timing["wall_seconds"],
            "train_seconds": timing["train_seconds"],
            "compile_seconds": timing.get("compile_seconds", 0.0),
            # this session's training iterations over their time: no evaluation, no compiling
            "updates_per_second": timing["iterations_this_session"] / max(timing["train_seconds_this_session"], 1e-9),
            "meta_parameters": meta,
        }
        if self.run.final_score_rule == "mean_last_k":
            summary["final_score_k"] = self.run.final_score_k
        if scale is not None:
            summary["final_alpha"] = float(scale[k])
        return summary

    # ----------------------------------------------------------------------------- resuming
    def _check_payload(self, path: Path, payload: dict[str, Any], k: int) -> None:
        where = f"checkpoint {path}"
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            found = payload.get("format") if isinstance(payload, dict) else None
            raise ResumeError(f"{where} has format {found}, this version reads format {CHECKPOINT_FORMAT}.")
        if payload["algorithm"] != self.run.algorithm:
            raise ResumeError(
                f"{where} was written by the algorithm {payload['algorithm']}, not {self.run.algorithm}: "
                f"it belongs to another run."
            )
        if payload["dataset"] != self.dataset_id:
            raise ResumeError(f"{where} was trained on {payload['dataset']}, not {self.dataset_id}: it belongs to another run.")
        if payload["members"] != self.seeds or payload["seed"] != self.seeds[k]:
            raise ResumeError(
                f"{where} is seed {payload['seed']} of a run of seeds {payload['members']}; this run trains "
                f"seeds {self.seeds}."
            )
        expected = member_records(self.members) if self.member_sweep else None
        if payload.get("member_records") != expected:
            found = [m.name for m in members_from_records(payload.get("member_records") or [])] or "its seeds alone"
            raise ResumeError(
                f"{where} was trained with the members {found}; this run trains {[m.name for m in self.members]}."
            )

    def _check_state(self, path: Path, state: Any) -> None:
        expected = tree_signature(self.algorithm.init_state(self.seeds))
        found = tree_signature(state)
        differences = [
            f"{key}: {found.get(key, 'missing')} in the checkpoint, {expected.get(key, 'absent')} here"
            for key in sorted(set(expected) | set(found))
            if expected.get(key) != found.get(key)
        ]
        if differences:
            more = f" (and {len(differences) - 3} more)" if len(differences) > 3 else ""
            raise ResumeError(
                f"checkpoint {path} does not fit this run's networks: {'; '.join(differences[:3])}{more}. It was "
                f"written by another algorithm, dataset or network shape."
            )

    def _check_config(self, path: Path, saved: dict[str, Any]) -> None:
        keys = sorted((set(saved) | set(self.resolved)) - set(RESUME_FREE_KEYS))
        changed = [f"{key} (checkpoint {saved.get(key)!r}, now {self.resolved.get(key)!r})" for key in keys if saved.get(key) != self.resolved.get(key)]
        if changed:
            raise ResumeError(
                f"checkpoint {path} was written with another configuration: {', '.join(changed)}. Resuming "
                f"continues a run exactly as it was configured; start a new run to change it."
            )

    def _restore(self, sampler: MemberSampler):
        """Load the newest iteration every seed folder has a readable checkpoint of; ``None`` if
        there is none. Checkpoints newer than it and metric records written after it are dropped."""
        for directory in self.directories:
            remove_temporary_files(directory)
        available = [{checkpoint_step(p): p for p in checkpoint_paths(d)} for d in self.directories]
        if not any(available):
            return None
        common = sorted(set.intersection(*(set(a) for a in available)), reverse=True)
        if not common:
            raise ResumeError(
                f"the seed folders {[str(d) for d in self.directories]} have no checkpoint of the same iteration "
                f"({[sorted(a) for a in available]}), so they cannot be resumed together."
            )
        payloads = None
        for step in common:
            try:
                payloads = [load_checkpoint(a[step], "cpu") for a in available]
                break
            except Exception as error:  # noqa: BLE001  (truncated, corrupt or foreign file: try an older one)
                self.notify(f"warning: a checkpoint of iteration {step} cannot be read ({type(error).__name__}: "
                            f"{str(error).splitlines()[0] if str(error) else ''}); trying an older one.")
        if payloads is None:
            raise ResumeError(f"none of the checkpoints in {self.directories[0] / 'checkpoints'} can be read.")
        for k, (payload, a) in enumerate(zip(payloads, available)):
            self._check_payload(a[step], payload, k)
        state = stack_states([p["state"] for p in payloads], self.device)
        self._check_state(available[0][step], state)
        self._check_config(available[0][step], payloads[0]["config"])
        logs = []
        for directory, payload in zip(self.directories, payloads):
            try:
                records = MetricsLog.read(directory)
            except (OSError, ValueError) as error:
                raise ResumeError(f"{directory / 'metrics.jsonl'} cannot be read ({error}).") from None
            if len(records) < payload["metrics_records"]:
                raise ResumeError(
                    f"{directory / 'metrics.jsonl'} has {len(records)} records but the checkpoint of iteration "
                    f"{step} counted {payload['metrics_records']}: the metrics were changed or lost."
                )
            logs.append(MetricsLog(directory, records[: payload["metrics_records"]]))
        try:
            for log in logs:
                log.flush()
            for a in available:
                for newer in [s for s in a if s > step]:
                    a[newer].unlink(missing_ok=True)
            for directory in self.directories:
                (directory / "summary.json").unlink(missing_ok=True)
            now = environment_record()
            changes = sorted({c for directory in self.directories for c in record_resume(directory, step, now)})
        except OSError as error:
            raise RunFolderError(f"cannot update the run folder {self.directories[0]} ({error.strerror or error}).") from None
        if changes:
            self.notify(
                f"warning: resuming from iteration {step} under another environment than the run started in "
                f"({'; '.join(changes)}); the run is not exactly reproducible, and environment.json lists both."
            )
        sampler.set_state([p["sampler"] for p in payloads])
        set_global_rng_state(payloads[0]["rng"])
        accumulator = Accumulator.stacked([p["accumulator"] for p in payloads], self.device)
        self.last_checkpoint = step
        return step, state, logs, dict(payloads[0]["timing"]), accumulator

    # ----------------------------------------------------------------------------- the loop
    def _divergence(self, guard: DivergenceGuard, state, iteration: int) -> TrainingDiverged | None:
        found = guard.bad()
        broken = non_finite_tensors(state)
        if not found and not broken:
            return None
        kept = (
            f"The last good checkpoint, iteration {self.last_checkpoint}, is kept in "
            f"{self.directories[0] / 'checkpoints'}; nothing after it was saved."
            if self.last_checkpoint is not None
            else "No checkpoint had been written yet."
        )
        advice = (
            "Resuming would repeat the same steps: lower the learning rates (critic_lr, actor_lr, alpha_lr) "
            "or change the seed, and start a new run."
        )
        if found:
            step, quantity, members = found[0]
            seeds = [self.seeds[k] for k in members]
            who = self._member_list(members)
            if quantity == guard.scale_name:
                scale = self.algorithm.constraint_scale(state)
                now = ", ".join(f"{float(scale[k]):.4g}" for k in members) if scale is not None else "?"
                what = (
                    f"{quantity} left its sane range [alpha_min, alpha_max] = [{guard.scale_min:g}, {guard.scale_max:g}] "
                    f"at iteration {step} ({who}; now {now})"
                )
            else:
                what = f"{quantity} became non-finite (NaN or Inf) at iteration {step} ({who})"
            others = [f"{name} (from iteration {s})" for s, name, _ in found[1:4]]
            if others:
                what += "; also " + ", ".join(others)
        else:
            step, quantity, seeds = iteration, broken[0], list(self.seeds)
            what = f"the state became non-finite by iteration {iteration}"
        if broken:
            what += f". Non-finite now: {', '.join(broken[:4])}" + (f" and {len(broken) - 4} more" if len(broken) > 4 else "")
        return TrainingDiverged(f"training diverged: {what}. {kept} {advice}", quantity, step, seeds)

    def _member_list(self, indices: list[int]) -> str:
        if not self.member_sweep:
            return _seed_list([self.seeds[k] for k in indices])
        return ("member " if len(indices) == 1 else "members ") + ", ".join(self.members[k].name for k in indices)

    def fit(self, resume: bool = False) -> list[dict[str, Any]]:
        """Train to ``run.steps`` (from the newest checkpoint when ``resume``); returns the summaries.

        A run that stops early (diverged, interrupted, failed) ends its tracker runs as failed
        before the error propagates, wherever it was started from (CLI, grid worker, Python).
        """
        try:
            return self._fit(resume)
        except BaseException:
            for logger in self.loggers:
                with contextlib.suppress(Exception):  # never hide why the run stopped
                    getattr(logger, "close", lambda: None)()
            raise

    def _fit(self, resume: bool) -> list[dict[str, Any]]:
        run, algorithm = self.run, self.algorithm
        sampler = MemberSampler(self.buffer, algorithm.batch_size, self.seeds)
        restored = self._restore(sampler) if resume else None
        if restored is None:
            if resume:
                self.notify("no checkpoint yet: the run starts from iteration 0.")
            torch.manual_seed(run.seed)
            np.random.seed(run.seed)
            random.seed(run.seed)
            self._write_start()
            start, state = 0, algorithm.init_state(self.seeds)
            logs = [MetricsLog(d) for d in self.directories]
            timing = {"iterations": 0, "train_seconds": 0.0, "wall_seconds": 0.0}
            accumulator = Accumulator()
        else:
            start, state, logs, timing, accumulator = restored
        timing.update(iterations_this_session=0, train_seconds_this_session=0.0)
        timing.setdefault("compile_seconds", 0.0)
        scores: list[list[dict[str, Any]]] = [
            [{"step": r["step"], "score": r["score"]} for r in log.records if "score" in r] for log in logs
        ]
        checkpoint_every = run.checkpoint_every or run.eval_every
        guard = DivergenceGuard(len(self.seeds), self.device, run.alpha_min, run.alpha_max)
        session_start = time.perf_counter()
        wall_before = timing["wall_seconds"]
        train_clock = time.perf_counter()
        compile_mark = compile_seconds()
        if self.progress:
            self.progress(start, None, None)
        for logger in self.loggers:
            logger.start(self.member_resolved if self.member_sweep else self.resolved, self.seeds, self.directories)

        def clock(iteration: int) -> None:
            """Book the iterations since ``train_clock``: their compiling apart from their training."""
            compiling = compile_seconds() - compile_mark
            elapsed = max(time.perf_counter() - train_clock - compiling, 0.0)
            timing["compile_seconds"] += compiling
            timing["train_seconds"] += elapsed
            timing["train_seconds_this_session"] += elapsed
            timing["iterations_this_session"] += iteration - timing["iterations"]
            timing["iterations"] = iteration
            timing["wall_seconds"] = wall_before + time.perf_counter() - session_start

        with _stop_on_signals() as stop:
            for iteration in range(start + 1, run.steps + 1):
                state, metrics = algorithm.update(state, sampler, iteration)
                accumulator.add(metrics)
                guard.observe(iteration, metrics, algorithm.constraint_scale(state))
                evaluate_now = iteration % run.eval_every == 0 or iteration == run.steps
                checkpoint_now = iteration % checkpoint_every == 0 or iteration == run.steps
                if iteration % run.log_every == 0 or evaluate_now or checkpoint_now:
                    clock(iteration)
                    means = accumulator.drain()
                    diverged = self._divergence(guard, state, iteration)
                    if diverged is not None:
                        raise diverged
                    scale = algorithm.constraint_scale(state)
                    scale_values = scale.cpu().numpy() if scale is not None else None
                    rows = []
                    for k in range(len(self.seeds)):
                        row = {"step": iteration, **{name: float(v[k]) for name, v in means.items()}}
                        if scale_values is not None:
                            row["alpha"] = float(scale_values[k])
                        rows.append(row)
                    last_score = None
                    if evaluate_now:
                        final = iteration == run.steps
                        normalized = self.evaluate(state, run.final_eval_episodes if final else None)
                        for k, row in enumerate(rows):
                            row["score"] = float(normalized[k].mean())
                            row["score_std"] = float(normalized[k].std())
                            scores[k].append({"step": iteration, "score": row["score"]})
                        last_score = float(normalized.mean())
                    timing["wall_seconds"] = wall_before + time.perf_counter() - session_start
                    self._write_metrics(logs, rows)
                    for logger in self.loggers:
                        logger.log(rows)
                    if checkpoint_now:
                        self._checkpoint(iteration, state, sampler, logs, timing, accumulator)
                    if self.progress:
                        self.progress(iteration, last_score, None if scale_values is None else float(scale_values.mean()))
                    train_clock, compile_mark = time.perf_counter(), compile_seconds()
                if stop.signal_number is not None:
                    self._stop(stop.signal_number, iteration, guard, state, sampler, logs, timing, accumulator, clock)
        timing["wall_seconds"] = wall_before + time.perf_counter() - session_start
        summaries = [self._summary(k, scores[k], state, timing) for k in range(len(self.seeds))]
        try:
            for directory, summary in zip(self.directories, summaries):
                atomic_write_json(directory / "summary.json", summary)
        except OSError as error:
            raise RunFolderError(
                f"cannot write {directory / 'summary.json'} ({error.strerror or error}). The final checkpoint is "
                f"intact: free some space, then run `metaconstraint resume {directory}` to write it."
            ) from None
        for logger in self.loggers:
            logger.finish(summaries)
        self.state = state
        return summaries

    def _stop(self, signal_number, iteration, guard, state, sampler, logs, timing, accumulator, clock) -> None:
        """Checkpoint the current iteration (unless it diverged) and raise :class:`TrainingInterrupted`."""
        diverged = self._divergence(guard, state, iteration)
        if diverged is not None:
            raise diverged
        if self.last_checkpoint != iteration:
            clock(iteration)
            self._checkpoint(iteration, state, sampler, logs, timing, accumulator)
        name = signal.Signals(signal_number).name
        raise TrainingInterrupted(
            f"{name}: stopped at iteration {iteration:,} of {self.run.steps:,} and saved a checkpoint.",
            iteration,
            signal_number,
            self.directories,
        )


def score_policy(algorithm: Algorithm, state, normalizer: StateNormalizer, info, env, members: int, episodes: int, device) -> np.ndarray:
    """D4RL-normalised scores ``(M, E)`` of the members' deterministic policies on the shared seeded
    episodes ``0..E-1`` (:mod:`metaconstraint.rl.evaluation`)."""

    def act(observations: Tensor) -> Tensor:
        return algorithm.act(state, normalizer(observations))

    returns = evaluate_returns(act, env, members, episodes, device)
    return data_module.normalized_score(info, returns)


# ----------------------------------------------------------------------------- run folders on disk
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


def _header(directory: Path) -> dict[str, Any] | None:
    """The newest readable checkpoint of ``directory`` (tensors memory-mapped), or ``None``."""
    for path in reversed(checkpoint_paths(directory)):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001  (an unreadable one: the trainer reports it on restore)
            continue
    return None


def read_run_folder(run_dir: Path) -> dict[str, Any]:
    """The flat config of a run folder, with ``out`` set to where the folder actually is."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file():
        raise ResumeError(
            f"{run_dir} is not a run folder (it has no config.toml). A run folder is "
            f"OUT/<algorithm>/<dataset>/seed<K>[-<tag>]/, e.g. runs/aspc/dapg__pen__expert-v0/seed0."
        )
    values = load_config_file(run_dir / "config.toml")
    if not isinstance(values.get("algorithm"), str) or not isinstance(values.get("dataset"), str):
        raise ResumeError(f"{run_dir / 'config.toml'} names no algorithm or dataset.")
    resolved = run_dir.resolve()
    if len(resolved.parents) < 3:
        raise ResumeError(f"{run_dir} is not a run folder: it is not inside OUT/<algorithm>/<dataset>/.")
    out = resolved.parents[2]
    expected = run_directory(out, values["algorithm"], values["dataset"], int(values.get("seed", 0)), values.get("tag"))
    if expected != resolved:
        raise ResumeError(
            f"{run_dir} does not sit where its config.toml puts it ({expected}): was the folder renamed? Put it back "
            f"at OUT/<algorithm>/<dataset with '/' as '__'>/seed<K>[-<tag>]/."
        )
    values["out"] = str(out)
    return values


def plan_resume(run_dir: Path) -> ResumePlan:
    """Read a run folder for ``--resume``: every seed trained with it resumes with it."""
    values = read_run_folder(run_dir)
    header = _header(Path(run_dir))
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
    finished = all((d / "summary.json").is_file() for d in directories) and iteration == values.get("steps")
    return ResumePlan(values, directories, iteration, finished, hyper_members)


@dataclass
class RunPolicy:
    """A run folder's policy as its newest checkpoint left it: the algorithm (one member), its state,
    the state normalisation, the dataset's description and the checkpoint's payload."""

    run: RunConfig
    algorithm: Algorithm
    state: dict[str, Any]
    normalizer: StateNormalizer
    info: Any  # rl.data.DatasetInfo
    payload: dict[str, Any]
    checkpoint: Path


def load_run_policy(run_dir: Path, device: str = "cpu", eval_envs: int = 1) -> tuple[RunPolicy, Any]:
    """The policy of a run folder's newest checkpoint and ``eval_envs`` copies of its evaluation
    environment; every mismatch (no checkpoint, another run's checkpoint, other networks) is a
    :class:`ResumeError` that says which."""
    values = read_run_folder(run_dir)
    values["device"] = device
    run, algorithm_config = build_configs(values, source=f"{Path(run_dir) / 'config.toml'}")
    torch_device = resolve_device(device)
    paths = checkpoint_paths(run_dir)
    if not paths:
        raise ResumeError(f"{run_dir} has no checkpoint yet.")
    try:
        payload = load_checkpoint(paths[-1], "cpu")
    except Exception as error:  # noqa: BLE001
        raise ResumeError(f"checkpoint {paths[-1]} cannot be read ({type(error).__name__}: {error}).") from None
    _, info, env = open_dataset(run.dataset, eval_envs)
    spec = ProblemSpec(info.observation_dim, info.action_dim, info.max_action, run.steps)
    algorithm = algorithm_class(run.algorithm)(algorithm_config, spec, 1, torch_device)
    if payload.get("format") != CHECKPOINT_FORMAT or payload.get("algorithm") != run.algorithm or payload.get("dataset") != info.dataset_id:
        raise ResumeError(f"checkpoint {paths[-1]} does not belong to this run ({payload.get('algorithm')}, {payload.get('dataset')}).")
    state = stack_states([payload["state"]], torch_device)
    if tree_signature(algorithm.init_state([run.seed])) != tree_signature(state):
        raise ResumeError(f"checkpoint {paths[-1]} does not fit the networks of {run.algorithm} on {info.dataset_id}.")
    normalizer = StateNormalizer(payload["normalizer"]["mean"].to(torch_device), payload["normalizer"]["std"].to(torch_device))
    return RunPolicy(run, algorithm, state, normalizer, info, payload, paths[-1]), env


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


def validate_run(run: RunConfig, algorithm_config: AlgorithmConfig, members: list[Member] | None = None) -> dict[str, Any]:
    """Every check a run makes before it trains, without loading transitions or writing anything
    (``run --dry-run``). Returns the resolved config and the run folders it would write."""
    from metaconstraint.trackers import check_available

    device = resolve_device(run.device)
    check_available(run.loggers)
    members = members or [Member(run.seed + i, {}, run.tag) for i in range(run.seeds)]
    _, varied = member_configs(algorithm_class(run.algorithm), algorithm_config, members)
    _, info, _ = open_dataset(run.dataset, 1)
    check_batch_fits(getattr(algorithm_config, "batch_size", None), len(members), info, device)
    directories = [run_directory(run.out, run.algorithm, info.dataset_id, m.seed, m.tag) for m in members]
    for directory in directories:
        check_writable(directory)
    spec = ProblemSpec(info.observation_dim, info.action_dim, info.max_action, run.steps)
    algorithm = algorithm_class(run.algorithm)(algorithm_config, spec, len(members), device)  # networks and losses, no weights
    if varied:
        algorithm.set_member_values(varied)
    return {
        "config": {**resolved_config(run, algorithm_config), "dataset": info.dataset_id},
        "directories": directories,
        "info": info,
    }


def has_run(directory: Path) -> bool:
    """Whether a run folder already holds (part of) a run: checkpoints or a summary."""
    return bool(checkpoint_paths(directory)) or (Path(directory) / "summary.json").exists()


__all__ = [
    "Accumulator",
    "DeviceError",
    "DivergenceGuard",
    "ResumeError",
    "ResumePlan",
    "RunLogger",
    "Trainer",
    "TrainingDiverged",
    "TrainingInterrupted",
    "check_environment_spaces",
    "evaluate_run",
    "has_run",
    "load_run_policy",
    "open_dataset",
    "plan_resume",
    "read_run_folder",
    "validate_run",
]
