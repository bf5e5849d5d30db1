"""The one training loop every algorithm runs, with evaluation, metrics, checkpoints and summaries.

``Trainer(run_config, algorithm_config).fit()`` trains ``seeds`` members as one vectorised
computation and writes one run folder per seed (:mod:`metaconstraint.runs`).

The loop leans on three neighbours:

- :mod:`metaconstraint.checkpoint`: a checkpoint holds everything the next iteration reads, so
  resuming from it reproduces the uninterrupted run bit for bit (on CPU). Evaluation needs no
  state: its episodes are seeded (:mod:`metaconstraint.rl.evaluation`).
- :mod:`metaconstraint.monitor`: metric sums and the divergence guard live on the device and are
  read only when metrics are flushed (no host sync per iteration). A diverged run stops with
  :class:`~metaconstraint.monitor.TrainingDiverged` and never checkpoints a bad state.
- :mod:`metaconstraint.signals`: SIGINT/SIGTERM ask the loop to checkpoint the current iteration
  and stop (:class:`TrainingInterrupted`).

A learned scale is logged under its own name, ``scale/alpha`` or ``scale/beta`` (the metric), and
``final_scale`` with ``scale_name`` (the summary; also ``final_alpha``, the shared conventions' name,
whatever the scale is called).
"""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from metaconstraint.algorithms import Algorithm, AlgorithmConfig, ProblemSpec
from metaconstraint.checkpoint import (
    CHECKPOINT_FORMAT,
    check_config,
    check_payload,
    checked_state,
    drop_newer_checkpoints,
    global_rng_state,
    newest_common_checkpoints,
    save_checkpoint,
    set_global_rng_state,
)
from metaconstraint.config import RunConfig, algorithm_class, resolved_config, to_toml
from metaconstraint.engine import member
from metaconstraint.engine.compiled import compile_seconds
from metaconstraint.engine.gemm import set_gemm
from metaconstraint.members import Member, member_configs, member_records
from metaconstraint.memory import check_batch_fits
from metaconstraint.monitor import Accumulator, DivergenceGuard, TrainingDiverged, divergence_message, non_finite_tensors
from metaconstraint.problem import open_dataset, resolve_device, score_policy
from metaconstraint.rl import data as data_module
from metaconstraint.rl.buffer import MemberSampler, OfflineBuffer, StateNormalizer
from metaconstraint.runs import (
    MetricsLog,
    ResumeError,
    RunFolderError,
    atomic_write_json,
    atomic_write_text,
    check_writable,
    checkpoint_paths,
    environment_record,
    final_score,
    legacy_scale_name,
    prune_checkpoints,
    record_resume,
    remove_temporary_files,
    run_directory,
    scale_metric,
    upgrade_metrics_record,
)
from metaconstraint.signals import stop_on_signals

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


def learned_scale_name(algorithm: Algorithm, state) -> str | None:
    """The learned scale's own name (``alpha``, ``beta``): the meta-parameter the algorithm's
    constraint scale is; ``None`` for fixed-scale methods."""
    scale = algorithm.constraint_scale(state)
    if scale is None:
        return None
    meta = algorithm.meta_parameters(state)
    if len(meta) == 1:
        return next(iter(meta))
    same = [name for name, value in meta.items() if torch.equal(value, scale)]
    return same[0] if len(same) == 1 else "scale"


class TrainingInterrupted(RuntimeError):
    """SIGINT or SIGTERM stopped the run after checkpointing ``iteration``."""

    def __init__(self, message: str, iteration: int, signal_number: int, directories: list[Path]):
        super().__init__(message)
        self.iteration, self.signal_number, self.directories = iteration, signal_number, directories


