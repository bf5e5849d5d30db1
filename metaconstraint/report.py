"""Results of saved runs: the score table (rich, Markdown, CSV), aggregates and PNG plots.

Everything is rebuilt from run folders: every ``summary.json`` below a folder, each run's
``metrics.jsonl`` for the curves, and ``grid.json`` files for cells that failed. The final score
of a run is its summary's ``final_score`` (under the summary's ``final_score_rule``) or, when a rule
is asked for, recomputed from the summary's ``scores`` with that rule.

Table cells are the mean +- sample standard deviation (ddof = 1) over seeds of the final
D4RL-normalised scores. The average row is the mean over datasets of the per-dataset means; its
spread is the standard deviation over seeds of each seed's average over datasets (seeds present in
every dataset), and it is left empty for an algorithm missing a dataset.
"""

from __future__ import annotations

import csv
import io
import math
import shlex
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from metaconstraint import stats
from metaconstraint.finetune_report import markdown_finetune, plot_switch
from metaconstraint.grid_record import short_error
from metaconstraint.suggest import unknown_name

RESULTS_MD = "results.md"
RESULTS_CSV = "results.csv"
RUNS_CSV = "runs.csv"
PAIRED_CSV = "paired.csv"
PLOTS = {
    "curves": "learning_curves.png",
    "scale": "learned_scale.png",
    "aggregates": "aggregates.png",
    "profiles": "performance_profiles.png",
    "improvement": "improvement.png",
    "finetune": "finetune.png",  # metaconstraint.finetune_report
}


# ----------------------------------------------------------------------------- runs
@dataclass
class RunResult:
    """One run (one seed of one algorithm on one dataset), finished or failed."""

    algorithm: str  # label: the algorithm, with the run folder's tag in parentheses if it has one
    dataset: str
    seed: int
    status: str  # "done" or "failed"
    final_score: float | None = None
    rule: str | None = None  # e.g. "last" or "mean_last_k (k=5)"
    final_scale: float | None = None  # the learned scale at the end (adaptive algorithms)
    scale_name: str | None = None  # its own name: alpha, beta
    directory: Path | None = None
    error: str | None = None
    steps: int | None = None
    offline: dict[str, Any] | None = None  # a fine-tuning run's offline run: its folder (relative), steps, score at step 0


def describe_rule(rule: str, k: int | None = None) -> str:
    return f"mean_last_k (k={k})" if rule == "mean_last_k" else rule


RULE_TEXT = {
    "last": "the mean over the final evaluation's episodes",
    "mean_last_k": "the mean of the last k evaluations (each the mean over its episodes)",
}


