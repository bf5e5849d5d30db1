"""Output people can copy: identifiers (dataset ids, run folders, algorithm labels) are never cut.

rich fits tables to the terminal, 80 columns in a pipe, by cutting cells (``D4RL/antmaze/umaze-div…``)
and wraps long lines by inserting newlines. Here a table whose identifier columns cannot wrap is
printed as wide as it needs (the terminal, not rich, folds a long line), and listings are plain
aligned columns.
"""

from __future__ import annotations

from typing import Any

UNLIMITED = 1_000_000  # columns offered when measuring what a table needs


def aligned_columns(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """Plain text lines, each column padded to its widest cell (the last one not padded): no cell is
    ever cut, whatever the terminal's width, so identifiers can be copied from the output as they are."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " * (len(row) > 1) + row[-1]
            for row in (header, *rows)]


def print_whole(console, renderable: Any) -> None:
    """``console.print(renderable)``, on a console widened to the renderable's minimum width when the
    console is narrower (a table with ``no_wrap`` identifier columns then keeps every cell whole)."""
    from rich.console import Console
    from rich.measure import Measurement

    needed = Measurement.get(console, console.options.update_width(UNLIMITED), renderable).minimum
    if needed <= console.width:
        console.print(renderable)
        return
    wide = Console(
        file=console.file, width=needed, force_terminal=console.is_terminal, color_system=console.color_system,
        no_color=console.no_color, highlight=False,
    )
    wide.print(renderable, crop=False)
