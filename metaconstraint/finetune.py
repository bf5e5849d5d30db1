"""Online fine-tuning of finished offline runs: ``metaconstraint finetune RUN_DIR --online-steps N``.

The offline runs' members (one folder each, the same config but the seed) continue as one
vectorised run in the dataset's evaluation environment, one environment per member. Each step of
the loop is one environment step per member, then (after ``warmup_steps``) one update of the
offline run's algorithm on a minibatch mixed from the offline data and the member's online buffer
(:mod:`metaconstraint.rl.online`). Nothing else changes: every algorithm keeps its own losses,
optimiser states and schedules, and its updates continue the offline iteration count, so a learned
scale (ASPC's alpha, aspc-iql's beta) keeps following its meta-gradient through the switch.

Exploration: a deterministic actor adds Gaussian noise of std ``exploration_noise * max_action``
(TD3's rule); a Gaussian actor (IQL, aspc-iql) samples its own policy (IQL's online recipe).

Run folders: ``OUT/<algorithm>/<dataset>/seed<K>-finetune`` (``[-<tag>]``), beside the offline
ones by default, with the offline config plus a ``[finetune]`` table in ``config.toml``. Metrics
count online steps (``step``; ``iteration`` is the algorithm's count); step 0 is the offline
policy evaluated on the run's final-evaluation episodes, so ``summary.json``'s ``offline.score``
and ``final_score`` are paired episode by episode. Checkpoints hold the online buffers and each
member's current episode as its reset seed and actions, so ``metaconstraint resume`` replays it and
continues bit for bit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metaconstraint.checkpoint import checked_state, read_checkpoint
from metaconstraint.config import RunConfig, build_configs
from metaconstraint.members import Member, join_tags
from metaconstraint.rl import data as data_module
from metaconstraint.rl.online import Episodes, MixedSampler, OnlineBuffer, ReplayMismatch
from metaconstraint.runs import (
    ResumeError,
    checkpoint_paths,
    checkpoint_step,
    read_run_folder,
    run_directory,
    scale_metric,
)
from metaconstraint.training import Trainer

FINETUNE_TAG = "finetune"
SETTINGS_OPTIONS = ("offline_fraction", "warmup_steps", "exploration_noise")  # of FinetuneSettings: the rest are derived
ONLINE_RUN_OPTIONS = ("eval_every", "eval_episodes", "final_eval_episodes", "log_every", "checkpoint_every",
                          "keep_checkpoints", "device", "threads", "compile", "gemm", "loggers", "wandb_mode",
                          "wandb_project", "mlflow_tracking_uri")


class FinetuneError(ResumeError):
    """Offline runs that cannot be fine-tuned, or settings that cannot be used; the message says why."""


def final_checkpoint(run_dir: Path, steps: int) -> Path:
    """The checkpoint of an offline run's final iteration, which fine-tuning continues from."""
    paths = checkpoint_paths(run_dir)
    if not paths or checkpoint_step(paths[-1]) != steps:
        raise FinetuneError(f"{run_dir} has no checkpoint of its final iteration ({steps:,}): fine-tuning continues from it.")
    return paths[-1]


def _finished_offline_run(run_dir: Path) -> dict[str, Any]:
    """The flat config of a finished offline run folder (with ``out``)."""
    values = read_run_folder(run_dir)
    if values.get("finetune"):
        raise FinetuneError(f"{run_dir} is itself a fine-tuning run: fine-tune the offline run it started from.")
    if not (run_dir / "summary.json").is_file():
        raise FinetuneError(
            f"{run_dir} has not finished (no summary.json): finish it first with `metaconstraint resume {run_dir}`."
        )
    final_checkpoint(run_dir, int(values["steps"]))
    return values


