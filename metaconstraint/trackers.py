"""Experiment trackers beside ``metrics.jsonl``/``metrics.csv``: TensorBoard, Weights & Biases, MLflow.

``--logger NAME`` (repeatable) attaches trackers to a run. Each receives the same three things for
every seed folder: the resolved config (``config.toml``'s keys) when the run starts, every record
written to ``metrics.jsonl`` (same names, same ``step``), and ``summary.json`` when it ends. Each
tracker is an optional extra (``pip install 'metaconstraint[tensorboard]'``, ...) imported only when
asked for, and none of them touches the network unless the user asks:

- ``tensorboard``: event files in ``<run folder>/tensorboard/`` (scalars per metric; config and
  summary as text; the summary's numbers also as ``summary/<name>`` scalars).
- ``wandb``: offline by default (``<run folder>/wandb/offline-run-*``, uploadable later with
  ``wandb sync``); ``wandb_mode = "online"`` logs to the user's account.
- ``mlflow``: a file store in ``<run folder>/mlruns`` by default; ``mlflow_tracking_uri`` sends
  the runs anywhere MLflow can (a server, a database, another folder).

A resumed run continues the same tracker run: ``tracker-<name>.json`` in the run folder keeps the
tracker's run id and the last step it received. The resumed session recomputes the iterations after
its checkpoint bit for bit, so records up to that step, which the tracker already holds, are not
sent again (no duplicate points).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import time
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metaconstraint.config import RunConfig

# Light at import (the CLI imports it for its flags): config, runs and the trackers load when used.
TENSORBOARD_DIR = "tensorboard"
MLFLOW_DIR = "mlruns"
DEFAULT_PROJECT = "metaconstraint"


class Tracker(str, Enum):
    tensorboard = "tensorboard"
    wandb = "wandb"
    mlflow = "mlflow"


class WandbMode(str, Enum):
    offline = "offline"
    online = "online"


def tracker_values(loggers, wandb_mode, wandb_project, mlflow_tracking_uri) -> dict[str, Any]:
    """The run-config keys of the CLI's tracker flags; flags not given are left out."""
    values = {
        "loggers": [t.value for t in loggers] if loggers else None,
        "wandb_mode": wandb_mode.value if wandb_mode else None,
        "wandb_project": wandb_project,
        "mlflow_tracking_uri": mlflow_tracking_uri,
    }
    return {k: v for k, v in values.items() if v is not None}


# The module each tracker needs, and the extra that installs it.
_REQUIRES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def check_available(names: list[str] | None) -> None:
    """Raise a :class:`ConfigError` saying how to install any tracker that is not importable."""
    from metaconstraint.config import ConfigError

    missing = [name for name in names or [] if importlib.util.find_spec(_REQUIRES[name]) is None]
    if missing:
        extras = ",".join(missing)
        raise ConfigError(
            f"--logger {' '.join(missing)}: {', '.join(missing)} is not installed. Install the extra with "
            f"`pip install 'metaconstraint[{extras}]'` (from a checkout: `pip install -e '.[{extras}]'`)."
        )


def make_loggers(run: RunConfig) -> list["TrackerLogger"]:
    """The trackers ``run.loggers`` names, in order, without duplicates (checked for installation)."""
    names = list(dict.fromkeys(run.loggers or []))
    check_available(names)
    kinds = {"tensorboard": TensorBoardLogger, "wandb": WandbLogger, "mlflow": MLflowLogger}
    return [kinds[name](run) for name in names]


