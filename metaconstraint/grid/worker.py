"""What a worker does with a job (a local process, or a Ray task in :mod:`metaconstraint.ray_backend`):
train its cell or packed cells, resume from checkpoints written with the same config, and return
plain data (:class:`~metaconstraint.grid.events.CellResult`). A finished run's small files can travel
back to a driver that shares no file system with the worker."""

from __future__ import annotations

import json
import shutil
import time
import tomllib
import traceback
from pathlib import Path
from typing import Any

from metaconstraint.grid.cells import PACKED, cell_directory, cell_name
from metaconstraint.grid.events import CellResult, ProgressFn


def _same_config(directory: Path, expected: dict[str, Any]) -> bool:
    """Whether the run folder's ``config.toml`` matches, up to the keys a resume may change (``out``,
    ``device``, ...: a cell started on one backend or machine can be finished on another)."""
    from metaconstraint.checkpoint import RESUME_FREE_KEYS

    try:
        written = tomllib.loads((directory / "config.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False
    strip = lambda config: {k: v for k, v in config.items() if k not in RESUME_FREE_KEYS}  # noqa: E731
    return strip(written) == strip(json.loads(json.dumps(expected)))


def run_cell(values: dict[str, Any], progress: ProgressFn | None = None) -> dict[str, Any]:
    """Train one grid cell and return its summary (the one written to ``summary.json``).

    A finished cell (its ``summary.json`` exists) is returned as it is, without training. A cell
    with checkpoints and the same resolved config continues from its newest checkpoint; otherwise
    stale checkpoints are removed and it starts afresh. Errors propagate to the caller.
    """
    from metaconstraint.config import build_configs, resolved_config
    from metaconstraint.finetune import make_trainer
    from metaconstraint.runs import checkpoint_paths, read_json

    if values.get("seeds", 1) != 1:
        raise ValueError(f"a grid cell trains one seed, not seeds={values['seeds']}.")
    run, algorithm_config = build_configs(values, source=f"grid cell {cell_name(values)}")
    directory = cell_directory(values)
    if directory is not None and (directory / "summary.json").exists():
        return read_json(directory / "summary.json")
    trainer = make_trainer(run, algorithm_config, progress=progress)
    directory = trainer.directories[0]
    expected = {**resolved_config(run, algorithm_config), "seed": run.seed, "seeds": 1, "dataset": trainer.dataset_id}
    resume = bool(checkpoint_paths(directory)) and _same_config(directory, expected)
    if not resume and (directory / "checkpoints").exists():
        shutil.rmtree(directory / "checkpoints")  # another config's or an unfinished run's: never mix them
    return trainer.fit(resume=resume)[0]


def run_packed(cells: list[dict[str, Any]], progress: ProgressFn | None = None) -> list[dict[str, Any]]:
    """Train cells that differ only in seed and member-varying scalars as one run whose members are
    the cells; each writes its own run folder, exactly as :func:`run_cell` would. Returns their
    summaries. The group resumes from its checkpoints when every folder has them, written by this
    same group with the same configs; otherwise it starts afresh."""
    from metaconstraint.config import algorithm_class, build_configs
    from metaconstraint.members import Member, member_records
    from metaconstraint.runs import checkpoint_paths
    from metaconstraint.checkpoint import newest_header
    from metaconstraint.finetune import make_trainer

    fields = [f for f in algorithm_class(cells[0]["algorithm"]).member_fields if f in cells[0]]
    base = {k: v for k, v in cells[0].items() if k not in fields and k != "tag"}
    run, algorithm_config = build_configs(base, source=f"grid cells {cell_name(cells[0])} and {len(cells) - 1} more")
    members = [Member(int(c["seed"]), {f: c[f] for f in fields}, c.get("tag")) for c in cells]
    trainer = make_trainer(run, algorithm_config, progress=progress, members=members)
    records = member_records(members) if trainer.member_sweep else None
    resume = all(
        checkpoint_paths(d) and _same_config(d, expected) and (newest_header(d) or {}).get("member_records") == records
        for d, expected in zip(trainer.directories, trainer.member_resolved)
    )
    if not resume:
        for directory in trainer.directories:
            if (directory / "checkpoints").exists():
                shutil.rmtree(directory / "checkpoints")  # another config's or another group's: never mix them
    return trainer.fit(resume=resume)


RUN_FILES = ("config.toml", "environment.json", "metrics.jsonl", "metrics.csv", "summary.json")  # summary.json last


def resume_point(values: dict[str, Any]) -> int:
    """The iteration of the cell's newest checkpoint (0 when it has none): where a retry continues."""
    from metaconstraint.runs import checkpoint_paths, checkpoint_step

    directory = cell_directory(values)
    paths = checkpoint_paths(directory) if directory is not None else []
    return checkpoint_step(paths[-1]) if paths else 0


def execute_cell(values: dict[str, Any], progress: ProgressFn | None = None) -> CellResult:
    """Run one cell on a worker (a local process or a Ray task); the result is plain data.

    ``status`` is ``done`` (with ``summary``), ``failed`` (``error``, ``traceback``: the cell failed
    for its own reasons, the grid goes on) or ``interrupted`` (a signal stopped it after a checkpoint).
    """
    from metaconstraint.training import TrainingInterrupted

    start = time.perf_counter()
    packed = values.get(PACKED)
    resumed_from = resume_point(packed[0] if packed else values)
    try:
        if packed:
            summaries = run_packed(packed, progress)
            seconds = time.perf_counter() - start
            return {"status": "done", "seconds": seconds, "resumed_from": resumed_from, "cells": [
                {"status": "done", "summary": summary, "seconds": seconds, "resumed_from": resumed_from} for summary in summaries
            ]}
        summary = run_cell(values, progress)
    except TrainingInterrupted as error:
        return {"status": "interrupted", "error": str(error), "signal": error.signal_number,
                "seconds": time.perf_counter() - start}
    except Exception as error:  # noqa: BLE001 - a cell fails for its own reasons; the grid goes on
        message = str(error).strip() or repr(error)
        return {
            "status": "failed",
            "error": f"{type(error).__name__}: {message}",
            "traceback": traceback.format_exc(),
            "seconds": time.perf_counter() - start,
        }
    return {"status": "done", "summary": summary, "seconds": time.perf_counter() - start, "resumed_from": resumed_from}


def read_run_files(directory: Path) -> dict[str, bytes]:
    """A finished run's small files (not its checkpoints), to send back to a driver on another machine."""
    return {name: (directory / name).read_bytes() for name in RUN_FILES if (directory / name).exists()}


def deliver_run_files(directory: Path, files: dict[str, bytes]) -> list[str]:
    """Write the files a remote worker sent back that ``directory`` lacks (it may be shared storage
    that has them already); ``summary.json``, which marks the run finished, goes last."""
    from metaconstraint.runs import atomic_write

    written = []
    for name in sorted(files, key=lambda n: n == "summary.json"):
        target = Path(directory) / name
        if not target.exists():
            atomic_write(target, lambda handle, data=files[name]: handle.write(data))
            written.append(name)
    return written

