"""The one training loop every algorithm runs, with evaluation, metrics, checkpoints and summaries.

``Trainer(run_config, algorithm_config).fit()`` trains ``seeds`` members as one vectorised
computation and writes one run folder per seed (:mod:`metaconstraint.runs`).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from metaconstraint.algorithms import Algorithm, AlgorithmConfig, ProblemSpec
from metaconstraint.config import RunConfig, resolved_config, to_toml
from metaconstraint.engine import member, stack_members
from metaconstraint.rl import data as data_module
from metaconstraint.rl.buffer import MemberSampler, OfflineBuffer, StateNormalizer
from metaconstraint.rl.evaluation import evaluate_returns
from metaconstraint.runs import (
    MetricsLog,
    atomic_write_json,
    atomic_write_text,
    checkpoint_paths,
    environment_record,
    load_checkpoint,
    run_directory,
    save_checkpoint,
)
from metaconstraint.config import algorithm_class


class RunLogger:
    """A sink for a run's records beside metrics.jsonl/csv (TensorBoard, W&B, MLflow, ...).

    ``start`` gets the resolved config and the seed folders; ``log`` one record per seed (the rows
    written to metrics.jsonl, ``step`` included); ``finish`` the summaries.
    """

    def start(self, config: dict[str, Any], seeds: list[int], directories: list[Path]) -> None: ...

    def log(self, rows: list[dict[str, Any]]) -> None: ...

    def finish(self, summaries: list[dict[str, Any]]) -> None: ...


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite value; the message names the quantity and the step."""


class DeviceError(ValueError):
    pass


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device '{name}' (use cpu, cuda or cuda:N).") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {name}: this machine has no CUDA device (torch {torch.__version__}).")
    return device


def final_score(scores: list[float], rule: str, k: int) -> float:
    """``last``: the final evaluation's mean; ``mean_last_k``: mean of the last ``k`` evaluations."""
    if rule == "mean_last_k":
        return float(np.mean(scores[-k:]))
    return float(scores[-1])


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


