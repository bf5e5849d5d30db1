"""The ``compare`` and ``report`` commands (registered on the typer app in :mod:`metaconstraint.cli`).

Heavy imports (torch, matplotlib) happen inside the commands, so ``metaconstraint --help`` stays fast.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from metaconstraint.trackers import Tracker, WandbMode, tracker_values

EXIT_FAILED_RUNS = 1


class ScoreRule(str, Enum):
    last = "last"
    mean_last_k = "mean_last_k"


def _dataset_ids(names: list[str]) -> list[str]:
    from metaconstraint.grid import dataset_id

    return [dataset_id(name) for name in names]


def compare(
    algorithms: list[str] = typer.Argument(..., help="Algorithms to compare: aspc td3bc ..."),
    datasets: str = typer.Option(..., "--datasets", help="Comma-separated D4RL short names or Minari ids."),
    seeds: int = typer.Option(3, min=1, help="Seeds per algorithm and dataset: seed..seed+N-1, each its own run."),
    steps: Optional[int] = typer.Option(None, min=1, help="Training iterations per run (default 1,000,000)."),
    seed: int = typer.Option(0, min=0, help="First seed."),
    workers: Optional[int] = typer.Option(None, min=1, help="Worker processes (default: one per core)."),
    out: Path = typer.Option(Path("runs"), help="Grid folder: run folders, results.md/csv and plots go here."),
    eval_every: Optional[int] = typer.Option(None, min=1, help="Iterations between evaluations (default 5000)."),
    eval_episodes: Optional[int] = typer.Option(None, min=1, help="Episodes per evaluation (default 10)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:N."),
    final_score_rule: ScoreRule = typer.Option(ScoreRule.last, help="last: the final evaluation; mean_last_k: mean of the last k."),
    final_score_k: int = typer.Option(5, min=1, help="k of mean_last_k."),
    outer_loss: Optional[list[str]] = typer.Option(
        None, "--outer-loss", help="ASPC outer loss (repeatable): l1, l2, l2-ema, l3 or module:function[=WEIGHT]."
    ),
    alpha_lr_decay_steps: Optional[int] = typer.Option(None, min=1, help="ASPC: alpha lr decay horizon (default: --steps)."),
    tag: Optional[str] = typer.Option(
        None, help="Run folders are seed<K>-<TAG>: tells apart runs whose config differs (reports label them 'algorithm (TAG)')."
    ),
    bootstrap_samples: int = typer.Option(2000, min=1, help="Stratified bootstrap samples for the aggregate intervals."),
    bootstrap_seed: int = typer.Option(0, min=0, help="Seed of the bootstrap resampler."),
    logger: Optional[list[Tracker]] = typer.Option(
        None, "--logger", help="Also log every run to a tracker (repeatable): tensorboard, wandb (offline by default), mlflow."
    ),
    wandb_mode: Optional[WandbMode] = typer.Option(None, help="W&B: offline (default) or online."),
    wandb_project: Optional[str] = typer.Option(None, help="W&B project (default metaconstraint)."),
    mlflow_tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: file store RUN_FOLDER/mlruns)."),
) -> None:
    """Run ALGORITHMS x datasets x seeds (finished runs are skipped) and report the results."""
    from metaconstraint.cli import console, fail
    from metaconstraint.config import ConfigError, algorithm_class
    from metaconstraint.grid import expand_grid, run_grid, write_grid_record
    from metaconstraint.report import RunResult, build_report, describe_rule, load_run
    from metaconstraint.trackers import check_available

    names = [d.strip() for d in datasets.split(",") if d.strip()]
    if not names:
        fail("--datasets: give at least one dataset (comma-separated).")
    algorithms = list(dict.fromkeys(algorithms))
    run_options = {
        "steps": steps,
        "eval_every": eval_every,
        "eval_episodes": eval_episodes,
        "device": device,
        "out": str(out),
        "final_score_rule": final_score_rule.value,
        "final_score_k": final_score_k,
        "tag": tag,
        **tracker_values(logger, wandb_mode, wandb_project, mlflow_tracking_uri),
    }
    algorithm_options = {"outer_losses": outer_loss or None, "alpha_lr_decay_steps": alpha_lr_decay_steps}
    try:
        check_available(run_options.get("loggers"))
        for name in algorithms:
            algorithm_class(name)
        cells = expand_grid(
            algorithms,
            names,
            seeds,
            seed,
            {k: v for k, v in run_options.items() if v is not None},
            {k: v for k, v in algorithm_options.items() if v is not None},
        )
    except ConfigError as error:
        fail(str(error))

    command = ["metaconstraint", "compare", *algorithms, "--datasets", ",".join(names), "--seeds", str(seeds), "--seed", str(seed)]
    for flag, value in [
        ("--steps", steps), ("--eval-every", eval_every), ("--eval-episodes", eval_episodes), ("--device", device),
        ("--alpha-lr-decay-steps", alpha_lr_decay_steps), ("--tag", tag), ("--workers", workers), ("--out", out),
    ]:
        if value is not None:
            command += [flag, str(value)]
    command += [f"--outer-loss={loss}" for loss in outer_loss or []]
    command += [f"--logger={t.value}" for t in logger or []]
    for flag, value in [("--wandb-mode", wandb_mode and wandb_mode.value), ("--wandb-project", wandb_project),
                        ("--mlflow-tracking-uri", mlflow_tracking_uri)]:
        if value is not None:
            command += [flag, value]
    if final_score_rule is ScoreRule.mean_last_k:
        command += ["--final-score-rule", "mean_last_k", "--final-score-k", str(final_score_k)]

    outcomes = run_grid(cells, workers, console)
    spec = {
        "command": command,
        "algorithms": algorithms,
        "datasets": names,
        "seeds": [seed + k for k in range(seeds)],
        "final_score_rule": describe_rule(final_score_rule.value, final_score_k),
    }
    write_grid_record(out, outcomes, spec)
    results = []
    for outcome in outcomes:
        if outcome.status in ("done", "skipped") and outcome.directory is not None:
            results.append(load_run(outcome.directory, final_score_rule.value, final_score_k))
        else:
            record = outcome.record()
            label = f"{record['algorithm']} ({tag})" if tag else record["algorithm"]
            results.append(RunResult(label, record["dataset"], record["seed"], "failed", error=outcome.error))
    build_report(
        results, out, algorithms, _dataset_ids(names), bootstrap_samples, bootstrap_seed, command=command, console=console
    )
    failed = sum(o.status == "failed" for o in outcomes)
    if failed:
        console.print(f"[red]{failed} of {len(outcomes)} run(s) failed[/] (see above and {out / 'grid.json'}).")
        raise typer.Exit(EXIT_FAILED_RUNS)


def report(
    folder: Path = typer.Argument(..., help="A run folder or a grid folder (every summary.json below it counts)."),
    final_score_rule: Optional[ScoreRule] = typer.Option(
        None, help="Recompute every final score with this rule (default: each summary's own)."
    ),
    final_score_k: int = typer.Option(5, min=1, help="k of mean_last_k."),
    out: Optional[Path] = typer.Option(None, help="Where to write results.md/csv and plots (default: FOLDER)."),
    reference: str = typer.Option("aspc", help="The algorithm whose probability of improvement is reported."),
    bootstrap_samples: int = typer.Option(2000, min=1, help="Stratified bootstrap samples for the aggregate intervals."),
    bootstrap_seed: int = typer.Option(0, min=0, help="Seed of the bootstrap resampler."),
) -> None:
    """Rebuild the results table, aggregates and plots from saved runs."""
    from metaconstraint.cli import console, fail
    from metaconstraint.grid import GRID_FILE
    from metaconstraint.report import build_report, collect_runs
    from metaconstraint.runs import read_json

    if not folder.is_dir():
        fail(f"{folder}: no such folder.")
    rule = final_score_rule.value if final_score_rule is not None else None
    runs = collect_runs(folder, rule, final_score_k)
    if not runs:
        fail(f"{folder}: no runs found (no summary.json below it).")
    grid = read_json(folder / GRID_FILE) if (folder / GRID_FILE).exists() else {}
    datasets = _dataset_ids(grid["datasets"]) if grid.get("datasets") else None
    build_report(
        runs, out or folder, grid.get("algorithms"), datasets, bootstrap_samples, bootstrap_seed, reference,
        command=grid.get("command"), console=console,
    )
