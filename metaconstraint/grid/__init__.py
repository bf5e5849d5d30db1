"""Comparison grids: algorithms x datasets x seeds, run on local worker processes or on Ray.

A *cell* is one ``(algorithm, dataset, seed)`` run (:mod:`~metaconstraint.grid.cells`); cells that
differ only in seed and member-varying scalars may be packed into one vectorised *job*. A backend
(:class:`~metaconstraint.grid.events.Backend`: :class:`LocalBackend` here, ``RayBackend`` in
:mod:`metaconstraint.ray_backend`) runs jobs and yields typed events; every worker calls the same
:func:`~metaconstraint.grid.worker.execute_cell`. A cell whose ``summary.json`` exists is finished
and skipped, so rerunning a grid resumes it, on either backend; a cell interrupted after a
checkpoint continues from it when its ``config.toml`` is unchanged. A cell that fails (bad config,
missing dataset, divergence, any exception) is recorded as failed and the grid goes on.
SIGINT/SIGTERM to the driver, or SIGTERM to one worker, stops the grid: queued cells are cancelled,
running ones checkpoint and stop, and a rerun resumes. ``OUT/grid.json``
(:mod:`metaconstraint.grid_record`) records every cell's status (and a failed cell's error).

Modules: ``events`` (the backend protocol and its events), ``cells`` (cells, run folders, packing),
``worker`` (what a worker does with a job), ``local`` (the local backend), ``display`` (the rich
display) and ``driver`` (:func:`run_grid`).
"""

from metaconstraint.grid.cells import PACKED, cell_directory, cell_name, dataset_id, expand_grid, finetune_cells, pack_cells
from metaconstraint.grid.driver import CellOutcome, GridInterrupted, run_grid, write_grid_record
from metaconstraint.grid.events import Backend, CellResult, GridEvent, JobFinished, JobProgress, JobStarted
from metaconstraint.grid.local import LocalBackend, available_cores
from metaconstraint.grid.worker import execute_cell, run_cell, run_packed

__all__ = [
    "PACKED",
    "Backend",
    "CellOutcome",
    "CellResult",
    "GridEvent",
    "GridInterrupted",
    "JobFinished",
    "JobProgress",
    "JobStarted",
    "LocalBackend",
    "available_cores",
    "cell_directory",
    "cell_name",
    "dataset_id",
    "execute_cell",
    "expand_grid",
    "finetune_cells",
    "pack_cells",
    "run_cell",
    "run_grid",
    "run_packed",
    "write_grid_record",
]
