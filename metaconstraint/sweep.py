"""Sweeps: grids over algorithms, datasets, seeds and any config field, from a TOML or YAML spec.

A spec (validated by pydantic before anything runs)::

    datasets = ["dapg/pen/expert-v0"]
    seeds = 3                      # seeds seed..seed+2; or a list: seeds = [0, 4]
    seed = 0

    [run]                          # fixed for every run: steps, eval_every, eval_episodes, device, ...
    steps = 20000

    [algorithms.aspc]              # fixed fields of one algorithm
    scale_lr_decay_steps = 1000000
    [algorithms.aspc.sweep]        # field -> values; every combination is one setting
    scale_lr = [1e-4, 3e-4]
    scale_interval = [10, 20]

    [algorithms.td3bc.sweep]
    alpha = [2.5, 5.0]

    [algorithms.bc]                # no sweep: one setting, the plain run folder seed<K>

A setting's runs live in ``seed<K>-<tag>`` folders, its tag naming the swept values
(``scale_lr=0.0001+scale_interval=10``); the report labels its column ``algorithm (tag)``.

Runs that differ only in their seed and in a scalar their algorithm can vary per member (td3bc's
``alpha`` above; :mod:`metaconstraint.members`) are packed into one vectorised job each
(``metaconstraint sweep --no-pack`` runs them one by one): td3bc at alpha in {2.5, 5.0} x 3 seeds
is one process of 6 members. Each member still writes its own run folder, as a separate run would.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from metaconstraint.config import MAX_SEED, ConfigError, build_configs, format_validation_error, load_config_file
from metaconstraint.members import values_tag
from metaconstraint.suggest import unknown_name

# Keys a sweep sets itself (per cell, from its own dimensions or from the command line).
RESERVED = {"algorithm", "dataset", "seed", "seeds", "tag", "out", "final_score_rule", "final_score_k"}
MAX_RUNS = 100_000


class AlgorithmEntry(BaseModel):
    """One algorithm of the sweep: fixed config fields beside an optional ``sweep`` table."""

    model_config = ConfigDict(extra="allow")

    sweep: dict[str, list[Any]] = Field(default_factory=dict, description="field -> the values it takes")

    @field_validator("sweep")
    @classmethod
    def _values(cls, sweep: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for name, values in sweep.items():
            if not values:
                raise ValueError(f"{name}: give at least one value")
            if len({repr(v) for v in values}) != len(values):
                raise ValueError(f"{name}: a value is listed twice")
        return sweep


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    algorithms: dict[str, AlgorithmEntry] = Field(min_length=1)
    datasets: list[str] = Field(min_length=1)
    seeds: int | list[int] = Field(3, description="a count (seeds seed..seed+N-1) or the seeds themselves")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    run: dict[str, Any] = Field(default_factory=dict, description="fixed run options of every run")

    @field_validator("datasets")
    @classmethod
    def _distinct_datasets(cls, datasets: list[str]) -> list[str]:
        if any(not d.strip() for d in datasets):
            raise ValueError("a dataset name is empty")
        if len(set(datasets)) != len(datasets):
            raise ValueError("a dataset is listed twice")
        return datasets

    @model_validator(mode="after")
    def _seed_list(self) -> "SweepSpec":
        if isinstance(self.seeds, int):
            if self.seeds < 1:
                raise ValueError("seeds: give at least 1")
            if self.seed + self.seeds - 1 > MAX_SEED:
                raise ValueError(f"the last seed, seed + seeds - 1, exceeds {MAX_SEED}")
        else:
            if not self.seeds or len(set(self.seeds)) != len(self.seeds):
                raise ValueError("seeds: a non-empty list of distinct seeds")
            if any(not 0 <= s <= MAX_SEED for s in self.seeds):
                raise ValueError(f"seeds: each seed lies in 0..{MAX_SEED}")
        return self

    def seed_list(self) -> list[int]:
        return list(range(self.seed, self.seed + self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


@dataclass
class Setting:
    """One column of the sweep's report: an algorithm with its fixed and swept config values."""

    algorithm: str
    fixed: dict[str, Any]
    swept: dict[str, Any] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return values_tag(self.swept)

    @property
    def label(self) -> str:
        return f"{self.algorithm} ({self.tag})" if self.tag else self.algorithm

    def describe(self) -> str:
        values = {**self.fixed, **self.swept}
        return ", ".join(f"{k} = {v!r}" for k, v in values.items()) or "its defaults"