def finetune_values(
    run_dirs: list[Path], online_steps: int, out: Path | None = None, tag: str | None = None, **options: Any
) -> tuple[dict[str, Any], list[Member]]:
    """The flat config of a fine-tuning run of the finished offline runs ``run_dirs`` and its members.

    ``options``: the fine-tuning settings (``offline_fraction``, ``warmup_steps``,
    ``exploration_noise``) and run options of the online phase (``eval_every``, ``device``, ...);
    ``None`` keeps a default (the offline run's for run options).
    """
    if not run_dirs:
        raise FinetuneError("give at least one finished offline run folder.")
    if online_steps < 1:
        raise FinetuneError(f"--online-steps must be at least 1, got {online_steps}.")
    run_dirs = [Path(d) for d in run_dirs]
    offline = [_finished_offline_run(d) for d in run_dirs]
    first = offline[0]
    ignored = {"seed", "seeds", "out"}
    for directory, values in zip(run_dirs[1:], offline[1:]):
        differ = sorted(k for k in set(first) | set(values) if k not in ignored and first.get(k) != values.get(k))
        if differ:
            raise FinetuneError(
                f"{run_dirs[0]} and {directory} differ in {', '.join(differ)}: runs fine-tuned together share their "
                f"config but the seed. Fine-tune them separately."
            )
        if Path(values["out"]) != Path(first["out"]):
            raise FinetuneError(f"{run_dirs[0]} and {directory} are in different output folders: fine-tune them separately.")
    seeds = [int(v.get("seed", 0)) for v in offline]
    if len(set(seeds)) != len(seeds):
        raise FinetuneError(f"the same seed is given twice ({seeds}): give each offline run folder once.")
    unknown = sorted(set(options) - set(ONLINE_RUN_OPTIONS) - set(SETTINGS_OPTIONS))
    if unknown:
        raise FinetuneError(f"unknown fine-tuning option(s): {', '.join(unknown)}.")
    settings = {k: v for k, v in options.items() if k in SETTINGS_OPTIONS and v is not None}
    run_options = {k: v for k, v in options.items() if k in ONLINE_RUN_OPTIONS and v is not None}
    offline_out = Path(first["out"])
    finetune_out = Path(out).resolve() if out is not None else offline_out
    settings.update(online_steps=online_steps, offline_out=os.path.relpath(offline_out, finetune_out))
    if first.get("tag"):
        settings["offline_tag"] = first["tag"]
    values = {k: v for k, v in first.items() if k not in ignored}
    values.update(run_options, seed=seeds[0], seeds=len(seeds), out=str(finetune_out), finetune=settings,
                  tag=join_tags(first.get("tag"), FINETUNE_TAG, tag))
    run, _ = build_configs(values, source="fine-tuning options")  # validate here: the message names the options
    return values, [Member(seed, {}, run.tag) for seed in seeds]