def _numbers(record: dict[str, Any]) -> dict[str, float]:
    """The scalar entries of a record (bools and nested values left out), ``step`` excluded."""
    return {
        key: float(value)
        for key, value in record.items()
        if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def record_path(directory: Path, tracker: str) -> Path:
    """``tracker-<name>.json``: the tracker's run id and the last step sent to it."""
    return Path(directory) / f"tracker-{tracker}.json"


def _resumed(directory: Path) -> bool:
    from metaconstraint.runs import checkpoint_paths

    return bool(checkpoint_paths(directory))


def _read_record(directory: Path, tracker: str) -> dict[str, Any]:
    path = record_path(directory, tracker)
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        return {}  # unreadable: start a new tracker run rather than fail the training run


def _run_name(config: dict[str, Any], seed: int) -> str:
    tag = f"-{config['tag']}" if config.get("tag") else ""
    return f"{config['algorithm']} {config['dataset']} seed{seed}{tag}"


class TrackerError(RuntimeError):
    """A tracker failed (cannot start its run, cannot reach its server, ...); the message says which."""


class TrackerLogger:
    """One tracker, one tracker run per seed folder. Subclasses fill in the four ``_`` methods."""

    name = ""

    def __init__(self, run: RunConfig):
        self.run = run
        self.handles: list[Any] = []
        self.records: list[dict[str, Any]] = []  # per seed: run_id, step (the last step sent)
        self.directories: list[Path] = []

    def start(self, config: dict[str, Any] | list[dict[str, Any]], seeds: list[int], directories: list[Path]) -> None:
        self.directories = [Path(d) for d in directories]
        # A fresh run (no checkpoint: the trainer removed an earlier run's) starts new tracker runs.
        self.records = [_read_record(d, self.name) if _resumed(d) else {} for d in self.directories]
        with self._reported("start its run"):
            self.handles = []
            # a list: each member's own config (hyperparameter members), else the run's, seed by seed
            configs = config if isinstance(config, list) else [{**config, "seed": seed, "seeds": 1} for seed in seeds]
            for seed, member_config, directory, record in zip(seeds, configs, self.directories, self.records):
                handle, record["run_id"] = self._open(member_config, seed, directory, record.get("run_id"))
                record.setdefault("step", -1)  # nothing sent yet: a fine-tuning run logs step 0
                self.handles.append(handle)
                self._save(directory, record)

    def log(self, rows: list[dict[str, Any]]) -> None:
        with self._reported("log the metrics"):
            for handle, row, record, directory in zip(self.handles, rows, self.records, self.directories):
                step = int(row["step"])
                if step <= record["step"]:
                    continue  # sent by the session this run resumes from (the same values: resume is exact)
                self._log(handle, step, _numbers(row))
                record["step"] = step
                self._save(directory, record)

    def _save(self, directory: Path, record: dict[str, Any]) -> None:
        from metaconstraint.runs import atomic_write_json

        atomic_write_json(record_path(directory, self.name), record)

    def finish(self, summaries: list[dict[str, Any]]) -> None:
        with self._reported("log the summary"):
            for handle, summary in zip(self.handles, summaries):
                self._finish(handle, summary)
        self.handles = []

    @contextlib.contextmanager
    def _reported(self, doing: str):
        try:
            yield
        except Exception as error:  # the tracker's own exception types are many; name the tracker
            raise TrackerError(
                f"--logger {self.name}: could not {doing} ({type(error).__name__}: {error}). metrics.jsonl/csv are "
                f"written up to the last checkpoint: fix the tracker, then continue with `metaconstraint resume RUN_FOLDER`."
            ) from error

    def close(self, failed: bool = True) -> None:
        """End the tracker runs of a run that stopped early (diverged, interrupted, failed)."""
        for handle in self.handles:
            self._close(handle, failed)
        self.handles = []

    def _open(self, config: dict[str, Any], seed: int, directory: Path, run_id: str | None) -> tuple[Any, str | None]:
        """Open (or, given the ``run_id`` of an earlier session, reopen) the seed's tracker run."""
        raise NotImplementedError

    def _log(self, handle: Any, step: int, values: dict[str, float]) -> None:
        raise NotImplementedError

    def _finish(self, handle: Any, summary: dict[str, Any]) -> None:
        raise NotImplementedError

    def _close(self, handle: Any, failed: bool) -> None:
        raise NotImplementedError


# ----------------------------------------------------------------------------- TensorBoard
class TensorBoardLogger(TrackerLogger):
    """Scalars per metric at the record's step; config and summary as text; summary numbers as scalars."""

    name = "tensorboard"

    def _open(self, config, seed, directory, run_id):
        from torch.utils.tensorboard import SummaryWriter

        from metaconstraint.config import to_toml

        if run_id is None:  # a fresh run: an earlier run's events in this folder would mix with its own
            for stale in (directory / TENSORBOARD_DIR).glob("events.out.tfevents.*"):
                stale.unlink()
        writer = SummaryWriter(log_dir=str(directory / TENSORBOARD_DIR))  # a resumed session adds an event file
        if run_id is None:
            writer.add_text("config", "```toml\n" + to_toml(config) + "```", global_step=0)
            writer.flush()
        return writer, "tensorboard"

    def _log(self, writer, step, values):
        for key, value in values.items():
            writer.add_scalar(key, value, global_step=step)
        writer.flush()

    def _finish(self, writer, summary):
        step = int(summary.get("steps") or 0)
        writer.add_text("summary", "```json\n" + json.dumps(summary, indent=2) + "\n```", global_step=step)
        for key, value in _numbers(summary).items():
            writer.add_scalar(f"summary/{key}", value, global_step=step)
        writer.close()

    def _close(self, writer, failed):
        writer.close()


# ----------------------------------------------------------------------------- Weights & Biases
def _quiet_wandb_environment() -> None:
    """W&B reports its own errors to its servers unless told not to; it reads this only at import."""
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")


class WandbLogger(TrackerLogger):
    """One W&B run per seed: ``config``, ``log(values, step=step)``, ``summary``; offline by default."""

    name = "wandb"

    def _open(self, config, seed, directory, run_id):
        mode = self.run.wandb_mode or "offline"
        _quiet_wandb_environment()
        import wandb

        run_id = run_id or secrets.token_hex(8)
        settings = wandb.Settings(
            mode=mode, silent=True, console="off", disable_git=True, disable_code=True, save_code=False,
            x_disable_stats=True, x_disable_meta=True,  # no system-metrics sampler beside training
        )
        return wandb.init(
            project=self.run.wandb_project or DEFAULT_PROJECT,
            name=_run_name(config, seed),
            group=f"{config['algorithm']} {config['dataset']}",
            config=config,
            dir=str(directory),
            id=run_id,
            resume="allow",
            reinit="create_new",
            settings=settings,
        ), run_id

    def _log(self, handle, step, values):
        handle.log(values, step=step)

    def _finish(self, handle, summary):
        handle.summary.update(summary)
        handle.finish()

    def _close(self, handle, failed):
        handle.finish(exit_code=1 if failed else 0)


# ----------------------------------------------------------------------------- MLflow
def _quiet_mlflow_environment(default_store: bool) -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    if default_store:
        # MLflow 3 keeps the file store in maintenance mode and refuses it unless asked; it needs no
        # database set-up (a new SQLite store runs its migrations: ~7 s here, per run folder).
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def _param_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


class MLflowLogger(TrackerLogger):
    """One MLflow run per seed in experiment ``metaconstraint``: config as params (and the
    ``config.toml`` artifact), metrics with their steps, the summary as metrics ``summary/<name>``
    and the ``summary.json`` artifact."""

    name = "mlflow"
    BATCH = 100  # MLflow accepts at most 100 params per log_batch

    def _open(self, config, seed, directory, run_id):
        _quiet_mlflow_environment(default_store=self.run.mlflow_tracking_uri is None)
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        from metaconstraint.config import to_toml

        uri = self.run.mlflow_tracking_uri or (directory.resolve() / MLFLOW_DIR).as_uri()
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(DEFAULT_PROJECT)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(DEFAULT_PROJECT)
        if run_id is not None and self._exists(client, run_id):
            client.update_run(run_id, status="RUNNING")
        else:
            run_id = client.create_run(experiment_id, run_name=_run_name(config, seed), tags={"run_folder": str(directory)}).info.run_id
            params = [Param(key, _param_value(value)) for key, value in sorted(config.items())]
            for start in range(0, len(params), self.BATCH):
                client.log_batch(run_id, params=params[start : start + self.BATCH])
            client.log_text(run_id, to_toml(config), "config.toml")
        return (client, run_id), run_id

    @staticmethod
    def _exists(client, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            client.get_run(run_id)
        except MlflowException:
            return False
        return True

    def _log(self, handle, step, values):
        from mlflow.entities import Metric

        client, run_id = handle
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(key, value, now, step) for key, value in values.items()])

    def _finish(self, handle, summary):
        from mlflow.entities import Metric

        client, run_id = handle
        now, step = int(time.time() * 1000), int(summary.get("steps") or 0)
        client.log_batch(run_id, metrics=[Metric(f"summary/{k}", v, now, step) for k, v in _numbers(summary).items()])
        client.log_dict(run_id, summary, "summary.json")
        client.set_terminated(run_id, status="FINISHED")

    def _close(self, handle, failed):
        client, run_id = handle
        client.set_terminated(run_id, status="FAILED" if failed else "KILLED")