@dataclass
class SweepPlan:
    settings: list[Setting]
    datasets: list[str]
    seeds: list[int]
    run: dict[str, Any]


def parse_sweep(data: dict[str, Any], source: str = "sweep spec") -> SweepPlan:
    """Validate a spec's data (without training, without opening datasets) into a plan."""
    from metaconstraint.algorithms import config_keys
    from metaconstraint.config import RUN_KEYS, algorithm_class

    if isinstance(data.get("algorithms"), dict):  # YAML's `bc:` with nothing below it
        data = {**data, "algorithms": {k: ({} if v is None else v) for k, v in data["algorithms"].items()}}
    try:
        spec = SweepSpec(**data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source, SweepSpec.model_fields)) from None
    except TypeError as error:
        raise ConfigError(f"invalid sweep ({source}): {error}") from None
    problems = []
    for key in sorted(set(spec.run) & RESERVED):
        problems.append(f"run.{key}: set by the sweep itself (its own keys or the command line)")
    for key in sorted(set(spec.run) - RUN_KEYS):
        advice = "Algorithm fields go under [algorithms.NAME]."
        problems.append(f"run.{key}: " + unknown_name("run option", key, RUN_KEYS, list_known=False, advice=advice))
    settings: list[Setting] = []
    for name, entry in spec.algorithms.items():
        try:
            accepted = config_keys(algorithm_class(name).Config) | RUN_KEYS
        except ConfigError as error:
            problems.append(f"algorithms.{name}: {error}")
            continue
        fixed = dict(entry.model_extra or {})
        for key in sorted((set(fixed) | set(entry.sweep)) & RESERVED):
            problems.append(f"algorithms.{name}.{key}: set by the sweep itself")
        for key in sorted((set(fixed) | set(entry.sweep)) - accepted - RESERVED):
            problems.append(f"algorithms.{name}.{key}: " + unknown_name(f"{name} config field", key, accepted, list_known=False))
        for key in sorted(set(fixed) & set(entry.sweep)):
            problems.append(f"algorithms.{name}.{key}: both fixed and swept")
        names = list(entry.sweep)
        for combination in itertools.product(*(entry.sweep[n] for n in names)):
            settings.append(Setting(name, fixed, dict(zip(names, combination))))
    if problems:
        raise ConfigError(f"invalid sweep ({source}):\n" + "\n".join(f"  {p}" for p in problems))
    tags: dict[tuple[str, str | None], Setting] = {}
    for setting in settings:
        key = (setting.algorithm, setting.tag)
        if key in tags:
            raise ConfigError(
                f"invalid sweep ({source}): settings {tags[key].swept} and {setting.swept} of {setting.algorithm} "
                f"get the same run folder tag {setting.tag!r}; make their values differ in letters or digits."
            )
        tags[key] = setting
    plan = SweepPlan(settings, spec.datasets, spec.seed_list(), spec.run)
    total = len(settings) * len(plan.datasets) * len(plan.seeds)
    if total > MAX_RUNS:
        raise ConfigError(f"invalid sweep ({source}): {total:,} runs is more than {MAX_RUNS:,}; split the sweep.")
    # every setting's full configuration must validate before a single run starts
    for setting in settings:
        values = setting_values(setting, plan, plan.datasets[0], plan.seeds[0], {})
        build_configs(values, source=f"{source}, {setting.label}")
    return plan


def load_sweep(path: Path) -> SweepPlan:
    return parse_sweep(load_config_file(path), source=str(path))


def setting_values(setting: Setting, plan: SweepPlan, dataset: str, seed: int, options: dict[str, Any]) -> dict[str, Any]:
    values = {**plan.run, **setting.fixed, **setting.swept, **options}
    values.update(algorithm=setting.algorithm, dataset=dataset, seed=seed, seeds=1)
    if setting.tag:
        values["tag"] = setting.tag
    return values


def expand_sweep(plan: SweepPlan, options: dict[str, Any]) -> list[dict[str, Any]]:
    """One grid cell per setting x dataset x seed, setting-major; ``options`` (out, score rule) go to all."""
    return [
        setting_values(setting, plan, dataset, seed, options)
        for setting in plan.settings
        for dataset in plan.datasets
        for seed in plan.seeds
    ]
