"""The driver's rich display: a total bar, a bar per running job, and a line per finished cell."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from metaconstraint.grid_record import short_error

if TYPE_CHECKING:
    from metaconstraint.grid.driver import CellOutcome


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

    def update(self, index: int, name: str, total: int, iteration: int, score, scale) -> None:
        if index in self.done:
            return  # a late message from a cell that has already finished
        if index not in self.tasks:
            self.tasks[index] = self.progress.add_task(f"  {name}", total=total, info="")
        info = []
        if score is not None:
            info.append(f"score [green]{score:.1f}[/]")
        if scale is not None:
            info.append(f"{scale[0]} [magenta]{scale[1]:.3f}[/]")
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
            self._line(f"[red]failed[/] {outcome.name}: {short_error(outcome.error)}")
        elif outcome.status == "interrupted":
            if outcome.note != "not started":
                self._line(f"[yellow]stopped[/] {outcome.name}: {short_error(outcome.error)}")
        else:
            score = outcome.summary.get("final_score") if outcome.summary else None
            text = "-" if score is None else f"{score:.1f}"
            self._line(f"[green]done[/] {outcome.name}: final score {text} ({outcome.seconds:.0f} s)")

    def _line(self, text: str) -> None:
        """A line above the bars; the terminal, not rich, wraps it (names and ids stay whole)."""
        self.progress.console.print(text, highlight=False, soft_wrap=True)


def report_prechecked(outcomes: list[CellOutcome | None], console) -> None:
    skipped = [o for o in outcomes if o is not None and o.status == "skipped"]
    if skipped:
        console.print(f"skipping {len(skipped)} finished run(s) (their summary.json exists)")
        for outcome in skipped:
            if outcome.note:
                console.print(f"[yellow]note[/] {outcome.name}: {outcome.note}", highlight=False, soft_wrap=True)
    for outcome in outcomes:
        if outcome is not None and outcome.status == "failed":
            console.print(f"[red]failed[/] {outcome.name}: {short_error(outcome.error)}", highlight=False, soft_wrap=True)

