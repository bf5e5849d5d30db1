"""The Python API: the CLI's ``run`` as an object for notebooks and scripts.

>>> from metaconstraint import Experiment                                  # doctest: +SKIP
>>> experiment = Experiment("aspc", "dapg/pen/expert-v0", steps=2_000, out="runs-notebook")
>>> summary = experiment.fit()[0]              # trains, evaluates, writes the run folder(s)
>>> experiment.evaluate(episodes=5)            # (seeds, episodes) D4RL-normalised scores
>>> experiment.history("scale")                # [(step, value), ...] of the first seed's learned scale
>>> experiment.finetune(online_steps=10_000)    # then online, in the dataset's environment

Options are the flat keys of a run's ``config.toml`` (``steps``, ``seeds``, ``eval_every``,
``outer_losses``, ``objective``, ``scale_lr``, ...), validated exactly as on the command line.
``member_sweep={"alpha": [0.3, 1, 2.5, 10]}`` trains those values beside the seeds as one computation
(members = values x seeds, one run folder each, ``seed<K>-alpha=<value>``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from metaconstraint.algorithms import Algorithm
from metaconstraint.config import build_configs
from metaconstraint.members import expand_members
from metaconstraint.runs import legacy_scale_name, read_metrics, scale_history
from metaconstraint.training import Trainer


class Experiment:
    """One algorithm on one dataset for one or more seeds (stacked), with its run folders.

    ``algorithm``: a registered name (``"aspc"``, ``"aspc-iql"``, one made by
    :func:`~metaconstraint.algorithms.define_algorithm`) or the class itself. Attributes after
    construction: ``algorithm`` (the built :class:`~metaconstraint.algorithms.Algorithm`, networks
    and config), ``config`` (its validated config), ``run`` (the run config), ``directories`` (one
    run folder per member), ``members`` (seed, values, tag of each); after :meth:`fit`: ``state`` (parameters, optimizer and meta states) and
    ``summaries``.
    """

    def __init__(
        self, algorithm: str | type[Algorithm], dataset: str, member_sweep: dict[str, list[Any]] | None = None, **options: Any
    ):
        name = algorithm if isinstance(algorithm, str) else algorithm.name
        self.run, self.config = build_configs({"algorithm": name, "dataset": dataset, **options}, source="Experiment options")
        members = None
        if member_sweep:
            seeds = [self.run.seed + i for i in range(self.run.seeds)]
            members = expand_members({k: list(v) for k, v in member_sweep.items()}, seeds, self.run.tag)
        self.trainer = Trainer(self.run, self.config, notify=lambda message: None, members=members)
        self.members = self.trainer.members
        self.algorithm: Algorithm = self.trainer.algorithm
        self.directories: list[Path] = self.trainer.directories
        self.seeds: list[int] = self.trainer.seeds
        self.state: dict[str, Any] | None = None
        self.summaries: list[dict[str, Any]] = []

    def fit(self, resume: bool = False) -> list[dict[str, Any]]:
        """Train ``steps`` iterations and return one summary per seed (the contents of
        ``summary.json``). The run starts afresh in its folders, replacing a run found there;
        ``resume=True`` continues that run from its newest checkpoint instead."""
        self.summaries = self.trainer.fit(resume=resume)
        self.state = self.trainer.state
        return self.summaries

    def finetune(self, online_steps: int, **options: Any) -> list[dict[str, Any]]:
        """Fine-tune the trained runs online for ``online_steps`` environment steps each
        (:mod:`metaconstraint.finetune`; ``options``: ``offline_fraction``, ``warmup_steps``,
        ``exploration_noise``, ``eval_every``, ``out``, ``tag``, ...). Returns one summary per seed;
        the fine-tuning folders are ``seed<K>-finetune`` beside the offline ones."""
        from metaconstraint.finetune import finetune_runs

        self._trained()
        return finetune_runs(self.directories, online_steps, **options)

    def evaluate(self, episodes: int | None = None) -> np.ndarray:
        """D4RL-normalised scores ``(seeds, episodes)`` of the trained policies on seeded episodes."""
        return self.trainer.evaluate(self._trained(), episodes)

    def act(self, observations) -> np.ndarray:
        """The first seed's deterministic actions ``(N, action_dim)`` for raw observations ``(N, obs_dim)``."""
        obs = torch.as_tensor(np.asarray(observations, dtype=np.float32), device=self.trainer.device)
        stacked = obs.unsqueeze(0).expand(len(self.seeds), *obs.shape)
        return self.algorithm.act(self._trained(), self.trainer.normalizer(stacked))[0].cpu().numpy()

    def history(self, name: str, seed: int | None = None) -> list[tuple[int, float]]:
        """``[(step, value), ...]`` of a metric (``"scale"``, ``"score"``, ``"critic_loss"``, ...) from
        the run folder of ``seed`` (default: the first). ``"scale"`` is the learned constraint scale
        whatever its own name (``scale/alpha`` for aspc, ``scale/beta`` for aspc-iql)."""
        seed = self.seeds[0] if seed is None else seed
        if seed not in self.seeds:
            raise ValueError(f"seed {seed} is not one of this experiment's seeds {self.seeds}.")
        records = read_metrics(self.directories[self.seeds.index(seed)], legacy_scale_name(self.trainer.run.algorithm))
        if name == "scale":
            return scale_history(records)
        return [(int(r["step"]), float(r[name])) for r in records if name in r]

    def _trained(self) -> dict[str, Any]:
        if self.state is None:
            raise RuntimeError("the experiment has not been trained yet: call fit() first.")
        return self.state
