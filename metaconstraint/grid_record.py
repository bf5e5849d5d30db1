"""The grid record ``OUT/grid.json``: the grid's spec and what became of each cell.

Written by the grid driver (:func:`metaconstraint.grid.write_grid_record`), read by the report for
the cells that failed. It depends on nothing of the grid's machinery. A cell's ``run_dir`` is
recorded relative to the grid folder (so the folder can move); records written before that hold an
absolute path, and :func:`read_cells` reads both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

GRID_FILE = "grid.json"


def cell_key(record: dict[str, Any]) -> tuple:
    """A cell's identity across grids: a rerun of the same cell replaces its record."""
    return record["algorithm"], record["dataset_name"], record["seed"], record.get("tag")


def relative_run_dir(directory: Path | None, out: Path) -> str | None:
    """``directory`` as recorded: relative to the grid folder ``out``, with '/' separators."""
    if directory is None:
        return None
    return Path(os.path.relpath(Path(directory).absolute(), Path(out).absolute())).as_posix()


def write_records(out: Path, records: list[dict[str, Any]], spec: dict[str, Any]) -> Path:
    """``OUT/grid.json``: ``spec`` and ``records``, merged with the cells earlier grids recorded there."""
    from metaconstraint.runs import atomic_write_json, read_json

    path = Path(out) / GRID_FILE
    cells: dict[tuple, dict[str, Any]] = {}
    if path.exists():
        try:
            cells = {cell_key(cell): cell for cell in read_json(path).get("cells", [])}
        except (ValueError, KeyError, TypeError):
            cells = {}
    for record in records:
        cells[cell_key(record)] = record
    atomic_write_json(path, {**spec, "cells": list(cells.values())})
    return path


def read_cells(grid_file: Path) -> list[dict[str, Any]]:
    """The cells of a grid record, each ``run_dir`` a path (absolute as recorded by older versions,
    else joined to the record's folder); an unreadable record has none."""
    from metaconstraint.runs import read_json

    try:
        cells = read_json(grid_file).get("cells", [])
    except ValueError:
        return []
    for cell in cells:
        if cell.get("run_dir"):
            cell["run_dir"] = Path(grid_file).parent / cell["run_dir"]  # an absolute path stays as it is
    return cells


def short_error(error: str | None, limit: int = 160) -> str:
    """The first sentence of an error message, for one-line displays (``grid.json`` keeps it all)."""
    text = " ".join((error or "unknown error").split())
    end = text.find(". ")
    text = text[: end + 1] if 0 < end < limit else text
    return text if len(text) <= limit else text[: limit - 1] + "…"