def run_preset(directory: Path) -> str | None:
    """The ``preset`` a run's ``config.toml`` records (:mod:`metaconstraint.algorithms.presets`), or
    ``None``: for algorithms without presets and for runs written before presets existed."""
    import tomllib

    try:
        config = tomllib.loads((Path(directory) / "config.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    preset = config.get("preset")
    return preset if isinstance(preset, str) else None


def _label(summary: dict[str, Any], directory: Path) -> str:
    """``algorithm``, ``algorithm (preset)``, ``algorithm (tag)`` or ``algorithm (preset, tag)``: runs
    under different named settings (e.g. rebrac's corl-adroit and the older runs without a preset)
    are different columns."""
    prefix = f"seed{summary.get('seed')}-"
    tag = directory.name[len(prefix) :] if directory.name.startswith(prefix) else None
    parts = [part for part in (run_preset(directory), tag) if part]
    return f"{summary['algorithm']} ({', '.join(parts)})" if parts else summary["algorithm"]


def load_run(directory: Path, rule: str | None = None, k: int = 5) -> RunResult:
    """A run folder's result; with ``rule`` its final score is recomputed from the saved ``scores``."""
    from metaconstraint.runs import final_score, read_summary

    directory = Path(directory)
    summary = read_summary(directory)
    if rule is None:
        score = summary["final_score"]
        used = describe_rule(summary.get("final_score_rule", "last"), summary.get("final_score_k"))
    else:
        values = [s["score"] for s in summary.get("scores", [])]
        score = final_score(values, rule, k) if values else float("nan")
        used = describe_rule(rule, k)
    return RunResult(
        algorithm=_label(summary, directory),
        dataset=summary["dataset"],
        seed=int(summary["seed"]),
        status="done",
        final_score=float(score),
        rule=used,
        final_scale=summary.get("final_scale"),
        scale_name=summary.get("scale_name"),
        directory=directory,
        steps=summary.get("steps"),
        offline=summary.get("offline"),
    )


def collect_runs(folder: Path, rule: str | None = None, k: int = 5) -> list[RunResult]:
    """Every run below ``folder`` (``summary.json`` files), plus failed cells recorded in ``grid.json``."""
    from metaconstraint.grid_record import GRID_FILE, read_cells

    folder = Path(folder)
    runs = [load_run(path.parent, rule, k) for path in sorted(folder.rglob("summary.json"))]
    finished = {(r.algorithm, r.dataset, r.seed) for r in runs}
    for grid_file in sorted(folder.rglob(GRID_FILE)):
        for cell in read_cells(grid_file):
            label = f"{cell['algorithm']} ({cell['tag']})" if cell.get("tag") else cell["algorithm"]
            key = (label, cell["dataset"], cell["seed"])
            if cell.get("status") == "failed" and key not in finished:
                runs.append(_failed(cell))
                finished.add(key)
    return runs


def _failed(cell: dict[str, Any]) -> RunResult:
    directory = cell.get("run_dir")
    return RunResult(
        algorithm=f"{cell['algorithm']} ({cell['tag']})" if cell.get("tag") else cell["algorithm"],
        dataset=cell["dataset"],
        seed=int(cell["seed"]),
        status="failed",
        error=cell.get("error"),
        directory=Path(directory) if directory else None,
    )


def _metrics(run: RunResult) -> list[dict[str, Any]]:
    """The run's metrics records, an old folder's ``alpha`` under today's ``scale/<name>``."""
    from metaconstraint.runs import read_metrics

    return read_metrics(run.directory, run.scale_name) if run.directory is not None else []


# ----------------------------------------------------------------------------- the table
@dataclass
class CellStats:
    scores: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    failed: int = 0

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.scores)) if self.scores else None

    @property
    def std(self) -> float | None:
        return float(np.std(self.scores, ddof=1)) if self.n > 1 else None


@dataclass
class ScoreTable:
    algorithms: list[str]
    datasets: list[str]
    cells: dict[tuple[str, str], CellStats]
    average: dict[str, tuple[float | None, float | None, int]]  # algorithm -> (mean, std, seeds used)
    rule: str
    failures: list[RunResult]
    steps: list[int]  # the iteration budgets of the finished runs
    averaged: list[str]  # the datasets the average row covers (every algorithm has runs there)

    @property
    def average_label(self) -> str:
        if len(self.averaged) == len(self.datasets):
            return "average"
        return f"average ({len(self.averaged)} of {len(self.datasets)} datasets)"

    def best(self, row: str) -> set[str]:
        means = {a: self.row_value(row, a)[0] for a in self.algorithms}
        means = {a: m for a, m in means.items() if m is not None and math.isfinite(m)}
        if not means:
            return set()
        top = max(means.values())
        return {a for a, m in means.items() if m == top}

    def row_value(self, row: str, algorithm: str) -> tuple[float | None, float | None]:
        if row == "average":
            mean, std, _ = self.average[algorithm]
            return mean, std
        cell = self.cells[(row, algorithm)]
        return cell.mean, cell.std

    def seed_scores(self) -> dict[str, dict[str, dict[int, float]]]:
        """``algorithm -> dataset -> seed -> final score``: the runs that pair across algorithms."""
        return {a: {d: dict(zip(self.cells[(d, a)].seeds, self.cells[(d, a)].scores)) for d in self.datasets} for a in self.algorithms}

    def scores(self) -> dict[str, dict[str, list[float]]]:
        """``algorithm -> dataset -> final scores``, for :func:`metaconstraint.stats.aggregate`."""
        return {a: {d: list(self.cells[(d, a)].scores) for d in self.datasets} for a in self.algorithms}


def _ordered(values: Iterable[str], preferred: list[str] | None) -> list[str]:
    seen = list(dict.fromkeys(values))
    first = [v for v in (preferred or []) if v in seen]
    return first + sorted(v for v in seen if v not in first)


