"""What every backend offers (:class:`Backend`) and what it tells the driver (typed events).

A backend runs *jobs*: a job is one cell, or a packed group of cells trained as one vectorised run
(:data:`~metaconstraint.grid.cells.PACKED`), known by the index of its first cell. While it runs
them it yields :class:`JobStarted` (where), :class:`JobProgress` (iteration, score, learned scale)
and, once per job, :class:`JobFinished` with the worker's :class:`CellResult`. Events and results
are plain picklable data: they cross process queues and Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Protocol, TypedDict, Union, runtime_checkable

from metaconstraint.signals import StopRequest

LearnedScale = tuple[str, float]  # the learned constraint scale by its own name: ("beta", 0.8)
ProgressFn = Callable[[int, Optional[float], Optional[LearnedScale]], None]
"""``progress(iteration, score or None, (scale name, value) or None)``, called by a training run."""


class CellResult(TypedDict, total=False):
    """What a worker returns for one job: ``status`` is ``done`` (with ``summary``), ``failed``
    (``error``, ``traceback``) or ``interrupted`` (``error``, ``signal``; ``not_started`` when the job
    never began). A packed job lists its cells' results in ``cells``; a remote worker adds the run's
    small ``files`` and the ``node`` it ran on."""

    status: str
    summary: dict[str, Any]
    error: str
    traceback: str
    signal: int
    seconds: float
    resumed_from: int
    not_started: bool
    files: dict[str, bytes]
    node: str
    cells: list["CellResult"]


@dataclass(frozen=True)
class JobStarted:
    job: int
    where: str  # a local worker's "pid N", a Ray node's address


@dataclass(frozen=True)
class JobProgress:
    job: int
    iteration: int
    score: float | None
    scale: LearnedScale | None  # the learned constraint scale by its name, for methods that learn one


@dataclass(frozen=True)
class JobFinished:
    job: int
    result: CellResult


GridEvent = Union[JobStarted, JobProgress, JobFinished]


@runtime_checkable
class Backend(Protocol):
    """Where a grid's jobs run (:class:`~metaconstraint.grid.local.LocalBackend`,
    :class:`~metaconstraint.ray_backend.RayBackend`)."""

    name: str

    def plan(self, jobs: int) -> str:
        """Prepare to run ``jobs`` jobs; one line saying how they will run."""
        ...

    def execute(self, jobs: list[tuple[int, dict[str, Any]]], stop: StopRequest) -> Iterator[GridEvent]:
        """Run every ``(job index, values)``, yielding events until each job has its :class:`JobFinished`.
        Once ``stop.signal_number`` is set, queued jobs finish as not started and running ones
        checkpoint and stop."""
        ...