# ----------------------------------------------------------------------------- the trainer
class Trainer:
    """Trains one algorithm on one dataset for ``seeds`` members; ``fit()`` returns the summaries."""

    def __init__(
        self,
        run: RunConfig,
        algorithm_config: AlgorithmConfig,
        progress: Callable[[int, float | None, tuple[str, float] | None], None] | None = None,
        loggers: list[RunLogger] | None = None,
        notify: Callable[[str], None] | None = None,
        members: list[Member] | None = None,
    ):
        """``members``: the run's members (seed, config values, tag), e.g. from
        :func:`~metaconstraint.members.expand_members`; default: seeds ``seed..seed+seeds-1`` of one config."""
        self.run = run
        self.total_steps = run.steps  # the loop's steps (fine-tuning: its online steps)
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
        # training reward = scale * (r + offset - mean), kept so that online rewards (fine-tuning) get the same
        self.reward_offset = run.reward_offset if run.reward_offset is not None else self.info.reward_offset
        loaded = data_module.load_transitions(self.dataset, reward_offset=self.reward_offset)
        self.reward_mean = data_module.reward_mean(loaded) if run.reward_center else 0.0
        self.reward_scale = run.reward_scale or 1.0
        transitions = data_module.preprocess_rewards(loaded, center=bool(run.reward_center), scale=self.reward_scale)
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
        self.scale_name: str | None = None  # the learned scale's own name, known once fit() has a state

    # ----------------------------------------------------------------------------- what a subclass changes
    # (fine-tuning, metaconstraint.finetune: an environment step before each update, online data)
    def _make_sampler(self) -> MemberSampler:
        return MemberSampler(self.buffer, self.algorithm.batch_size, self.seeds)

    def _initial_state(self) -> dict[str, Any]:
        return self.algorithm.init_state(self.seeds)

    def _begin(self, state) -> list[dict[str, Any]] | None:
        """A fresh run's first metrics records, one per member, written before its first step (offline: none)."""
        return None

    def _iterate(self, state, sampler: MemberSampler, step: int):
        """Step ``step`` of the loop: ``(state, metrics)``, with ``metrics`` ``None`` when nothing was trained."""
        return self.algorithm.update(state, sampler, step)

    def _add_to_rows(self, rows: list[dict[str, Any]]) -> None:
        """Add to each member's metrics record (offline: nothing)."""

    def _member_payload(self, k: int) -> dict[str, Any]:
        """Member ``k``'s checkpoint entries beside the trainer's (offline: none)."""
        return {}

    def _restore_members(self, payloads: list[dict[str, Any]]) -> None:
        """Restore what :meth:`_member_payload` saved."""

    def _summary_extras(self, k: int, scores: list[dict[str, Any]]) -> dict[str, Any]:
        """Member ``k``'s summary entries beside the trainer's (offline: none)."""
        return {}

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
        payload.update(self._member_payload(k))
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

    def _summary(self, k: int, scores: list[dict[str, Any]], final_episodes: np.ndarray, state, timing) -> dict[str, Any]:
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
            "final_episode_scores": [float(x) for x in final_episodes],  # episodes 0..E-1: paired across runs
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
            summary["final_scale"], summary["scale_name"] = float(scale[k]), self.scale_name
            summary["final_alpha"] = float(scale[k])  # the shared conventions' name for the learned scale (alpha or beta)
        summary.update(self._summary_extras(k, scores))
        return summary

    # ----------------------------------------------------------------------------- resuming
    def _restore(self, sampler: MemberSampler):
        """Load the newest iteration every seed folder has a readable checkpoint of; ``None`` if
        there is none. Checkpoints newer than it and metric records written after it are dropped."""
        for directory in self.directories:
            remove_temporary_files(directory)
        found = newest_common_checkpoints(self.directories, self.notify)
        if found is None:
            return None
        step, files, payloads = found
        for k, (file, payload) in enumerate(zip(files, payloads)):
            check_payload(file, payload, k, self.run.algorithm, self.dataset_id, self.members, self.member_sweep)
        state = checked_state(self.algorithm, self.seeds, [p["state"] for p in payloads], self.device, f"checkpoint {files[0]}")
        check_config(files[0], payloads[0]["config"], self.resolved)
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
            old_name = legacy_scale_name(self.run.algorithm)
            kept = [upgrade_metrics_record(r, old_name) for r in records[: payload["metrics_records"]]]
            logs.append(MetricsLog(directory, kept))  # a folder of older names continues in today's
        try:
            for log in logs:
                log.flush()
            for directory in self.directories:
                drop_newer_checkpoints(directory, step)
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
        self._restore_members(payloads)
        accumulator = Accumulator.stacked([p["accumulator"] for p in payloads], self.device)
        self.last_checkpoint = step
        return step, state, logs, dict(payloads[0]["timing"]), accumulator

    # ----------------------------------------------------------------------------- the loop
    def _divergence(self, guard: DivergenceGuard, state, iteration: int) -> TrainingDiverged | None:
        broken = non_finite_tensors(state)
        if not guard.bad() and not broken:
            return None
        scale = self.algorithm.constraint_scale(state)
        what, quantity, step, hit = divergence_message(guard, broken, iteration, scale, self._member_list)
        kept = (
            f"The last good checkpoint, iteration {self.last_checkpoint}, is kept in "
            f"{self.directories[0] / 'checkpoints'}; nothing after it was saved."
            if self.last_checkpoint is not None
            else "No checkpoint had been written yet."
        )
        advice = (
            "Resuming would repeat the same steps: lower the learning rates (critic_lr, actor_lr and the "
            "scale's, scale_lr) or change the seed, and start a new run."
        )
        seeds = list(self.seeds) if hit is None else [self.seeds[k] for k in hit]
        return TrainingDiverged(f"training diverged: {what}. {kept} {advice}", quantity, step, seeds)

    def _member_list(self, indices: list[int]) -> str:
        if not self.member_sweep:
            seeds = [self.seeds[k] for k in indices]
            return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(str(s) for s in seeds)
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
        sampler = self._make_sampler()
        restored = self._restore(sampler) if resume else None
        if restored is None:
            if resume:
                self.notify("no checkpoint yet: the run starts from iteration 0.")
            torch.manual_seed(run.seed)
            np.random.seed(run.seed)
            random.seed(run.seed)
            self._write_start()
            start, state = 0, self._initial_state()
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
        final_episodes = None  # (M, E) from the final evaluation, for the summaries
        checkpoint_every = run.checkpoint_every or run.eval_every
        self.scale_name = learned_scale_name(algorithm, state)
        scale_key = scale_metric(self.scale_name or "")
        guard = DivergenceGuard(len(self.seeds), self.device, run.alpha_min, run.alpha_max, scale_key)
        session_start = time.perf_counter()
        wall_before = timing["wall_seconds"]
        train_clock = time.perf_counter()
        compile_mark = compile_seconds()
        if self.progress:
            self.progress(start, None, None)
        for logger in self.loggers:
            logger.start(self.member_resolved if self.member_sweep else self.resolved, self.seeds, self.directories)
        first_rows = self._begin(state) if restored is None else None
        if first_rows:
            for k, row in enumerate(first_rows):
                if "score" in row:
                    scores[k].append({"step": row["step"], "score": row["score"]})
            self._write_metrics(logs, first_rows)
            for logger in self.loggers:
                logger.log(first_rows)

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

        with stop_on_signals() as stop:
            for iteration in range(start + 1, self.total_steps + 1):
                state, metrics = self._iterate(state, sampler, iteration)
                if metrics is not None:
                    accumulator.add(metrics)
                    guard.observe(iteration, metrics, algorithm.constraint_scale(state))
                evaluate_now = iteration % run.eval_every == 0 or iteration == self.total_steps
                checkpoint_now = iteration % checkpoint_every == 0 or iteration == self.total_steps
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
                            row[scale_key] = float(scale_values[k])
                        rows.append(row)
                    self._add_to_rows(rows)
                    last_score = None
                    if evaluate_now:
                        final = iteration == self.total_steps
                        normalized = self.evaluate(state, run.final_eval_episodes if final else None)
                        if final:
                            final_episodes = normalized
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
                        scale_mean = None if scale_values is None else (self.scale_name, float(scale_values.mean()))
                        self.progress(iteration, last_score, scale_mean)
                    train_clock, compile_mark = time.perf_counter(), compile_seconds()
                if stop.signal_number is not None:
                    self._stop(stop.signal_number, iteration, guard, state, sampler, logs, timing, accumulator, clock)
        if final_episodes is None:  # resumed from the final checkpoint: the seeded evaluation replays exactly
            final_episodes = self.evaluate(state, run.final_eval_episodes)
        timing["wall_seconds"] = wall_before + time.perf_counter() - session_start
        summaries = [self._summary(k, scores[k], final_episodes[k], state, timing) for k in range(len(self.seeds))]
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
            f"{name}: stopped at iteration {iteration:,} of {self.total_steps:,} and saved a checkpoint.",
            iteration,
            signal_number,
            self.directories,
        )


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


