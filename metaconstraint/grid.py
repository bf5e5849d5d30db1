"""Comparison grids: algorithms x datasets x seeds, run on local worker processes or on Ray.

A *cell* is one ``(algorithm, dataset, seed)`` run, described by the flat values ``build_configs``
reads (``seeds = 1``). :func:`run_cell` trains one cell with the :class:`~metaconstraint.training.Trainer`
and returns its summary; :func:`execute_cell` wraps it into plain data and is all a worker calls
(a local process here, a Ray task in :mod:`metaconstraint.ray_backend`). A cell whose ``summary.json``
exists is finished and skipped, so rerunning a grid resumes it, on either backend; a cell
interrupted after a checkpoint continues from it when its ``config.toml`` is unchanged.

:class:`LocalBackend` runs spawned processes (``concurrent.futures.ProcessPoolExecutor``), each with
``cores // workers`` torch threads (at most ``OMP_NUM_THREADS`` when set), reporting progress to the
parent through one queue. A cell that fails (bad config, missing dataset, divergence, any exception)
is recorded as failed and the grid goes on. SIGINT/SIGTERM to the driver, or SIGTERM to one worker,
stops the grid: queued cells are cancelled, running ones checkpoint and stop, and a rerun resumes.
``OUT/grid.json`` records every cell's status (and a failed cell's error).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue as queue_module
import shutil
import signal
import time
import tomllib
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from metaconstraint.signals import StopRequest, stop_on_signals

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
    tag = f"-{values['tag']}" if values.get("tag") else ""
    return f"{values['algorithm']} {values['dataset']} seed{values['seed']}{tag}"


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


# ----------------------------------------------------------------------------- packed cells
PACKED = "packed"  # a job's key for the cells it trains as one vectorised computation


def _pack_key(values: dict[str, Any]) -> tuple | None:
    """Cells with equal keys differ only in their seed, tag and the scalar fields their algorithm can
    vary between members; ``None`` for a cell that cannot be packed (unknown algorithm)."""
    from metaconstraint.config import ConfigError, algorithm_class

    try:
        fields = set(algorithm_class(str(values["algorithm"])).member_fields)
    except (ConfigError, KeyError):
        return None
    rest = {k: v for k, v in values.items() if k not in fields | {"seed", "tag"}}
    return json.dumps(rest, sort_keys=True, default=str), tuple(sorted(f for f in fields if f in values))


def pack_cells(cells: list[dict[str, Any]], indices: list[int], max_members: int | None = None) -> list[list[int]]:
    """Group the cells ``indices`` that differ only in seed and member-varying scalars (e.g. td3bc's
    ``alpha``): each group trains as one vectorised run (members = values x seeds), in order of first
    appearance, at most ``max_members`` cells each (default: the run limit)."""
    from metaconstraint.config import MAX_MEMBERS

    limit = max_members or MAX_MEMBERS
    groups: dict[Any, list[list[int]]] = {}
    order: list[list[int]] = []
    for index in indices:
        key = _pack_key(cells[index])
        chunks = groups.setdefault(key, []) if key is not None else None
        if chunks is None or not chunks or len(chunks[-1]) >= limit:
            chunk: list[int] = []
            order.append(chunk)
            if chunks is not None:
                chunks.append(chunk)
        else:
            chunk = chunks[-1]
        chunk.append(index)
    return order


def run_packed(cells: list[dict[str, Any]], progress: ProgressFn | None = None) -> list[dict[str, Any]]:
    """Train cells that differ only in seed and member-varying scalars as one run whose members are
    the cells; each writes its own run folder, exactly as :func:`run_cell` would. Returns their
    summaries. The group resumes from its checkpoints when every folder has them, written by this
    same group with the same configs; otherwise it starts afresh."""
    from metaconstraint.config import algorithm_class, build_configs
    from metaconstraint.members import Member, member_records
    from metaconstraint.runs import checkpoint_paths
    from metaconstraint.checkpoint import newest_header
    from metaconstraint.training import Trainer

    fields = [f for f in algorithm_class(cells[0]["algorithm"]).member_fields if f in cells[0]]
    base = {k: v for k, v in cells[0].items() if k not in fields and k != "tag"}
    run, algorithm_config = build_configs(base, source=f"grid cells {cell_name(cells[0])} and {len(cells) - 1} more")
    members = [Member(int(c["seed"]), {f: c[f] for f in fields}, c.get("tag")) for c in cells]
    trainer = Trainer(run, algorithm_config, progress=progress, members=members)
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


# ----------------------------------------------------------------------------- outcomes
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
RUN_FILES = ("config.toml", "environment.json", "metrics.jsonl", "metrics.csv", "summary.json")  # summary.json last


def resume_point(values: dict[str, Any]) -> int:
    """The iteration of the cell's newest checkpoint (0 when it has none): where a retry continues."""
    from metaconstraint.runs import checkpoint_paths, checkpoint_step

    directory = cell_directory(values)
    paths = checkpoint_paths(directory) if directory is not None else []
    return checkpoint_step(paths[-1]) if paths else 0


