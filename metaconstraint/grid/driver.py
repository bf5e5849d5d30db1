"""The grid driver: skip finished cells, validate the rest, run them on a backend, turn its events
into :class:`CellOutcome`s, stop cleanly on SIGINT/SIGTERM, and record everything in ``grid.json``."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaconstraint.grid.cells import PACKED, cell_directory, cell_name, cell_steps, dataset_id, pack_cells
from metaconstraint.grid.display import GridDisplay, report_prechecked
from metaconstraint.grid.events import Backend, JobFinished, JobProgress, JobStarted
from metaconstraint.grid.local import LocalBackend
from metaconstraint.grid.worker import deliver_run_files
from metaconstraint.grid_record import relative_run_dir, write_records
from metaconstraint.signals import stop_on_signals


@dataclass
class CellOutcome:
    """What became of one cell: ``done`` (trained now), ``skipped`` (finished before), ``failed`` or
    ``interrupted`` (stopped by a signal after a checkpoint, or not started)."""

    values: dict[str, Any]
    status: str
    directory: Path | None = None
    summary: dict[str, Any] | None = None
    error: str | None = None
    traceback: str | None = None
    seconds: float = 0.0
    note: str | None = None
    node: str | None = None  # where it ran: a local worker's pid, a Ray node's address
    resumed_from: int = 0  # the checkpoint iteration the run continued from (0: from the start)

    @property
    def name(self) -> str:
        return cell_name(self.values)

    @property
    def dataset_id(self) -> str:
        return self.summary["dataset"] if self.summary else dataset_id(self.values["dataset"])

    def record(self, out: Path) -> dict[str, Any]:
        """The cell's entry in ``OUT/grid.json`` (``run_dir`` relative to the grid folder ``out``)."""
        return {
            "algorithm": self.values["algorithm"],
            "dataset": self.dataset_id,
            "dataset_name": self.values["dataset"],
            "seed": self.values["seed"],
            "tag": self.values.get("tag"),
            "status": self.status,
            "run_dir": relative_run_dir(self.directory, out),
            "error": self.error,
            "traceback": self.traceback,
            "seconds": round(self.seconds, 3),
            "note": self.note,
            "node": self.node,
            "resumed_from": self.resumed_from,
        }


def _finished(values: dict[str, Any]) -> CellOutcome | None:
    from metaconstraint.runs import read_json

    directory = cell_directory(values)
    if directory is None or not (directory / "summary.json").exists():
        return None
    summary = read_json(directory / "summary.json")
    note = None
    unit = "online steps" if values.get("finetune") else "iterations"
    if "steps" in values and summary.get("steps") != cell_steps(values):
        note = (
            f"finished earlier with {summary.get('steps')} {unit} (this grid asks for {cell_steps(values)}); "
            "kept: remove its folder or use another --out to train it again."
        )
    return CellOutcome(values, "skipped", directory, summary, note=note)


def _validate(values: dict[str, Any]) -> CellOutcome | None:
    """A cell whose config does not validate fails here, before any worker starts."""
    from metaconstraint.config import ConfigError, build_configs

    try:
        build_configs(values, source=f"grid cell {cell_name(values)}")
    except ConfigError as error:
        return CellOutcome(values, "failed", cell_directory(values), error=f"ConfigError: {error}")
    return None


class GridInterrupted(Exception):
    """The grid was stopped by a signal; every unfinished cell keeps its newest checkpoint."""

    def __init__(self, outcomes: list[CellOutcome], signal_number: int):
        super().__init__(f"grid stopped by {signal.Signals(signal_number).name}")
        self.outcomes, self.signal_number = outcomes, signal_number


def run_grid(
    cells: list[dict[str, Any]], workers: int | None = None, console=None, backend: Backend | None = None,
    pack: bool = False, max_members: int | None = None,
) -> list[CellOutcome]:
    """Run every unfinished cell on ``backend`` (default: ``workers`` local processes); outcomes in
    the cells' order. ``pack``: unfinished cells that differ only in seed and member-varying scalars
    train as one vectorised job each (:func:`pack_cells`), of at most ``max_members`` cells. A SIGINT/SIGTERM stops the workers after
    their checkpoints and raises :class:`GridInterrupted`; rerunning the grid resumes it."""
    from rich.console import Console

    console = console or Console()
    backend = backend or LocalBackend(workers)
    outcomes: list[CellOutcome | None] = [None] * len(cells)
    pending: list[int] = []
    for index, values in enumerate(cells):
        outcomes[index] = _finished(values) or _validate(values)
        if outcomes[index] is None:
            pending.append(index)
    report_prechecked(outcomes, console)
    if not pending:
        return outcomes  # type: ignore[return-value]

    groups = pack_cells(cells, pending, max_members) if pack else [[i] for i in pending]
    jobs = {group[0]: group for group in groups}  # a job is known by its first cell's index
    if len(groups) < len(pending):
        console.print(f"{len(pending)} run(s) packed into {len(groups)} vectorised job(s) (members = values x seeds)")
    console.print(backend.plan(len(groups)))
    steps = {i: cell_steps(cells[i]) for i in jobs}
    where: dict[int, str] = {}

    def job_values(group: list[int]) -> dict[str, Any]:
        return cells[group[0]] if len(group) == 1 else {PACKED: [cells[i] for i in group]}

    def job_name(group: list[int]) -> str:
        return cell_name(cells[group[0]]) if len(group) == 1 else f"{cell_name(cells[group[0]])} +{len(group) - 1} members"

    with stop_on_signals() as stop, GridDisplay(console, sum(steps.values()), len(pending)) as display:
        for event in backend.execute([(i, job_values(group)) for i, group in jobs.items()], stop):
            index = event.job
            if isinstance(event, JobStarted):
                where[index] = event.where
            elif isinstance(event, JobProgress):
                display.update(index, job_name(jobs[index]), steps[index], event.iteration, event.score, event.scale)
            elif isinstance(event, JobFinished):
                result = event.result
                per_cell = result.get("cells") or [result] * len(jobs[index])
                finished = []
                for cell_index, cell_result in zip(jobs[index], per_cell):
                    directory = cell_directory(cells[cell_index])
                    if cell_result.get("files") and directory is not None:
                        deliver_run_files(directory, cell_result["files"])
                    outcome = CellOutcome(
                        cells[cell_index],
                        cell_result["status"],
                        directory,
                        summary=cell_result.get("summary"),
                        error=cell_result.get("error"),
                        traceback=cell_result.get("traceback"),
                        seconds=cell_result.get("seconds", 0.0),
                        node=result.get("node") or where.get(index),
                        resumed_from=cell_result.get("resumed_from", 0),
                        note="not started" if cell_result.get("not_started") else None,
                    )
                    outcomes[cell_index] = outcome
                    finished.append(outcome)
                display.finish(index, steps[index], finished)
    if stop.signal_number is not None or any(o is not None and o.status == "interrupted" for o in outcomes):
        for index in pending:
            if outcomes[index] is None:
                outcomes[index] = CellOutcome(cells[index], "interrupted", cell_directory(cells[index]), note="not started")
        raise GridInterrupted(outcomes, stop.signal_number or signal.SIGTERM)  # type: ignore[arg-type]
    return outcomes  # type: ignore[return-value]


def write_grid_record(out: Path, outcomes: list[CellOutcome], spec: dict[str, Any]) -> Path:
    """``OUT/grid.json``: the grid's spec and every cell's status, merged with earlier grids' cells."""
    return write_records(out, [outcome.record(out) for outcome in outcomes], spec)