class FineTuner(Trainer):
    """The offline trainer with an environment step before each update and mixed minibatches."""

    def __init__(self, run: RunConfig, algorithm_config, **options: Any):
        if run.finetune is None:
            raise ValueError("FineTuner needs a run with [finetune] settings (finetune_values).")
        super().__init__(run, algorithm_config, **options)
        self.settings = run.finetune
        self.total_steps = self.settings.online_steps
        offline_out = Path(os.path.normpath(Path(run.out).resolve() / self.settings.offline_out))
        self.offline_dirs = [
            run_directory(offline_out, run.algorithm, self.dataset_id, seed, self.settings.offline_tag) for seed in self.seeds
        ]
        members = len(self.seeds)
        self.online = OnlineBuffer(members, self.total_steps, self.info.observation_dim, self.info.action_dim, self.normalizer, self.device)
        self.episodes = Episodes(data_module.make_eval_env(self.dataset, members, autoreset=False), self.seeds)
        self.online_returns: list[list[float]] = [[] for _ in self.seeds]  # episodes ended since the last record

    # ----------------------------------------------------------------------------- the hooks
    def _make_sampler(self) -> MixedSampler:
        return MixedSampler(self.buffer, self.online, self.algorithm.batch_size, self.seeds, self.settings.offline_fraction)

    def _initial_state(self) -> dict[str, Any]:
        """The offline runs' final states (networks, optimiser and meta states)."""
        payloads = []
        for directory in self.offline_dirs:
            payload = read_checkpoint(final_checkpoint(directory, self.run.steps))
            saved = payload["normalizer"]
            if not (torch.equal(saved["mean"], self.normalizer.mean.cpu()) and torch.equal(saved["std"], self.normalizer.std.cpu())):
                raise ResumeError(
                    f"the offline run {directory} normalised states with other statistics than the dataset "
                    f"{self.dataset_id} gives now: the dataset changed since it ran."
                )
            payloads.append(payload)
        return checked_state(self.algorithm, self.seeds, [p["state"] for p in payloads], self.device, "the offline checkpoints")

    def _begin(self, state) -> list[dict[str, Any]]:
        """Step 0: start every member's first episode and score the offline policy on the final-evaluation episodes."""
        self.episodes.start()
        normalized = self.evaluate(state, self.run.final_eval_episodes)
        scale = self.algorithm.constraint_scale(state)
        rows = []
        for k in range(len(self.seeds)):
            row = {"step": 0, "iteration": self.run.steps, "score": float(normalized[k].mean()), "score_std": float(normalized[k].std())}
            if scale is not None:
                row[scale_metric(self.scale_name or "scale")] = float(scale[k])
            rows.append(row)
        return rows

    def _iterate(self, state, sampler, step: int):
        """One environment step per member (stored in the online buffers), then one update after the warm-up."""
        observations = torch.as_tensor(self.episodes.observations, device=self.device).unsqueeze(1)
        actions = self.algorithm.explore(state, self.normalizer(observations), self.settings.exploration_noise, sampler)
        actions = actions[:, 0].cpu().numpy()
        self.online.complete(actions)
        taken = self.episodes.step(actions)
        rewards = self.reward_scale * (taken["rewards"] + self.reward_offset - self.reward_mean)  # as the offline data's
        self.online.add(taken["observations"], taken["actions"], rewards, taken["next_observations"], taken["terminals"], taken["episode_over"])
        for k, episode_return in taken["finished"]:
            self.online_returns[k].append(episode_return)
        if step <= self.settings.warmup_steps:
            return state, None
        return self.algorithm.update(state, sampler, self._iteration(step))

    def _iteration(self, step: int) -> int:
        """The algorithm's iteration count at online step ``step``."""
        return self.run.steps + max(step - self.settings.warmup_steps, 0)

    def _add_to_rows(self, rows: list[dict[str, Any]]) -> None:
        for k, row in enumerate(rows):
            row["iteration"] = self._iteration(row["step"])
            if self.online_returns[k]:
                scores = data_module.normalized_score(self.info, np.asarray(self.online_returns[k]))
                row["online_score"] = float(np.mean(scores))
                row["online_episodes"] = len(self.online_returns[k])
                self.online_returns[k] = []

    def _member_payload(self, k: int) -> dict[str, Any]:
        return {"online": {"buffer": self.online.member_state(k), "episode": self.episodes.member_state(k),
                           "returns": list(self.online_returns[k])}}

    def _restore_members(self, payloads: list[dict[str, Any]]) -> None:
        try:
            for k, payload in enumerate(payloads):
                self.online.load_member(k, payload["online"]["buffer"])
                self.online_returns[k] = list(payload["online"]["returns"])
            self.episodes.restore([p["online"]["episode"] for p in payloads])
        except KeyError:
            raise ResumeError("the checkpoint holds no online state: it was not written by a fine-tuning run.") from None
        except ReplayMismatch as error:
            raise ResumeError(str(error)) from None

    def _summary_extras(self, k: int, scores: list[dict[str, Any]]) -> dict[str, Any]:
        """``online_steps`` and the offline run: its folder (relative), iterations and score at step 0."""
        offline = {"run": os.path.relpath(self.offline_dirs[k], self.directories[k]), "steps": self.run.steps}
        if scores and scores[0]["step"] == 0:
            offline["score"] = scores[0]["score"]
        return {"online_steps": self.total_steps, "offline": offline}


def finetune_runs(run_dirs: list[Path], online_steps: int, out: Path | None = None, tag: str | None = None,
                  resume: bool = False, **options: Any) -> list[dict[str, Any]]:
    """Fine-tune finished offline runs (the CLI's ``finetune``) and return one summary per seed.
    ``options``: as :func:`finetune_values`; ``resume`` continues an interrupted fine-tuning."""
    values, members = finetune_values(run_dirs, online_steps, out, tag, **options)
    run, algorithm_config = build_configs(values, source="fine-tuning options")
    return FineTuner(run, algorithm_config, members=members, notify=lambda message: None).fit(resume=resume)


def make_trainer(run: RunConfig, algorithm_config, **options: Any) -> Trainer:
    """A :class:`FineTuner` for a run with ``[finetune]`` settings, else a :class:`Trainer`."""
    return (FineTuner if run.finetune is not None else Trainer)(run, algorithm_config, **options)