def score_table(
    runs: list[RunResult], algorithms: list[str] | None = None, datasets: list[str] | None = None
) -> ScoreTable:
    """Per-cell scores and the average row; ``algorithms``/``datasets`` fix the order (the rest sorted by name)."""
    algorithms = _ordered((r.algorithm for r in runs), algorithms)
    datasets = _ordered((r.dataset for r in runs), datasets)
    cells = {(d, a): CellStats() for d in datasets for a in algorithms}
    for run in runs:
        cell = cells[(run.dataset, run.algorithm)]
        if run.status == "done" and run.final_score is not None and math.isfinite(run.final_score):
            cell.scores.append(run.final_score)
            cell.seeds.append(run.seed)
        else:
            cell.failed += 1
    # The average runs over the datasets where every algorithm has a run, so columns stay comparable.
    complete = [d for d in datasets if all(cells[(d, a)].n for a in algorithms)]
    average = {}
    for a in algorithms:
        row = [cells[(d, a)] for d in complete]
        if not row:
            average[a] = (None, None, 0)
            continue
        mean = float(np.mean([c.mean for c in row]))
        common = sorted(set.intersection(*(set(c.seeds) for c in row)))
        per_seed = [np.mean([c.scores[c.seeds.index(s)] for c in row]) for s in common]
        std = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None
        average[a] = (mean, std, len(common))
    rules = sorted({r.rule for r in runs if r.status == "done" and r.rule})
    rule = rules[0] if len(rules) == 1 else ("mixed: " + ", ".join(rules) if rules else "-")
    failures = [r for r in runs if r.status != "done"]
    steps = sorted({r.steps for r in runs if r.status == "done" and r.steps is not None})
    return ScoreTable(algorithms, datasets, cells, average, rule, failures, steps, complete)


def _cell_text(table: ScoreTable, row: str, algorithm: str) -> str:
    mean, std = table.row_value(row, algorithm)
    if row != "average":
        cell = table.cells[(row, algorithm)]
        if cell.n == 0:
            return "failed" if cell.failed else ""
    if mean is None:
        return "—"
    text = f"{mean:.1f} ± {std:.1f}" if std is not None else f"{mean:.1f}"
    if row != "average":
        cell = table.cells[(row, algorithm)]
        notes = [f"n={cell.n}"] if cell.n < max(table_seeds(table), 1) or cell.n == 1 else []
        if cell.failed:
            notes.append(f"{cell.failed} failed")
        if notes:
            text += f" ({', '.join(notes)})"
    return text


def table_seeds(table: ScoreTable) -> int:
    """The largest number of runs (finished or failed) of any cell: what a complete cell holds."""
    return max((c.n + c.failed for c in table.cells.values()), default=0)


def rich_table(table: ScoreTable, title: str = "final D4RL-normalised score"):
    from rich.table import Table

    view = Table(title=f"{title} (mean ± std over seeds; final score: {table.rule})")
    view.add_column("dataset", no_wrap=True)  # identifiers stay whole: print with terminal.print_whole
    for a in table.algorithms:
        view.add_column(a, justify="right", min_width=len(a))
    for row in [*table.datasets, "average"]:
        best = table.best(row)
        texts = []
        for a in table.algorithms:
            text = _cell_text(table, row, a)
            if text == "failed":
                text = "[red]failed[/]"
            elif a in best:
                text = f"[bold green]{text}[/]"
            texts.append(text)
        view.add_row(f"[bold]{table.average_label}[/]" if row == "average" else row, *texts, end_section=row == table.datasets[-1])
    return view


