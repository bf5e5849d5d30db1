"""The tables of docs/results.md, printed as Markdown from the run folders.

    python docs/results/tables.py docs/results/runs > /tmp/tables.md

Score tables and aggregates use :mod:`metaconstraint.report` and :mod:`metaconstraint.stats` (the
same numbers as ``metaconstraint report``, in this page's column order); the rest (per-seed scores,
paired differences, alpha, wall time) are what the page adds to the report.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from metaconstraint import stats
from metaconstraint.report import RunResult, ScoreTable, collect_runs, markdown_aggregates, markdown_table, score_table
from metaconstraint.runs import read_json, read_metrics, scale_history

ORDER = ["aspc", "td3bc", "bc", "iql", "wpc", "a2pr", "rebrac", "aspc (decay1M)"]
REFERENCE = "aspc"
SHORT = {"dapg/pen/expert-v0": "expert", "dapg/pen/medium-v0": "medium", "dapg/pen/scarce-v0": "scarce"}


def scores_section(table: ScoreTable) -> str:
    seeds = " | ".join(str(max(table.cells[(d, a)].n for d in table.datasets)) for a in table.algorithms)
    return markdown_table(table) + f"\n| seeds | {seeds} |"


def aggregates_section(table: ScoreTable) -> str:
    """The report's bootstrap aggregates (IQM, mean, P(aspc > X)), in this page's order."""
    result = stats.aggregate(table.scores(), REFERENCE)
    return markdown_aggregates(result).split("\n", 2)[2].strip()  # without the report's heading


def by_key(runs: list[RunResult]) -> dict[tuple[str, str, int], RunResult]:
    return {(r.algorithm, r.dataset, r.seed): r for r in runs if r.status == "done"}


def per_seed_section(runs: list[RunResult]) -> str:
    """Rows: methods; columns: each pen dataset's seeds."""
    found = by_key(runs)
    seeds = sorted({s for (_, _, s) in found})
    header = [f"{SHORT[d]} s{s}" for d in SHORT for s in seeds]
    lines = ["| method | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header)]
    for algorithm in ORDER:
        cells = [found.get((algorithm, d, s)) for d in SHORT for s in seeds]
        lines.append(f"| {algorithm} | " + " | ".join(f"{r.final_score:.1f}" if r else "" for r in cells) + " |")
    return "\n".join(lines)


def paired_section(runs: list[RunResult]) -> str:
    """ASPC minus each method, seed by seed on the pen datasets (both play the same goals)."""
    found = by_key(runs)
    seeds = sorted({s for (_, _, s) in found})
    lines = [
        f"| {REFERENCE} minus | pairs | mean difference | {REFERENCE} ahead in | per dataset (seed order) |",
        "|---|---:|---:|---:|---|",
    ]
    for other in ORDER:
        if other == REFERENCE:
            continue
        differences, parts = [], []
        for dataset, short in SHORT.items():
            row = []
            for seed in seeds:
                mine, theirs = found.get((REFERENCE, dataset, seed)), found.get((other, dataset, seed))
                if mine and theirs:
                    differences.append(mine.final_score - theirs.final_score)
                    row.append(f"{differences[-1]:+.0f}")
            if row:
                parts.append(f"{short} {', '.join(row)}")
        if differences:
            ahead = sum(d > 0 for d in differences)
            lines.append(
                f"| {other} | {len(differences)} | {np.mean(differences):+.1f} | {ahead} of {len(differences)} | "
                + "; ".join(parts) + " |"
            )
    return "\n".join(lines)


def alpha_section(runs: list[RunResult]) -> str:
    """Final alpha per seed and the highest alpha any seed logged, for each adaptive variant."""
    found = by_key(runs)
    variants = [a for a in ORDER if any(r.final_scale is not None for (x, _, _), r in found.items() if x == a)]
    datasets = sorted({d for (_, d, _) in found})
    seeds = sorted({s for (_, _, s) in found})
    header = " | ".join(f"{v}: alpha at the end (seeds) | {v}: highest" for v in variants)
    lines = [f"| dataset | {header} |", "|---|" + "---|---:|" * len(variants)]
    for dataset in datasets:
        cells = []
        for variant in variants:
            members = [found[(variant, dataset, s)] for s in seeds if (variant, dataset, s) in found]
            finals = ", ".join(f"{r.final_scale:.2f}" for r in members)
            peaks = [max(v for _, v in scale_history(read_metrics(r.directory, r.scale_name))) for r in members]
            cells += [finals, f"{max(peaks):.2f}" if peaks else ""]
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def wall_time_section(runs: list[RunResult]) -> str:
    """Per method: runs, the range of wall seconds and of training updates per second."""
    grouped: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        if r.status == "done":
            grouped[r.algorithm].append(read_json(r.directory / "summary.json"))
    lines = ["| method | runs | wall time per run | updates/s | run-hours |", "|---|---:|---|---|---:|"]
    for algorithm in ORDER:
        summaries = grouped.get(algorithm, [])
        if not summaries:
            continue
        wall = [s["wall_seconds"] for s in summaries]
        speed = [s["updates_per_second"] for s in summaries]
        lines.append(
            f"| {algorithm} | {len(summaries)} | {min(wall):,.0f}-{max(wall):,.0f} s | "
            f"{min(speed):.0f}-{max(speed):.0f} | {sum(wall) / 3600:.1f} |"
        )
    total = sum(s["wall_seconds"] for group in grouped.values() for s in group) / 3600
    return "\n".join(lines) + f"\n\nAll {sum(map(len, grouped.values()))} runs: {total:.1f} run-hours."


def main(folder: str) -> None:
    last = collect_runs(Path(folder))
    table = score_table(last, ORDER)
    last_two = score_table(collect_runs(Path(folder), rule="mean_last_k", k=2), ORDER)
    sections = [
        ("Final score (rule `last`)", scores_section(table)),
        ("Mean of the last two evaluations", scores_section(last_two)),
        ("Aggregates", aggregates_section(table)),
        ("Per seed on the pen datasets (final score)", per_seed_section(last)),
        ("Paired differences", paired_section(last)),
        ("Alpha", alpha_section(last)),
        ("Wall time", wall_time_section(last)),
    ]
    print("\n\n".join(f"### {title}\n\n{body}" for title, body in sections))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/results/runs")
