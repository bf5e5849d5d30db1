"""The fine-tuning part of a report: offline and fine-tuned scores side by side, and each learned
scale's trajectory through the switch from offline to online training (``finetune.png``).

A fine-tuning run's ``summary.json`` names its offline run (``offline.run``) and holds the offline
policy's score at online step 0 on the same episodes as its final evaluation (``offline.score``),
so the two scores of a seed form a pair. Curves put the offline run's iterations first and the
online steps after them, on one axis: ``x = iteration`` offline, ``x = offline steps + online step``
after the switch.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from metaconstraint.runs import read_metrics, scale_metric

SWITCH_PLOT = "finetune.png"


def finetuned(runs: list) -> list:
    """The finished fine-tuning runs among ``runs`` (:class:`~metaconstraint.report.RunResult`)."""
    return [r for r in runs if r.status == "done" and r.offline is not None and r.directory is not None]


def records_through_switch(run) -> list[tuple[int, dict[str, Any]]]:
    """``[(x, metrics record)]`` of the offline run up to the switch (where the online step 0, on the
    final-evaluation episodes, takes over), then of the online steps."""
    offline_dir = (run.directory / run.offline["run"]).resolve()
    offline_steps = int(run.offline["steps"])
    points = []
    if offline_dir.is_dir():
        points += [(int(r["step"]), r) for r in read_metrics(offline_dir, run.scale_name) if int(r["step"]) < offline_steps]
    return points + [(offline_steps + int(r["step"]), r) for r in read_metrics(run.directory, run.scale_name)]


def switch_curves(runs: list, key: str, records: dict | None = None) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """``(dataset, label) -> (x, median, min, max)`` over seeds of metric ``key`` (``"scale"``: the
    learned scale) through the switch; ``records``: :func:`records_through_switch` by run folder, if read already."""
    grouped: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in finetuned(runs):
        name = scale_metric(run.scale_name or "alpha") if key == "scale" else key
        points = records[run.directory] if records is not None else records_through_switch(run)
        for x, record in points:
            if record.get(name) is not None:
                grouped[(run.dataset, run.algorithm)][x].append(float(record[name]))
    curves = {}
    for cell, by_x in grouped.items():
        xs = np.array(sorted(by_x))
        values = [np.asarray(by_x[x]) for x in xs]
        curves[cell] = (xs, np.array([np.median(v) for v in values]), np.array([v.min() for v in values]), np.array([v.max() for v in values]))
    return curves


def plot_switch(runs: list, path: Path) -> Path | None:
    """Score (top) and learned scale (bottom, where one is learned) per dataset, median and range over
    seeds, with the switch to online training marked; ``None`` without fine-tuning runs."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    runs = finetuned(runs)
    if not runs:
        return None
    rows = [("score", "normalised score")]
    if any(r.scale_name for r in runs):
        rows.append(("scale", "learned scale"))
    datasets = sorted({r.dataset for r in runs})
    labels = sorted({r.algorithm for r in runs})
    colors = {label: colormaps["tab10"](i % 10) for i, label in enumerate(labels)}
    records = {run.directory: records_through_switch(run) for run in runs}  # each metrics file read once
    figure = Figure(figsize=(4.6 * len(datasets), 3.2 * len(rows)), layout="constrained")
    axes = figure.subplots(len(rows), len(datasets), squeeze=False)
    for row, (key, ylabel) in enumerate(rows):
        curves = switch_curves(runs, key, records)
        for column, dataset in enumerate(datasets):
            axis = axes[row, column]
            for label in labels:
                if (dataset, label) not in curves:
                    continue
                xs, median, low, high = curves[(dataset, label)]
                scale = next((r.scale_name for r in runs if r.algorithm == label and r.scale_name), None)
                name = f"{label}: {scale}" if key == "scale" and scale else label
                axis.plot(xs, median, color=colors[label], label=name, marker="o" if len(xs) < 15 else None, markersize=3)
                axis.fill_between(xs, low, high, color=colors[label], alpha=0.2, linewidth=0)
            for switch in sorted({int(r.offline["steps"]) for r in runs if r.dataset == dataset}):
                axis.axvline(switch, color="grey", linestyle="--", linewidth=1)
            axis.set_title(f"{dataset} (dashed: offline -> online)" if row == 0 else dataset, fontsize=9)
            axis.set_xlabel("offline iterations, then online steps")
            axis.set_ylabel(ylabel)
            axis.grid(alpha=0.3)
            if axis.has_data():
                axis.legend(fontsize=7)
    figure.savefig(path, dpi=110)
    return path


def finetune_rows(runs: list) -> list[dict[str, Any]]:
    """Per dataset and fine-tuned label: seeds, mean offline score (step 0), mean fine-tuned final
    score, and the mean and sample std of the per-seed differences (same episodes: paired)."""
    grouped: dict[tuple[str, str], list] = defaultdict(list)
    for run in finetuned(runs):
        if "score" in run.offline:
            grouped[(run.dataset, run.algorithm)].append(run)
    rows = []
    for (dataset, label), members in sorted(grouped.items()):
        before = np.array([r.offline["score"] for r in members])
        after = np.array([r.final_score for r in members])
        differences = after - before
        rows.append({
            "dataset": dataset, "algorithm": label, "seeds": len(members), "online_steps": members[0].steps,
            "offline": float(before.mean()), "finetuned": float(after.mean()), "difference": float(differences.mean()),
            "difference_std": float(differences.std(ddof=1)) if len(members) > 1 else None,
        })
    return rows


def markdown_finetune(runs: list) -> str | None:
    """The ``## Fine-tuning`` section of results.md, or ``None`` without fine-tuning runs."""
    rows = finetune_rows(runs)
    if not rows:
        return None
    lines = [
        "## Fine-tuning",
        "",
        "Offline: the offline policy at online step 0; fine-tuned: the final score. Both on the same episodes (the final "
        "evaluation's), so each seed's difference is paired; mean ± sample std over seeds.",
        "",
        "| dataset | run | seeds | online steps | offline | fine-tuned | difference |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        spread = f" ± {row['difference_std']:.1f}" if row["difference_std"] is not None else ""
        lines.append(
            f"| {row['dataset']} | {row['algorithm']} | {row['seeds']} | {row['online_steps']:,} | {row['offline']:.1f} | "
            f"{row['finetuned']:.1f} | {row['difference']:+.1f}{spread} |"
        )
    return "\n".join(lines)