class Trainer:
    """Trains one algorithm on one dataset for ``seeds`` members; ``fit()`` returns the summaries."""

    def __init__(
        self,
        run: RunConfig,
        algorithm_config: AlgorithmConfig,
        progress: Callable | None = None,
        loggers: list[RunLogger] | None = None,
    ):
        self.run = run
        self.loggers = list(loggers or [])
        self.algorithm_config = algorithm_config
        self.device = resolve_device(run.device)
        self.seeds = [run.seed + i for i in range(run.seeds)]
        self.progress = progress
        self.dataset = data_module.load_dataset(run.dataset)
        self.info = data_module.dataset_info(self.dataset)
        self.dataset_id = self.info.dataset_id
        transitions = data_module.load_transitions(self.dataset)
        normalize = getattr(algorithm_config, "normalize_states", True)
        self.normalizer = (
            StateNormalizer.fit(transitions.observations, device=self.device)
            if normalize
            else StateNormalizer.identity(self.info.observation_dim, self.device)
        )
        self.buffer = OfflineBuffer(transitions, self.normalizer, self.device)
        spec = ProblemSpec(self.info.observation_dim, self.info.action_dim, self.info.max_action, run.steps)
        self.algorithm: Algorithm = algorithm_class(run.algorithm)(algorithm_config, spec, len(self.seeds), self.device)
        self.directories = [
            run_directory(run.out, run.algorithm, self.dataset_id, seed, run.tag) for seed in self.seeds
        ]
        self._eval_env = None

    # ----------------------------------------------------------------------------- evaluation
    def evaluate(self, state: dict[str, Any], episodes: int | None = None) -> np.ndarray:
        """D4RL-normalised scores (x100), ``(M, E)``."""
        episodes = episodes or self.run.eval_episodes
        if self._eval_env is None or self._eval_env.num_envs != len(self.seeds) * episodes:
            self._eval_env = data_module.make_eval_env(self.dataset, len(self.seeds) * episodes)

        def act(observations: Tensor) -> Tensor:
            return self.algorithm.act(state, self.normalizer(observations))

        returns = evaluate_returns(act, self._eval_env, self.seeds, episodes, self.device)
        return data_module.normalized_score(self.info, returns)

    # ----------------------------------------------------------------------------- run folders
    def _write_start(self) -> None:
        config = resolved_config(self.run, self.algorithm_config)
        environment = environment_record()
        for seed, directory in zip(self.seeds, self.directories):
            directory.mkdir(parents=True, exist_ok=True)
            atomic_write_text(directory / "config.toml", to_toml({**config, "seed": seed, "seeds": 1, "dataset": self.dataset_id}))
            atomic_write_json(directory / "environment.json", environment)

    def _checkpoint(self, iteration: int, state, sampler: MemberSampler, logs: list[MetricsLog], timing) -> None:
        generator_states = sampler.get_state()
        for k, directory in enumerate(self.directories):
            payload = {
                "algorithm": self.run.algorithm,
                "dataset": self.dataset_id,
                "iteration": iteration,
                "state": member(state, k, copy=True),
                "sampler": generator_states[k],
                "metrics_records": len(logs[k].records),
                "timing": dict(timing),
                "torch_rng": torch.get_rng_state(),
                "numpy_rng": list(np.random.get_state()[1].tolist()),
                "python_rng": repr(random.getstate()),
            }
            save_checkpoint(directory, iteration, payload, keep=self.run.keep_checkpoints)

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
            "updates_per_second": timing["iterations_this_session"] / max(timing["train_seconds_this_session"], 1e-9),
            "meta_parameters": meta,
        }
        if self.run.final_score_rule == "mean_last_k":
            summary["final_score_k"] = self.run.final_score_k
        if scale is not None:
            summary["final_alpha"] = float(scale[k])
        return summary

    # ----------------------------------------------------------------------------- the loop
    def _restore(self, sampler: MemberSampler):
        """The newest checkpoint of every seed folder, stacked; ``None`` if there is none."""
        latest = [checkpoint_paths(d) for d in self.directories]
        if not all(latest):
            return None
        payloads = [load_checkpoint(paths[-1], self.device) for paths in latest]
        steps = {p["iteration"] for p in payloads}
        if len(steps) != 1:
            raise RuntimeError(f"the seed folders' newest checkpoints are at different iterations: {sorted(steps)}")
        sampler.set_state([p["sampler"] for p in payloads])
        torch.set_rng_state(payloads[0]["torch_rng"])
        state = stack_members([p["state"] for p in payloads])
        logs = [MetricsLog(d, MetricsLog.read(d)[: p["metrics_records"]]) for d, p in zip(self.directories, payloads)]
        return payloads[0]["iteration"], state, logs, payloads[0]["timing"]

    def fit(self, resume: bool = False) -> list[dict[str, Any]]:
        run, algorithm = self.run, self.algorithm
        torch.manual_seed(run.seed)
        np.random.seed(run.seed)
        random.seed(run.seed)
        sampler = MemberSampler(self.buffer, algorithm.batch_size, self.seeds)
        restored = self._restore(sampler) if resume else None
        if restored is None:
            self._write_start()
            start, state = 0, algorithm.init_state(self.seeds)
            logs = [MetricsLog(d) for d in self.directories]
            timing = {"iterations": 0, "train_seconds": 0.0, "wall_seconds": 0.0}
        else:
            start, state, logs, timing = restored
        timing.update(iterations_this_session=0, train_seconds_this_session=0.0)
        scores: list[list[dict[str, Any]]] = [
            [{"step": r["step"], "score": r["score"]} for r in log.records if "score" in r] for log in logs
        ]
        checkpoint_every = run.checkpoint_every or run.eval_every
        accumulator = Accumulator()
        session_start = time.perf_counter()
        wall_before = timing["wall_seconds"]
        train_clock = time.perf_counter()
        if self.progress:
            self.progress(start, None, None)
        for logger in self.loggers:
            logger.start(resolved_config(run, self.algorithm_config), self.seeds, self.directories)
        for iteration in range(start + 1, run.steps + 1):
            state, metrics = algorithm.update(state, sampler, iteration)
            accumulator.add(metrics)
            evaluate_now = iteration % run.eval_every == 0 or iteration == run.steps
            if iteration % run.log_every != 0 and not evaluate_now and iteration % checkpoint_every != 0:
                continue
            elapsed = time.perf_counter() - train_clock
            timing["train_seconds"] += elapsed
            timing["train_seconds_this_session"] += elapsed
            timing["iterations_this_session"] += iteration - timing["iterations"]
            timing["iterations"] = iteration
            means = accumulator.drain()
            self._check_finite(means, iteration)
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
                normalized = self.evaluate(state)
                for k, row in enumerate(rows):
                    row["score"] = float(normalized[k].mean())
                    row["score_std"] = float(normalized[k].std())
                    scores[k].append({"step": iteration, "score": row["score"]})
                last_score = float(normalized.mean())
            timing["wall_seconds"] = wall_before + time.perf_counter() - session_start
            for log, row in zip(logs, rows):
                log.append([row])
                log.flush()
            for logger in self.loggers:
                logger.log(rows)
            if iteration % checkpoint_every == 0 or iteration == run.steps:
                self._checkpoint(iteration, state, sampler, logs, timing)
            if self.progress:
                self.progress(iteration, last_score, None if scale_values is None else float(scale_values.mean()))
            train_clock = time.perf_counter()
        timing["wall_seconds"] = wall_before + time.perf_counter() - session_start
        summaries = [self._summary(k, scores[k], state, timing) for k in range(len(self.seeds))]
        for directory, summary in zip(self.directories, summaries):
            atomic_write_json(directory / "summary.json", summary)
        for logger in self.loggers:
            logger.finish(summaries)
        self.state = state
        return summaries

    def _check_finite(self, means: dict[str, np.ndarray], iteration: int) -> None:
        for name, values in means.items():
            if not np.isfinite(values).all():
                bad = [self.seeds[k] for k in np.flatnonzero(~np.isfinite(values))]
                raise TrainingDiverged(
                    f"training diverged: '{name}' became non-finite between iterations "
                    f"{iteration - self.run.log_every + 1} and {iteration} (seed(s) {bad}). "
                    "The last good checkpoint is kept in the run folder's checkpoints/."
                )