def markdown_table(table: ScoreTable) -> str:
    lines = ["| dataset | " + " | ".join(table.algorithms) + " |", "|---|" + "---:|" * len(table.algorithms)]
    for row in [*table.datasets, "average"]:
        best = table.best(row)
        texts = []
        for a in table.algorithms:
            text = _cell_text(table, row, a)
            texts.append(f"**{text}**" if a in best and text not in ("", "failed", "—") else text)
        lines.append(f"| {f'**{table.average_label}**' if row == 'average' else row} | " + " | ".join(texts) + " |")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def csv_table(table: ScoreTable) -> str:
    """Wide CSV: one row per dataset plus ``average``; per algorithm its mean, std, runs and failures."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    header = ["dataset"]
    for a in table.algorithms:
        header += [f"{a} mean", f"{a} std", f"{a} runs", f"{a} failed"]
    writer.writerow([*header, "final_score_rule"])
    for row in [*table.datasets, "average"]:
        values = [row]
        for a in table.algorithms:
            mean, std = table.row_value(row, a)
            if row == "average":
                runs, failed = table.average[a][2], sum(table.cells[(d, a)].failed for d in table.averaged)
            else:
                runs, failed = table.cells[(row, a)].n, table.cells[(row, a)].failed
            values += [_number(mean), _number(std), runs, failed]
        writer.writerow([table.average_label if row == "average" else row, *values[1:], table.rule])
    return buffer.getvalue()


def runs_csv(runs: list[RunResult]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["algorithm", "dataset", "seed", "status", "final_score", "final_score_rule", "final_scale", "scale_name",
                     "steps", "run_dir", "error"])
    for r in sorted(runs, key=lambda r: (r.algorithm, r.dataset, r.seed)):
        writer.writerow(
            [r.algorithm, r.dataset, r.seed, r.status, _number(r.final_score), r.rule or "", _number(r.final_scale),
             r.scale_name or "", r.steps if r.steps is not None else "", r.directory or "", r.error or ""]
        )
    return buffer.getvalue()


def failure_lines(failures: list[RunResult]) -> list[str]:
    """One line per algorithm, dataset and error: ``aspc nope/x-v0 seeds 0, 1: DatasetError: ...``."""
    grouped: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for f in failures:
        grouped[(f.algorithm, f.dataset, short_error(f.error))].append(f.seed)
    lines = []
    for (algorithm, dataset, error), seeds in grouped.items():
        which = f"seed {seeds[0]}" if len(seeds) == 1 else "seeds " + ", ".join(map(str, sorted(seeds)))
        lines.append(f"{algorithm} {dataset} {which}: {error}")
    return lines


# ----------------------------------------------------------------------------- aggregates
def rich_aggregates(result: stats.Aggregates):
    from rich.table import Table

    view = Table(title=_aggregates_caption(result))
    for column in ("algorithm", "runs", "IQM [95% CI]", "mean [95% CI]"):
        view.add_column(column, justify="left" if column == "algorithm" else "right", no_wrap=column == "algorithm")
    if result.reference:
        view.add_column(f"P({result.reference} > algorithm) [95% CI]", justify="right")
    for a in result.algorithms:
        row = [a, str(result.runs[a]), result.intervals[a]["IQM"].format(), result.intervals[a]["mean"].format()]
        if result.reference:
            row.append(result.improvement[a].format(2) if a in result.improvement else "—")
        view.add_row(*row)
    return view


def _aggregates_caption(result: stats.Aggregates) -> str:
    return (
        f"aggregates over {len(result.datasets)} dataset(s) x seeds: {result.reps} stratified bootstrap "
        f"samples, {100 * result.confidence:.0f}% percentile intervals"
    )


def markdown_aggregates(result: stats.Aggregates) -> str:
    runs = ", ".join(f"{a} {result.runs[a]}" for a in result.algorithms)
    lines = [
        "## Aggregates across datasets x seeds",
        "",
        f"Runs pooled per algorithm: {runs}, over {len(result.datasets)} dataset(s). "
        f"Intervals: {100 * result.confidence:.0f}% percentile intervals from {result.reps} stratified bootstrap "
        f"samples (seeds resampled with replacement within each dataset; numpy seed {result.seed}). "
        "IQM is the interquartile mean (`scipy.stats.trim_mean`, 25% cut at each end) of all runs pooled; "
        "mean is the mean of all runs pooled.",
    ]
    if result.reference:
        lines.append(
            f"P({result.reference} > X) is the probability that a run of {result.reference} scores higher than a run "
            "of X on the same dataset (ties count 1/2), averaged over the datasets both ran on; its bootstrap "
            "resamples both algorithms' runs independently within each dataset."
        )
    header = "| algorithm | runs | IQM [95% CI] | mean [95% CI] |"
    rule = "|---|---:|---:|---:|"
    if result.reference:
        header += f" P({result.reference} > algorithm) [95% CI] |"
        rule += "---:|"
    lines += ["", header, rule]
    for a in result.algorithms:
        row = f"| {a} | {result.runs[a]} | {result.intervals[a]['IQM'].format()} | {result.intervals[a]['mean'].format()} |"
        if result.reference:
            p = result.improvement.get(a)
            count = result.improvement_datasets.get(a, 0)
            row += f" {p.format(2)} ({count} dataset{'s' if count != 1 else ''}) |" if p else " — |"
        lines.append(row)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- paired differences
@dataclass(frozen=True)
class PairedSection:
    """The paired comparisons of one report and the conventions they were made under."""

    comparisons: list[stats.PairedComparison]
    test: str
    effect: float
    alpha: float = stats.DEFAULT_ALPHA
    power: float = stats.DEFAULT_POWER


TEST_TEXT = {
    "t": "paired t-test (`scipy.stats.ttest_1samp` on the differences)",
    "wilcoxon": "Wilcoxon signed-rank test (`scipy.stats.wilcoxon`, zero differences dropped)",
}


def paired_verdict(comparison: stats.PairedComparison, section: PairedSection) -> str:
    """One plain sentence: resolved, or not and whether the design could have resolved ``section.effect``."""
    if comparison.pairs < 2 or comparison.p_holm is None:
        return f"untestable: {comparison.pairs} pair(s)"
    if comparison.p_holm < section.alpha:
        return f"resolved at Holm-adjusted {section.alpha:g}"
    if comparison.underpowered(section.effect):
        return (
            f"underpowered: {comparison.pairs} pairs detect {comparison.detectable:.1f} points with "
            f"{100 * section.power:.0f}% power, not {section.effect:g}"
        )
    return f"not resolved (a {section.effect:g}-point difference would be detected with {100 * section.power:.0f}% power)"


def _p_text(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def _paired_row(c: stats.PairedComparison, section: PairedSection) -> list[str]:
    return [
        f"{c.reference} − {c.other}",
        f"{c.pairs} ({c.datasets} dataset{'s' if c.datasets != 1 else ''})",
        "—" if not c.pairs else f"{c.mean_difference:+.1f}",
        "—" if c.sd_difference is None else f"{c.sd_difference:.1f}",
        _p_text(c.p),
        _p_text(c.p_holm),
        "—" if c.detectable is None else f"{c.detectable:.1f}",
        paired_verdict(c, section),
    ]


PAIRED_COLUMNS = ["comparison", "pairs", "mean difference", "SD", "p", "Holm p", "detectable (80%)", "verdict"]


def markdown_paired(section: PairedSection) -> str:
    reference = section.comparisons[0].reference
    lines = [
        "## Paired differences",
        "",
        f"Differences {reference} − X of final scores over runs paired by dataset and seed (each pair played "
        f"the same evaluation episodes). p: two-sided {TEST_TEXT[section.test]}; Holm p: adjusted by Holm's "
        f"step-down method over the {sum(c.p is not None for c in section.comparisons)} comparisons with a p-value. "
        f"Detectable: the smallest true mean difference the paired t-test finds with {100 * section.power:.0f}% power "
        f"at two-sided level {section.alpha:g}, given the observed SD of the differences and the number of pairs "
        f"(noncentral t). Effect of interest: {section.effect:g} points; a comparison that could not detect it is "
        "marked underpowered, and its non-significance says nothing about whether the methods differ.",
        "",
        "| " + " | ".join(PAIRED_COLUMNS) + " |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines += ["| " + " | ".join(_paired_row(c, section)) + " |" for c in section.comparisons]
    return "\n".join(lines)


def paired_csv(section: PairedSection) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["reference", "other", "pairs", "datasets", "mean_difference", "sd_difference", "p", "p_holm",
                     "detectable_difference", "effect_of_interest", "underpowered", "test", "alpha", "power", "verdict"])
    for c in section.comparisons:
        writer.writerow([
            c.reference, c.other, c.pairs, c.datasets, _number(c.mean_difference if c.pairs else None), _number(c.sd_difference),
            "" if c.p is None else f"{c.p:.6g}", "" if c.p_holm is None else f"{c.p_holm:.6g}", _number(c.detectable),
            f"{section.effect:g}", c.underpowered(section.effect), section.test, section.alpha, section.power,
            paired_verdict(c, section),
        ])
    return buffer.getvalue()


def rich_paired(section: PairedSection):
    from rich.table import Table

    view = Table(title=f"paired differences ({section.test} test, Holm-adjusted; effect of interest {section.effect:g} points)")
    for column in PAIRED_COLUMNS:
        view.add_column(column, justify="left" if column in ("comparison", "verdict") else "right", no_wrap=column == "comparison")
    for c in section.comparisons:
        view.add_row(*_paired_row(c, section))
    return view


# ----------------------------------------------------------------------------- plots
def _figure(panels: int, width: float = 4.2, height: float = 3.2, columns: int = 3):
    from matplotlib.figure import Figure

    columns = max(1, min(columns, panels))
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(width * columns, height * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).reshape(-1)
    for extra in axes[panels:]:
        extra.set_visible(False)
    return figure, axes[:panels]


def _colors(algorithms: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return {a: palette(i % 10) for i, a in enumerate(algorithms)}


def _curves(runs: list[RunResult], key: str) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(dataset, algorithm) -> (steps, mean, std)`` over seeds of metric ``key`` at each logged step
    (``"scale"``: the learned scale, whatever its name)."""
    from metaconstraint.runs import scale_metric

    grouped: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        if run.status != "done":
            continue
        name = scale_metric(run.scale_name or "alpha") if key == "scale" else key
        for record in _metrics(run):
            if name in record and record[name] is not None:
                grouped[(run.dataset, run.algorithm)][int(record["step"])].append(float(record[name]))
    curves = {}
    for cell, by_step in grouped.items():
        steps = np.array(sorted(by_step))
        curves[cell] = (
            steps,
            np.array([np.mean(by_step[s]) for s in steps]),
            np.array([np.std(by_step[s]) for s in steps]),
        )
    return curves


