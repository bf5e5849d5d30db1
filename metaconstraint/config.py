"""Run configuration: pydantic models, config files (TOML/YAML) and flag overrides.

A config file is flat: run keys (``dataset``, ``steps``, ...) beside the algorithm's
hyperparameters (``scale_lr``, ``outer_losses``, ...). Flags override the file.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, Iterable, Literal, get_args

import tomli_w
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from metaconstraint.algorithms import ALGORITHMS, AlgorithmConfig, adaptive_algorithm, config_keys
from metaconstraint.suggest import unknown_name


class ConfigError(ValueError):
    """A configuration that cannot be used; the message says what and where."""


MAX_SEED = 2**32 - 1  # numpy's seed range
MAX_MEMBERS = 1024
MAX_EPISODES = 10_000


TrackerName = Literal["tensorboard", "wandb", "mlflow"]
TRACKERS: tuple[str, ...] = get_args(TrackerName)


DEFAULT_WARMUP_STEPS = 1000


class FinetuneSettings(BaseModel):
    """Online fine-tuning of a finished offline run (:mod:`metaconstraint.finetune`): a run's
    ``[finetune]`` table, absent from offline runs. The run's ``steps`` stay the offline run's, and
    the updates continue its iteration count (schedules, the actor's and the scale's intervals)."""

    model_config = ConfigDict(extra="forbid")

    online_steps: int = Field(gt=0, description="Environment steps per member; one update follows each step after the warm-up.")
    offline_fraction: float = Field(
        0.5, ge=0, le=1,
        description="Share of every minibatch drawn from the offline data, the rest from the online buffer "
        "(symmetric sampling: one half, Ball et al. 2023).",
    )
    warmup_steps: int | None = Field(
        None, ge=1, description="Environment steps collected before the first update (default 1000, at most a tenth of online_steps)."
    )
    exploration_noise: float = Field(
        0.1, ge=0,
        description="Std of the Gaussian noise on deterministic actions, in units of max_action (a Gaussian actor samples instead).",
    )
    offline_out: str = Field(".", description="The offline runs' output folder, relative to this run's (beside it: '.').")
    offline_tag: str | None = Field(None, description="The offline run folders' tag (seed<K>-<tag>), if they have one.")

    @model_validator(mode="after")
    def _warmup_within_budget(self) -> "FinetuneSettings":
        if self.warmup_steps is None:  # resolved here, so config.toml records the number used
            self.warmup_steps = min(DEFAULT_WARMUP_STEPS, max(1, self.online_steps // 10))
        if self.warmup_steps >= self.online_steps:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) must be below online_steps ({self.online_steps}): nothing would be trained"
            )
        return self


class RunConfig(BaseModel):
    """How a run is executed: data, budget, seeds, evaluation, output."""

    model_config = ConfigDict(extra="forbid")

    algorithm: str
    dataset: str
    steps: int = Field(1_000_000, gt=0, description="Training iterations (one critic update each).")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="First seed.")
    seeds: int = Field(1, ge=1, le=MAX_MEMBERS, description="Seeds seed..seed+seeds-1, trained as one vectorised computation.")
    eval_every: int = Field(5000, gt=0)
    eval_episodes: int = Field(10, gt=0, le=MAX_EPISODES)
    device: str = "cpu"
    threads: int | None = Field(
        None, ge=1, le=1024,
        description="torch threads of this run (default: torch's choice, all cores or OMP_NUM_THREADS). Use 1 when other "
        "processes share the cores: oversubscribed threads make each iteration many times slower.",
    )
    compile: bool | None = Field(
        None, description="torch.compile the update (TD3-backbone methods, stacked seeds too; ASPC's meta-iterations "
        "as a graph of their own). Default: on for runs of at least 50,000 iterations, where the 1-2 min of "
        "compiling has paid for itself many times (docs/performance.md); off for shorter ones.",
    )
    gemm: Literal["default", "auto", "onednn"] | None = Field(
        None, description="CPU float32 matrix-product kernel: default (None: torch's BLAS, MKL), onednn (every product "
        "through oneDNN), auto (each product shape timed once on both at start, the faster kept; docs/performance.md). "
        "Results agree to float32 rounding, not bit for bit. GPU tensors are never rerouted.",
    )
    out: Path = Path("runs")
    log_every: int = Field(1000, gt=0, description="Iterations between metric records (one host sync each).")
    checkpoint_every: int | None = Field(None, gt=0, description="Default: every evaluation.")
    keep_checkpoints: int = Field(2, ge=1)
    final_score_rule: Literal["last", "mean_last_k"] = "last"
    final_score_k: int = Field(5, ge=1, description="k of mean_last_k.")
    tag: str | None = Field(None, pattern=r"^[A-Za-z0-9_.=+-]+$")
    alpha_min: float = Field(1e-6, gt=0, description="Divergence guard: the run stops if the learned constraint scale falls below this.")
    alpha_max: float = Field(1e4, gt=0, description="Divergence guard: the run stops if the learned constraint scale rises above this.")
    reward_offset: float | None = Field(None, description="Added to every training reward; default: the dataset's (AntMaze -1, else 0).")
    # Reward preprocessing after the offset; None (absent from config.toml) is 1.0 / false, so configs without them stay as they were.
    reward_scale: float | None = Field(None, gt=0, description="Training rewards are multiplied by this (default 1; scores use the environment's reward).")
    reward_center: bool | None = Field(None, description="Subtract the dataset's mean training reward before scaling (default false).")
    final_eval_episodes: int | None = Field(
        None, gt=0, le=MAX_EPISODES,
        description="Episodes of the final evaluation (default: eval_episodes). Every member and method plays the same "
        "episodes (the first of a fixed list of reset seeds), so more episodes sharpen every paired comparison.",
    )
    # Trackers beside metrics.jsonl/csv (metaconstraint.trackers); None, not [], so that configs without them stay as they were.
    loggers: list[TrackerName] | None = Field(
        None, description="Experiment trackers fed the same metrics, config and summary: tensorboard, wandb, mlflow."
    )
    wandb_mode: Literal["offline", "online"] | None = Field(None, description="W&B mode (default offline: nothing leaves the machine).")
    wandb_project: str | None = Field(None, description="W&B project (default metaconstraint).")
    mlflow_tracking_uri: str | None = Field(None, description="MLflow tracking URI (default: a file store in each run folder's mlruns/).")
    finetune: FinetuneSettings | None = Field(None, description="Set on runs that fine-tune an offline run online.")

    @field_validator("loggers", mode="before")
    @classmethod
    def _known_trackers(cls, names: Any) -> Any:
        for name in names if isinstance(names, list) else []:
            if isinstance(name, str) and name not in TRACKERS:
                raise ValueError(unknown_name("tracker", name, TRACKERS))
        return names

    @model_validator(mode="after")
    def _consistent(self) -> "RunConfig":
        if self.seed + self.seeds - 1 > MAX_SEED:
            raise ValueError(f"the last seed, seed + seeds - 1 = {self.seed + self.seeds - 1}, exceeds {MAX_SEED}")
        if self.alpha_min >= self.alpha_max:
            raise ValueError(f"alpha_min ({self.alpha_min}) must be below alpha_max ({self.alpha_max})")
        return self


RUN_KEYS = set(RunConfig.model_fields)


def format_validation_error(error: ValidationError, source: str, keys: Iterable[str] = ()) -> str:
    """One line per problem; an unknown top-level key gets the close ones among ``keys``."""
    lines = [f"invalid configuration ({source}):"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = unknown_name("key", where, keys if len(item["loc"]) == 1 else (), list_known=False)
        elif item["loc"] and "input" in item and not isinstance(item["input"], dict):
            given = repr(item["input"])
            message += f" (got {given[:60] + '...' if len(given) > 60 else given})"
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML or YAML file into a flat dict, with the line of a syntax error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror or error}.") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {error.start}: {error.reason}).") from None
    except ValueError as error:  # e.g. a NUL character in the path
        raise ConfigError(f"cannot read config file {path!r}: {error}.") from None
    if path.suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"config file {path} is not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    elif path.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    else:
        raise ConfigError(f"config file {path}: use a .toml, .yaml or .yml file.")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table of keys, not {type(data).__name__}.")
    bad_keys = [repr(key) for key in data if not isinstance(key, str)]
    if bad_keys:
        raise ConfigError(f"config file {path}: keys must be names, not {', '.join(bad_keys)}.")
    return data


def algorithm_class(name: str):
    if name not in ALGORITHMS:
        raise ConfigError(unknown_name("algorithm", name, ALGORITHMS))
    return ALGORITHMS[name]


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    return False


def build_configs(values: dict[str, Any], source: str = "flags") -> tuple[RunConfig, AlgorithmConfig]:
    """Split flat ``values`` into the run config and the algorithm's config, validating both."""
    bad_keys = [repr(key) for key in values if not isinstance(key, str)]
    if bad_keys:
        raise ConfigError(f"invalid configuration ({source}): keys must be names, not {', '.join(bad_keys)}.")
    non_finite = [f"{key} = {values[key]!r}" for key in values if _non_finite(values[key])]
    if non_finite:
        raise ConfigError(f"invalid configuration ({source}): {', '.join(non_finite)}: values must be finite numbers.")
    if "algorithm" not in values:
        raise ConfigError("no algorithm given (e.g. `metaconstraint run aspc --dataset pen-human`).")
    # aspc with another backbone's objective is that backbone's adaptive algorithm (aspc --objective rebrac: aspc-rebrac)
    values = {**values, "algorithm": adaptive_algorithm(str(values["algorithm"]), values.get("objective"))}
    cls = algorithm_class(values["algorithm"])
    algorithm_keys = config_keys(cls.Config)
    unknown = sorted(set(values) - RUN_KEYS - algorithm_keys)
    if unknown:
        known = RUN_KEYS | algorithm_keys
        why = f"neither a run option nor a field of {cls.name} ({source})"
        raise ConfigError(" ".join(unknown_name("configuration key", key, known, why=why, list_known=False, n=1) for key in unknown))
    try:
        run = RunConfig(**{k: v for k, v in values.items() if k in RUN_KEYS})
        algorithm = cls.Config(**{k: v for k, v in values.items() if k in algorithm_keys}).for_dataset(run.dataset)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None
    except ValueError as error:
        raise ConfigError(f"invalid configuration ({source}): {error}") from None
    return run, algorithm


def resolved_config(run: RunConfig, algorithm: AlgorithmConfig) -> dict[str, Any]:
    """Everything a run used, flat, as written to ``config.toml`` (readable back with --config), but
    ``out``: a run folder is where it is (readers take ``out`` from its location), and the path given
    would record one machine's folders. Older ``config.toml`` files with ``out`` still load."""
    data = run.model_dump(mode="json", exclude_none=True, exclude={"out"})
    data.update(algorithm.model_dump(mode="json", exclude_none=True))
    return data


def to_toml(data: dict[str, Any]) -> str:
    return tomli_w.dumps(data)