def execute_cell(values: dict[str, Any], progress: ProgressFn | None = None) -> dict[str, Any]:
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


_PROGRESS_QUEUE = None
_STOP_EVENT = None
_IN_RUN = False  # a cell is being set up or finished, outside the training loop's own signal handling


def _init_worker(progress_queue, stop_event, threads: int) -> None:
    global _PROGRESS_QUEUE, _STOP_EVENT
    import torch

    _PROGRESS_QUEUE, _STOP_EVENT = progress_queue, stop_event
    # Ctrl-C in a terminal signals the whole process group: the driver alone gets it and stops the
    # workers itself, one SIGTERM each (a second signal would skip the run's final checkpoint).
    os.setpgrp()

    def outside_training(signum, frame):  # the training loop replaces this handler while it runs
        stop_event.set()
        if _IN_RUN:
            raise KeyboardInterrupt  # loading data or writing the summary: stop now, checkpoints are intact

    signal.signal(signal.SIGINT, outside_training)
    signal.signal(signal.SIGTERM, outside_training)
    torch.set_num_threads(threads)


def _local_work(index: int, values: dict[str, Any]) -> dict[str, Any]:
    """Run cell ``index`` in a pool worker, unless the grid is stopping: then it is not started."""
    global _IN_RUN
    if _STOP_EVENT is not None and _STOP_EVENT.is_set():
        return {"status": "interrupted", "not_started": True}

    def progress(iteration: int, score: float | None, alpha: float | None) -> None:
        _PROGRESS_QUEUE.put(("progress", index, iteration, score, alpha))

    _PROGRESS_QUEUE.put(("started", index, f"pid {os.getpid()}"))
    _IN_RUN = True
    try:
        result = execute_cell(values, progress)
    except KeyboardInterrupt:
        result = {"status": "interrupted", "error": "stopped outside its training loop; its checkpoints are intact",
                  "signal": signal.SIGTERM}
    finally:
        _IN_RUN = False
    if result["status"] == "interrupted":
        _STOP_EVENT.set()  # a worker that was told to stop takes no further cell
    return result


def torch_threads(workers: int) -> int:
    """``cores // workers`` torch threads per worker, at most ``OMP_NUM_THREADS`` when set."""
    threads = max(1, available_cores() // workers)
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        # an explicit limit wins: on a shared machine two threads per process can run many times slower
        threads = min(threads, int(os.environ["OMP_NUM_THREADS"]))
    return threads


Event = tuple  # ("started", index, where) | ("progress", index, iteration, score, alpha) | ("finished", index, result)


class LocalBackend:
    """Cells on spawned worker processes of this machine (``concurrent.futures.ProcessPoolExecutor``)."""

    name = "local"

    def __init__(self, workers: int | None = None, cpus_per_run: int | None = None):
        self.workers, self.cpus_per_run = workers, cpus_per_run

    def plan(self, jobs: int) -> str:
        self._workers = max(1, min(self.workers or available_cores(), jobs))
        self._threads = self.cpus_per_run or torch_threads(self._workers)
        return f"running {jobs} run(s) on {self._workers} worker process(es), {self._threads} torch thread(s) each"

    def execute(self, jobs: list[tuple[int, dict[str, Any]]], stop: StopRequest) -> Iterator[Event]:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        from concurrent.futures.process import BrokenProcessPool

        context = multiprocessing.get_context("spawn")
        progress_queue, stop_event = context.Queue(), context.Event()
        running: dict[int, int] = {}  # cell index -> worker pid
        finished: set[int] = set()

        def drain() -> Iterator[Event]:
            while True:
                try:
                    event = progress_queue.get_nowait()
                except queue_module.Empty:
                    return
                if event[0] == "started" and event[1] not in finished:  # the queue may lag behind the result
                    running[event[1]] = int(event[2].split()[-1])
                yield event

        def stop_workers(signal_number: int) -> None:
            stop_event.set()
            for future in futures:
                future.cancel()
            for pid in set(running.values()):  # once each: a second signal skips the final checkpoint
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal_number)

        pool = ProcessPoolExecutor(
            self._workers, mp_context=context, initializer=_init_worker, initargs=(progress_queue, stop_event, self._threads)
        )
        stopping = False
        try:
            futures = {pool.submit(_local_work, index, values): index for index, values in jobs}
            remaining = set(futures)
            while remaining:
                try:
                    done, remaining = wait(remaining, timeout=0.2, return_when=FIRST_COMPLETED)
                except KeyboardInterrupt:  # a second signal: the runs stop without a new checkpoint
                    stop_workers(signal.SIGTERM)
                    raise
                yield from drain()
                if stop.signal_number is not None and not stopping:
                    stopping = True
                    stop_workers(signal.SIGTERM)
                for future in done:
                    index = futures[future]
                    running.pop(index, None)
                    finished.add(index)
                    if future.cancelled():
                        result = {"status": "interrupted", "not_started": True}
                    else:
                        try:
                            result = future.result()
                        except BrokenProcessPool as error:
                            result = {"status": "failed", "error": f"the worker process died ({error})"}
                    if result["status"] == "interrupted" and not stopping:
                        # one worker was signalled (by a scheduler, by kill): the grid stops with it
                        stopping = True
                        stop.signal_number = stop.signal_number or result.get("signal", signal.SIGTERM)
                        stop_workers(signal.SIGTERM)
                    yield ("finished", index, result)
            yield from drain()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            progress_queue.close()

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
    finished_cells: int = 0

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
        return f"[bold]grid[/] {self.finished_cells}/{self.cells} runs"

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

    def finish(self, index: int, total: int, outcomes: list[CellOutcome]) -> None:
        """Job ``index`` ended: its cells' ``outcomes`` (one, or a packed job's members)."""
        self.done.add(index)
        self.finished_cells += len(outcomes)
        if index in self.tasks:
            self.progress.remove_task(self.tasks.pop(index))
        self.iterations[index] = total
        self.progress.update(self.overall, completed=sum(self.iterations.values()), description=self._overall_text())
        for outcome in outcomes:
            self._print(outcome)

    def _print(self, outcome: CellOutcome) -> None:
        if outcome.status == "failed":
            self.progress.console.print(f"[red]failed[/] {outcome.name}: {short_error(outcome.error)}", highlight=False)
        elif outcome.status == "interrupted":
            if outcome.note != "not started":
                self.progress.console.print(f"[yellow]stopped[/] {outcome.name}: {short_error(outcome.error)}", highlight=False)
        else:
            score = outcome.summary.get("final_score") if outcome.summary else None
            text = "-" if score is None else f"{score:.1f}"
            self.progress.console.print(
                f"[green]done[/] {outcome.name}: final score {text} ({outcome.seconds:.0f} s)", highlight=False
            )


