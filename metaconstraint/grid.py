"""Comparison grids: algorithms x datasets x seeds, run on local worker processes.

A *cell* is one ``(algorithm, dataset, seed)`` run, described by the flat values ``build_configs``
reads (``seeds = 1``). :func:`run_cell` trains one cell with the :class:`~metaconstraint.training.Trainer`
and returns its summary; it is all a worker (a local process here, a Ray task elsewhere) calls.
A cell whose ``summary.json`` exists is finished and skipped, so rerunning a grid resumes it; a cell
interrupted after a checkpoint continues from it when its ``config.toml`` is unchanged.

Workers are spawned processes (``concurrent.futures.ProcessPoolExecutor``), each with
``cores // workers`` torch threads (at most ``OMP_NUM_THREADS`` when set), reporting progress to the parent through one queue; a cell that
fails (bad config, missing dataset, divergence, any exception) is recorded as failed and the grid
goes on. ``OUT/grid.json`` records every cell's status (and a failed cell's error).
"""

from __future__ import annotations

import json
import os
import queue as queue_module
import shutil
import time
import tomllib
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

GRID_FILE = "grid.json"

ProgressFn = Callable[[int, "float | None", "float | None"], None]


# ----------------------------------------------------------------------------- the grid
def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def expand_grid(
    algorithms: Iterable[str],
    datasets: Iterable[str],
    seeds: int,
    seed: int = 0,
    run_options: dict[str, Any] | None = None,
    algorithm_options: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One values dict per ``(algorithm, dataset, seed)``, algorithm-major, seeds ``seed..seed+seeds-1``.

    ``run_options`` (steps, eval_every, out, ...) go to every cell; ``algorithm_options``
    (``outer_losses``, ``alpha_lr_decay_steps``, ...) only to the algorithms whose config has that
    key. An option no algorithm of the grid accepts is an error.
    """
    from metaconstraint.config import ConfigError, algorithm_class

    algorithms, datasets = list(algorithms), list(datasets)
    algorithm_options = dict(algorithm_options or {})
    accepted = {name: set(algorithm_class(name).Config.model_fields) for name in algorithms}
    unused = sorted(key for key in algorithm_options if not any(key in keys for keys in accepted.values()))
    if unused:
        raise ConfigError(f"no algorithm of this grid ({', '.join(algorithms)}) takes {', '.join(unused)}.")
    cells = []
    for algorithm in algorithms:
        options = {k: v for k, v in algorithm_options.items() if k in accepted[algorithm]}
        for dataset in datasets:
            for k in range(seeds):
                cells.append(
                    {**(run_options or {}), **options, "algorithm": algorithm, "dataset": dataset, "seed": seed + k, "seeds": 1}
                )
    return cells


def short_error(error: str | None, limit: int = 160) -> str:
    """The first sentence of an error message, for one-line displays (``grid.json`` keeps it all)."""
    text = " ".join((error or "unknown error").split())
    end = text.find(". ")
    text = text[: end + 1] if 0 < end < limit else text
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cell_name(values: dict[str, Any]) -> str:
    return f"{values['algorithm']} {values['dataset']} seed{values['seed']}"


def dataset_id(name: str) -> str:
    """The Minari id of ``name``, or ``name`` itself when it does not resolve."""
    from metaconstraint.rl.data import DatasetError, resolve_dataset_id

    try:
        return resolve_dataset_id(name)
    except DatasetError:
        return name


def cell_directory(values: dict[str, Any]) -> Path | None:
    """The cell's run folder, or ``None`` when its dataset name does not resolve (the run will say why)."""
    from metaconstraint.rl.data import DatasetError, resolve_dataset_id
    from metaconstraint.runs import run_directory

    try:
        dataset_id = resolve_dataset_id(values["dataset"])
    except DatasetError:
        return None
    return run_directory(Path(values.get("out", "runs")), values["algorithm"], dataset_id, values["seed"], values.get("tag"))


def _same_config(directory: Path, expected: dict[str, Any]) -> bool:
    try:
        written = tomllib.loads((directory / "config.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return written == json.loads(json.dumps(expected))


def run_cell(values: dict[str, Any], progress: ProgressFn | None = None) -> dict[str, Any]:
    """Train one grid cell and return its summary (the one written to ``summary.json``).

    A finished cell (its ``summary.json`` exists) is returned as it is, without training. A cell
    with checkpoints and the same resolved config continues from its newest checkpoint; otherwise
    stale checkpoints are removed and it starts afresh. Errors propagate to the caller.
    """
    from metaconstraint.config import build_configs, resolved_config
    from metaconstraint.runs import checkpoint_paths, read_json
    from metaconstraint.training import Trainer

    if values.get("seeds", 1) != 1:
        raise ValueError(f"a grid cell trains one seed, not seeds={values['seeds']}.")
    run, algorithm_config = build_configs(values, source=f"grid cell {cell_name(values)}")
    directory = cell_directory(values)
    if directory is not None and (directory / "summary.json").exists():
        return read_json(directory / "summary.json")
    trainer = Trainer(run, algorithm_config, progress=progress)
    directory = trainer.directories[0]
    expected = {**resolved_config(run, algorithm_config), "seed": run.seed, "seeds": 1, "dataset": trainer.dataset_id}
    resume = bool(checkpoint_paths(directory)) and _same_config(directory, expected)
    if not resume and (directory / "checkpoints").exists():
        shutil.rmtree(directory / "checkpoints")  # another config's or an unfinished run's: never mix them
    return trainer.fit(resume=resume)[0]


# ----------------------------------------------------------------------------- outcomes
@dataclass
class CellOutcome:
    """What became of one cell: ``done`` (trained now), ``skipped`` (finished before) or ``failed``."""

    values: dict[str, Any]
    status: str
    directory: Path | None = None
    summary: dict[str, Any] | None = None
    error: str | None = None
    traceback: str | None = None
    seconds: float = 0.0
    note: str | None = None

    @property
    def name(self) -> str:
        return cell_name(self.values)

    def record(self) -> dict[str, Any]:
        return {
            "algorithm": self.values["algorithm"],
            "dataset": self.summary["dataset"] if self.summary else dataset_id(self.values["dataset"]),
            "dataset_name": self.values["dataset"],
            "seed": self.values["seed"],
            "tag": self.values.get("tag"),
            "status": self.status,
            "run_dir": None if self.directory is None else str(self.directory),
            "error": self.error,
            "traceback": self.traceback,
            "seconds": round(self.seconds, 3),
            "note": self.note,
        }


def _finished(values: dict[str, Any]) -> CellOutcome | None:
    from metaconstraint.runs import read_json

    directory = cell_directory(values)
    if directory is None or not (directory / "summary.json").exists():
        return None
    summary = read_json(directory / "summary.json")
    note = None
    if summary.get("steps") != values.get("steps", summary.get("steps")):
        note = (
            f"finished earlier with {summary.get('steps')} iterations (this grid asks for {values['steps']}); "
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


# ----------------------------------------------------------------------------- worker side
_PROGRESS_QUEUE = None


def _init_worker(progress_queue, threads: int) -> None:
    global _PROGRESS_QUEUE
    import torch

    _PROGRESS_QUEUE = progress_queue
    torch.set_num_threads(threads)


def _work(index: int, values: dict[str, Any]) -> dict[str, Any]:
    """Run cell ``index`` in a worker; every exception becomes a ``failed`` outcome (plain data)."""
    start = time.perf_counter()

    def progress(iteration: int, score: float | None, alpha: float | None) -> None:
        if _PROGRESS_QUEUE is not None:
            _PROGRESS_QUEUE.put((index, iteration, score, alpha))

    try:
        summary = run_cell(values, progress)
    except Exception as error:  # noqa: BLE001 - a cell fails for its own reasons; the grid goes on
        message = str(error).strip() or repr(error)
        return {
            "status": "failed",
            "error": f"{type(error).__name__}: {message}",
            "traceback": traceback.format_exc(),
            "seconds": time.perf_counter() - start,
        }
    return {"status": "done", "summary": summary, "seconds": time.perf_counter() - start}


# ----------------------------------------------------------------------------- parent side
@dataclass
class GridDisplay:
    """One rich progress display for the whole grid: a total bar and a bar per running cell."""

    console: Any
    total_steps: int
    cells: int
    progress: Any = None
    overall: Any = None
    tasks: dict[int, Any] = field(default_factory=dict)
    iterations: dict[int, int] = field(default_factory=dict)
    done: set[int] = field(default_factory=set)

    def __enter__(self) -> "GridDisplay":
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,}"),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.__enter__()
        self.overall = self.progress.add_task(self._overall_text(), total=max(self.total_steps, 1), info="")
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def _overall_text(self) -> str:
        return f"[bold]grid[/] {len(self.done)}/{self.cells} runs"

    def update(self, index: int, name: str, total: int, iteration: int, score, alpha) -> None:
        if index in self.done:
            return  # a late message from a cell that has already finished
        if index not in self.tasks:
            self.tasks[index] = self.progress.add_task(f"  {name}", total=total, info="")
        info = []
        if score is not None:
            info.append(f"score [green]{score:.1f}[/]")
        if alpha is not None:
            info.append(f"alpha [magenta]{alpha:.3f}[/]")
        fields = {"info": " ".join(info)} if info else {}
        self.progress.update(self.tasks[index], completed=iteration, **fields)
        self.iterations[index] = iteration
        self.progress.update(self.overall, completed=sum(self.iterations.values()))

    def finish(self, index: int, total: int, outcome: CellOutcome) -> None:
        self.done.add(index)
        if index in self.tasks:
            self.progress.remove_task(self.tasks.pop(index))
        self.iterations[index] = total
        self.progress.update(self.overall, completed=sum(self.iterations.values()), description=self._overall_text())
        if outcome.status == "failed":
            self.progress.console.print(f"[red]failed[/] {outcome.name}: {short_error(outcome.error)}", highlight=False)
        else:
            score = outcome.summary.get("final_score") if outcome.summary else None
            text = "-" if score is None else f"{score:.1f}"
            self.progress.console.print(
                f"[green]done[/] {outcome.name}: final score {text} ({outcome.seconds:.0f} s)", highlight=False
            )


def run_grid(cells: list[dict[str, Any]], workers: int | None = None, console=None) -> list[CellOutcome]:
    """Run every unfinished cell on ``workers`` spawned processes; outcomes in the cells' order."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    from rich.console import Console

    console = console or Console()
    outcomes: list[CellOutcome | None] = [None] * len(cells)
    pending: list[int] = []
    for index, values in enumerate(cells):
        outcomes[index] = _finished(values) or _validate(values)
        if outcomes[index] is None:
            pending.append(index)
    skipped = [o for o in outcomes if o is not None and o.status == "skipped"]
    if skipped:
        console.print(f"skipping {len(skipped)} finished run(s) (their summary.json exists)")
        for outcome in skipped:
            if outcome.note:
                console.print(f"[yellow]note[/] {outcome.name}: {outcome.note}", highlight=False)
    for outcome in outcomes:
        if outcome is not None and outcome.status == "failed":
            console.print(f"[red]failed[/] {outcome.name}: {short_error(outcome.error)}", highlight=False)
    if not pending:
        return outcomes  # type: ignore[return-value]

    workers = max(1, min(workers or available_cores(), len(pending)))
    threads = max(1, available_cores() // workers)
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        # an explicit limit wins: on a shared machine two threads per process can run many times slower
        threads = min(threads, int(os.environ["OMP_NUM_THREADS"]))
    context = multiprocessing.get_context("spawn")
    progress_queue = context.Queue()
    steps = {i: int(cells[i].get("steps", 1_000_000)) for i in pending}
    console.print(f"running {len(pending)} run(s) on {workers} worker process(es), {threads} torch thread(s) each")
    with GridDisplay(console, sum(steps.values()), len(pending)) as display:

        def drain() -> None:
            while True:
                try:
                    index, iteration, score, alpha = progress_queue.get_nowait()
                except queue_module.Empty:
                    return
                display.update(index, cell_name(cells[index]), steps[index], iteration, score, alpha)

        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(progress_queue, threads)) as pool:
            futures = {pool.submit(_work, index, cells[index]): index for index in pending}
            remaining = set(futures)
            while remaining:
                done, remaining = wait(remaining, timeout=0.2, return_when=FIRST_COMPLETED)
                drain()
                for future in done:
                    index = futures[future]
                    try:
                        result = future.result()
                    except BrokenProcessPool as error:
                        result = {"status": "failed", "error": f"the worker process died ({error})"}
                    outcome = CellOutcome(
                        cells[index],
                        result["status"],
                        cell_directory(cells[index]),
                        summary=result.get("summary"),
                        error=result.get("error"),
                        traceback=result.get("traceback"),
                        seconds=result.get("seconds", 0.0),
                    )
                    outcomes[index] = outcome
                    display.finish(index, steps[index], outcome)
        drain()
    progress_queue.close()
    return outcomes  # type: ignore[return-value]


def write_grid_record(out: Path, outcomes: list[CellOutcome], spec: dict[str, Any]) -> Path:
    """``OUT/grid.json``: the grid's spec and every cell's status, merged with earlier grids' cells."""
    from metaconstraint.runs import atomic_write_json, read_json

    path = Path(out) / GRID_FILE
    cells: dict[tuple, dict[str, Any]] = {}
    if path.exists():
        try:
            for cell in read_json(path).get("cells", []):
                cells[(cell["algorithm"], cell["dataset_name"], cell["seed"], cell.get("tag"))] = cell
        except (ValueError, KeyError, TypeError):
            cells = {}
    for outcome in outcomes:
        record = outcome.record()
        cells[(record["algorithm"], record["dataset_name"], record["seed"], record["tag"])] = record
    atomic_write_json(path, {**spec, "cells": list(cells.values())})
    return path
