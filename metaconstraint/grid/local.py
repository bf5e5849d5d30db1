"""The local backend: jobs on spawned worker processes of this machine
(``concurrent.futures.ProcessPoolExecutor``), each with ``cores // workers`` torch threads (at most
``OMP_NUM_THREADS`` when set), reporting events to the driver through one queue. SIGTERM to one
worker stops the grid with it: queued jobs are cancelled, running ones checkpoint and stop."""

from __future__ import annotations

import contextlib
import os
import queue as queue_module
import signal
from typing import Any, Iterator

from metaconstraint.grid.events import CellResult, GridEvent, JobFinished, JobProgress, JobStarted
from metaconstraint.grid.worker import execute_cell
from metaconstraint.signals import StopRequest


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


def _local_work(index: int, values: dict[str, Any]) -> CellResult:
    """Run job ``index`` in a pool worker, unless the grid is stopping: then it is not started."""
    global _IN_RUN
    if _STOP_EVENT is not None and _STOP_EVENT.is_set():
        return {"status": "interrupted", "not_started": True}

    def progress(iteration: int, score: float | None, scale: tuple[str, float] | None) -> None:
        _PROGRESS_QUEUE.put(JobProgress(index, iteration, score, scale))

    _PROGRESS_QUEUE.put(JobStarted(index, f"pid {os.getpid()}"))
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


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def torch_threads(workers: int) -> int:
    """``cores // workers`` torch threads per worker, at most ``OMP_NUM_THREADS`` when set."""
    threads = max(1, available_cores() // workers)
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        # an explicit limit wins: on a shared machine two threads per process can run many times slower
        threads = min(threads, int(os.environ["OMP_NUM_THREADS"]))
    return threads


class LocalBackend:
    """Jobs on spawned worker processes of this machine: a :class:`~metaconstraint.grid.events.Backend`."""

    name = "local"

    def __init__(self, workers: int | None = None, cpus_per_run: int | None = None):
        self.workers, self.cpus_per_run = workers, cpus_per_run

    def plan(self, jobs: int) -> str:
        self._workers = max(1, min(self.workers or available_cores(), jobs))
        self._threads = self.cpus_per_run or torch_threads(self._workers)
        return f"running {jobs} run(s) on {self._workers} worker process(es), {self._threads} torch thread(s) each"

    def execute(self, jobs: list[tuple[int, dict[str, Any]]], stop: StopRequest) -> Iterator[GridEvent]:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        from concurrent.futures.process import BrokenProcessPool

        context = multiprocessing.get_context("spawn")
        progress_queue, stop_event = context.Queue(), context.Event()
        running: dict[int, int] = {}  # cell index -> worker pid
        finished: set[int] = set()

        def drain() -> Iterator[GridEvent]:
            while True:
                try:
                    event = progress_queue.get_nowait()
                except queue_module.Empty:
                    return
                if isinstance(event, JobStarted) and event.job not in finished:  # the queue may lag behind the result
                    running[event.job] = int(event.where.split()[-1])
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
                    yield JobFinished(index, result)
            yield from drain()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            progress_queue.close()