class GridInterrupted(Exception):
    """The grid was stopped by a signal; every unfinished cell keeps its newest checkpoint."""

    def __init__(self, outcomes: list[CellOutcome], signal_number: int):
        super().__init__(f"grid stopped by {signal.Signals(signal_number).name}")
        self.outcomes, self.signal_number = outcomes, signal_number


def _report_prechecked(outcomes: list[CellOutcome | None], console) -> None:
    skipped = [o for o in outcomes if o is not None and o.status == "skipped"]
    if skipped:
        console.print(f"skipping {len(skipped)} finished run(s) (their summary.json exists)")
        for outcome in skipped:
            if outcome.note:
                console.print(f"[yellow]note[/] {outcome.name}: {outcome.note}", highlight=False)
    for outcome in outcomes:
        if outcome is not None and outcome.status == "failed":
            console.print(f"[red]failed[/] {outcome.name}: {short_error(outcome.error)}", highlight=False)


def run_grid(
    cells: list[dict[str, Any]], workers: int | None = None, console=None, backend=None, pack: bool = False,
    max_members: int | None = None,
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
    _report_prechecked(outcomes, console)
    if not pending:
        return outcomes  # type: ignore[return-value]

    groups = pack_cells(cells, pending, max_members) if pack else [[i] for i in pending]
    jobs = {group[0]: group for group in groups}  # a job is known by its first cell's index
    if len(groups) < len(pending):
        console.print(f"{len(pending)} run(s) packed into {len(groups)} vectorised job(s) (members = values x seeds)")
    console.print(backend.plan(len(groups)))
    steps = {i: int(cells[i].get("steps", 1_000_000)) for i in jobs}
    where: dict[int, str] = {}

    def job_values(group: list[int]) -> dict[str, Any]:
        return cells[group[0]] if len(group) == 1 else {PACKED: [cells[i] for i in group]}

    def job_name(group: list[int]) -> str:
        return cell_name(cells[group[0]]) if len(group) == 1 else f"{cell_name(cells[group[0]])} +{len(group) - 1} members"

    with stop_on_signals() as stop, GridDisplay(console, sum(steps.values()), len(pending)) as display:
        for event in backend.execute([(i, job_values(group)) for i, group in jobs.items()], stop):
            kind, index = event[0], event[1]
            if kind == "started":
                where[index] = event[2]
            elif kind == "progress":
                display.update(index, job_name(jobs[index]), steps[index], *event[2:])
            elif kind == "finished":
                result = event[2]
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