def plot_curves(
    table: ScoreTable, runs: list[RunResult], key: str, ylabel: str, path: Path, algorithms=None,
    labels: dict[str, str] | None = None,
) -> Path | None:
    """One panel per dataset: mean over seeds of ``key`` with a +-1 std band, one line per algorithm
    (in the legend as ``labels[algorithm]``, default the algorithm)."""
    curves = _curves([r for r in runs if algorithms is None or r.algorithm in algorithms], key)
    if not curves:
        return None
    colors = _colors(table.algorithms)
    datasets = [d for d in table.datasets if any(cell[0] == d for cell in curves)]
    figure, axes = _figure(len(datasets))
    for axis, dataset in zip(axes, datasets):
        for algorithm in table.algorithms:
            if (dataset, algorithm) not in curves:
                continue
            steps, mean, std = curves[(dataset, algorithm)]
            axis.plot(steps, mean, color=colors[algorithm], label=(labels or {}).get(algorithm, algorithm), marker="o" if len(steps) < 15 else None, markersize=3)
            axis.fill_between(steps, mean - std, mean + std, color=colors[algorithm], alpha=0.2, linewidth=0)
        axis.set_title(dataset, fontsize=10)
        axis.set_xlabel("iteration")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
        axis.ticklabel_format(axis="y", useOffset=False)
        axis.legend(fontsize=8)
    figure.savefig(path, dpi=110)
    return path


def sample_note(result: stats.Aggregates) -> str:
    """What an aggregate plot rests on: runs per algorithm, datasets, bootstrap samples."""
    runs = ", ".join(f"{a} {result.runs[a]}" for a in result.algorithms)
    return (
        f"runs: {runs} ({len(result.datasets)} dataset(s) x seeds); {result.reps} stratified bootstrap samples, "
        f"{100 * result.confidence:.0f}% percentile intervals"
    )


def _save_with_note(figure, result: stats.Aggregates, path: Path) -> Path:
    """The note under the plot, and in the PNG's Description field for tools that read it."""
    import textwrap

    note = sample_note(result)
    width = int(15 * figure.get_figwidth())  # characters of 7.5 pt text that fit across the figure
    figure.supxlabel("\n".join(textwrap.wrap(note, width)), fontsize=7.5, color="0.3")
    figure.savefig(path, dpi=110, metadata={"Description": note})
    return path


def plot_aggregates(result: stats.Aggregates, path: Path) -> Path:
    names = list(stats.STATISTICS)
    figure, axes = _figure(len(names), width=4.0, height=0.6 + 0.45 * len(result.algorithms))
    colors = _colors(result.algorithms)
    for axis, name in zip(axes, names):
        for row, a in enumerate(result.algorithms):
            interval = result.intervals[a][name]
            axis.barh(row, interval.high - interval.low, left=interval.low, height=0.6, color=colors[a], alpha=0.6)
            axis.plot([interval.point, interval.point], [row - 0.3, row + 0.3], color="black", linewidth=1.5)
        axis.set_yticks(range(len(result.algorithms)), result.algorithms)
        axis.invert_yaxis()
        axis.set_title(f"{name} ({100 * result.confidence:.0f}% CI)", fontsize=10)
        axis.set_xlabel("normalised score")
        axis.grid(axis="x", alpha=0.3)
    return _save_with_note(figure, result, path)


def plot_profiles(result: stats.Aggregates, path: Path) -> Path:
    figure, (axis,) = _figure(1, width=5.5, height=4.0)
    colors = _colors(result.algorithms)
    for a in result.algorithms:
        profile, low, high = result.profiles[a]
        axis.plot(result.taus, profile, color=colors[a], label=a)
        axis.fill_between(result.taus, low, high, color=colors[a], alpha=0.2, linewidth=0)
    axis.set_xlabel(r"normalised score $\tau$")
    axis.set_ylabel(r"fraction of runs with score $> \tau$")
    axis.set_title(f"performance profiles ({100 * result.confidence:.0f}% bands)", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _save_with_note(figure, result, path)


def plot_improvement(result: stats.Aggregates, path: Path) -> Path | None:
    others = [a for a in result.algorithms if a in result.improvement]
    if not others:
        return None
    figure, (axis,) = _figure(1, width=5.0, height=0.8 + 0.45 * len(others))
    for row, other in enumerate(others):
        interval = result.improvement[other]
        axis.barh(row, interval.high - interval.low, left=interval.low, height=0.6, color="tab:blue", alpha=0.5)
        axis.plot([interval.point, interval.point], [row - 0.3, row + 0.3], color="black", linewidth=1.5)
    axis.axvline(0.5, color="gray", linestyle="--", linewidth=1)
    axis.set_yticks(range(len(others)), others)
    axis.invert_yaxis()
    axis.set_xlim(0, 1)
    axis.set_xlabel(f"P({result.reference} > algorithm)")
    axis.set_title(f"probability of improvement ({100 * result.confidence:.0f}% CI)", fontsize=10)
    return _save_with_note(figure, result, path)


# ----------------------------------------------------------------------------- the whole report
@dataclass
class Report:
    table: ScoreTable
    aggregates: stats.Aggregates | None
    files: dict[str, Path]
    paired: PairedSection | None = None


def report_listing(report: Report) -> dict[str, Any]:
    """What ``report --json`` prints: the table's cells (and the average row), the paired
    comparisons and the files written; nothing that a terminal's width could cut."""
    import dataclasses

    table = report.table
    cells = []
    for row in [*table.datasets, "average"]:
        for a in table.algorithms:
            mean, std = table.row_value(row, a)
            runs, failed = (table.average[a][2], None) if row == "average" else (table.cells[(row, a)].n, table.cells[(row, a)].failed)
            cells.append({"dataset": row, "algorithm": a, "mean": mean, "std": std, "runs": runs, "failed": failed})
    paired = None
    if report.paired is not None:
        paired = [{**dataclasses.asdict(c), "verdict": paired_verdict(c, report.paired)} for c in report.paired.comparisons]
    return {
        "final_score_rule": table.rule,
        "algorithms": table.algorithms,
        "datasets": table.datasets,
        "average_over": table.averaged,
        "cells": cells,
        "paired": paired,
        "files": {name: str(path) for name, path in report.files.items()},
    }


def build_report(
    runs: list[RunResult],
    out: Path,
    algorithms: list[str] | None = None,
    datasets: list[str] | None = None,
    reps: int = stats.DEFAULT_REPS,
    seed: int = stats.DEFAULT_SEED,
    reference: str | None = None,
    command: list[str] | None = None,
    console=None,
    effect: float = stats.DEFAULT_EFFECT,
    paired_test: str = "t",
) -> Report:
    """Write ``results.md``, ``results.csv``, ``runs.csv``, ``paired.csv`` and the plots into ``out``;
    print the tables. ``algorithms``: the column order (default: ``reference`` first, the rest by
    name). ``reference``: the algorithm every other is compared with (default: the table's first
    column); ``effect``: the paired difference, in points, a comparison should be able to detect."""
    from rich.markup import escape

    from metaconstraint.runs import atomic_write_text
    from metaconstraint.terminal import print_whole

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = score_table(runs, algorithms or ([reference] if reference else None), datasets)
    if reference is not None and reference not in table.algorithms:
        raise ValueError(unknown_name("reference algorithm", reference, table.algorithms, why="it has no runs here"))
    reference = reference or (table.algorithms[0] if table.algorithms else None)
    scores = table.scores()
    aggregates = stats.aggregate(scores, reference, reps, seed) if any(any(v) for v in scores.values()) else None
    paired = None
    if reference is not None and len(table.algorithms) > 1:
        paired = PairedSection(stats.paired_comparisons(table.seed_scores(), reference, paired_test), paired_test, effect)

    files = {"markdown": out / RESULTS_MD, "csv": out / RESULTS_CSV, "runs": out / RUNS_CSV}
    if paired is not None:
        files["paired"] = out / PAIRED_CSV
    else:
        (out / PAIRED_CSV).unlink(missing_ok=True)
    plots = {
        "curves": plot_curves(table, runs, "score", "normalised score", out / PLOTS["curves"]),
        "scale": plot_curves(
            table, runs, "scale", "learned scale", out / PLOTS["scale"],
            algorithms={r.algorithm for r in runs if r.final_scale is not None},
            labels={r.algorithm: f"{r.algorithm}: {r.scale_name}" for r in runs if r.scale_name},
        ),
    }
    plots["finetune"] = plot_switch(runs, out / PLOTS["finetune"])
    if aggregates is not None:
        plots["aggregates"] = plot_aggregates(aggregates, out / PLOTS["aggregates"])
        plots["profiles"] = plot_profiles(aggregates, out / PLOTS["profiles"])
        plots["improvement"] = plot_improvement(aggregates, out / PLOTS["improvement"])
    for name, path in plots.items():
        if path is None:
            (out / PLOTS[name]).unlink(missing_ok=True)  # a stale plot from an earlier report would mislead
        else:
            files[name] = path

    atomic_write_text(files["markdown"], markdown_report(table, aggregates, files, out, command, paired, markdown_finetune(runs)))
    atomic_write_text(files["csv"], csv_table(table))
    atomic_write_text(files["runs"], runs_csv(runs))
    if paired is not None:
        atomic_write_text(files["paired"], paired_csv(paired))
    if console is not None:
        print_whole(console, rich_table(table))
        for line in failure_lines(table.failures):
            console.print(f"[red]failed[/] {escape(line)}", highlight=False, soft_wrap=True)
        if table.rule.startswith("mixed"):
            console.print("[yellow]note[/] runs use different final-score rules; pass --final-score-rule to use one.")
        if aggregates is not None:
            print_whole(console, rich_aggregates(aggregates))
        if paired is not None:
            print_whole(console, rich_paired(paired))
        console.print("wrote " + ", ".join(str(p) for p in files.values()), markup=False, highlight=False, soft_wrap=True)
    return Report(table, aggregates, files, paired)


def markdown_report(
    table: ScoreTable, aggregates, files: dict[str, Path], out: Path, command: list[str] | None, paired: PairedSection | None = None,
    finetune: str | None = None,
) -> str:
    """results.md; ``finetune``: the fine-tuning section (:func:`~metaconstraint.finetune_report.markdown_finetune`)."""
    steps = table.steps
    base_rule = table.rule.split(" ")[0]
    lines = [
        "# Results",
        "",
        f"Final D4RL-normalised score (x100), mean ± sample std (ddof=1) over seeds. Final score rule: "
        f"`{table.rule}`" + (f" ({RULE_TEXT[base_rule]})." if base_rule in RULE_TEXT else "."),
        "Average row: mean over datasets of the per-dataset means (over the datasets where every algorithm has "
        "runs); ± the std over seeds of each seed's average over those datasets. Best per row in bold; `n=` marks "
        "cells with fewer runs than the others.",
    ]
    if steps:
        lines.append(f"Iterations per run: {', '.join(f'{s:,}' for s in steps)}.")
    if command:
        lines.append(f"Command: `{shlex.join(command)}`")
    lines += [f"Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.", "", markdown_table(table)]
    if table.failures:
        lines += ["", "Failed runs:", ""]
        lines += [f"- {line}" for line in failure_lines(table.failures)]
    if aggregates is not None:
        lines += ["", markdown_aggregates(aggregates)]
    if paired is not None:
        lines += ["", markdown_paired(paired)]
    if finetune is not None:
        lines += ["", finetune]
    pictures = [(name, files[name]) for name in PLOTS if name in files]
    if pictures:
        lines += ["", "## Plots", ""]
        lines += [f"![{name}]({path.relative_to(out).as_posix()})" for name, path in pictures]
    return "\n".join(lines) + "\n"
