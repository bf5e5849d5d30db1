"""The ``metaconstraint`` command line (typer + rich)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(
    help="Offline RL with adaptive policy constraints learned by meta-gradients.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
datasets_app = typer.Typer(help="Offline datasets: list what is known and local.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")

console = Console()
errors = Console(stderr=True)

EXIT_USAGE = 2
EXIT_DIVERGED = 3


def fail(message: str, code: int = EXIT_USAGE) -> None:
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _progress_callback(progress: Progress, task, total: int):
    def update(iteration: int, score: float | None, alpha: float | None) -> None:
        fields = {}
        if score is not None:
            fields["score"] = f"{score:.1f}"
        if alpha is not None:
            fields["alpha"] = f"{alpha:.3f}"
        progress.update(task, completed=iteration, **fields)

    return update


def _train(values: dict, resume: bool) -> None:
    from metaconstraint.config import ConfigError, build_configs
    from metaconstraint.rl.data import DatasetError
    from metaconstraint.training import DeviceError, Trainer, TrainingDiverged

    try:
        run, algorithm_config = build_configs(values, source="config file and flags")
        with console.status(f"loading {run.dataset}"):
            trainer = Trainer(run, algorithm_config)
    except (ConfigError, DatasetError, DeviceError) as error:
        fail(str(error))
    progress = Progress(
        TextColumn(f"[bold]{run.algorithm}[/] {trainer.dataset_id}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,}"),
        TextColumn("[cyan]{task.fields[rate]}"),
        TextColumn("score [green]{task.fields[score]}"),
        TextColumn("alpha [magenta]{task.fields[alpha]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    with progress:
        task = progress.add_task("train", total=run.steps, score="-", alpha="-", rate="")
        base = _progress_callback(progress, task, run.steps)

        def update(iteration, score, alpha):
            base(iteration, score, alpha)
            speed = progress.tasks[0].speed
            if speed:
                progress.update(task, rate=f"{speed:,.0f} it/s")

        trainer.progress = update
        try:
            summaries = trainer.fit(resume=resume)
        except TrainingDiverged as error:
            progress.stop()
            fail(str(error), EXIT_DIVERGED)
    _print_summaries(summaries, trainer.directories)


def _print_summaries(summaries: list[dict], directories: list[Path]) -> None:
    table = Table(title="results")
    for column in ("seed", "final score", "alpha", "updates/s", "run folder"):
        table.add_column(column)
    for summary, directory in zip(summaries, directories):
        alpha = summary.get("final_alpha")
        table.add_row(
            str(summary["seed"]),
            f"{summary['final_score']:.1f}",
            "-" if alpha is None else f"{alpha:.3f}",
            f"{summary['updates_per_second']:.0f}",
            str(directory),
        )
    console.print(table)


@app.command()
def run(
    algorithm: str = typer.Argument(..., help="Algorithm: aspc, td3bc, ..."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="D4RL short name or Minari id."),
    steps: Optional[int] = typer.Option(None, help="Training iterations (default 1,000,000)."),
    seed: Optional[int] = typer.Option(None, help="Seed (first seed with --seeds)."),
    seeds: Optional[int] = typer.Option(None, help="Number of seeds trained together (seed..seed+N-1)."),
    eval_every: Optional[int] = typer.Option(None, help="Iterations between evaluations (default 5000)."),
    eval_episodes: Optional[int] = typer.Option(None, help="Episodes per evaluation (default 10)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:N."),
    out: Optional[Path] = typer.Option(None, help="Output root (default runs/)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML or YAML config; flags override it."),
    outer_loss: Optional[list[str]] = typer.Option(
        None, "--outer-loss", help="Outer loss (repeatable): l1, l2, l2-ema, l3 or module:function, optionally =WEIGHT."
    ),
    alpha_lr_decay_steps: Optional[int] = typer.Option(None, help="ASPC: alpha lr decay horizon (default: --steps)."),
    resume: Optional[Path] = typer.Option(None, help="Continue the run in this run folder."),
) -> None:
    """Train ALGORITHM on a dataset and write a run folder per seed."""
    from metaconstraint.config import ConfigError, load_config_file

    values: dict = {}
    try:
        if resume is not None:
            if not (resume / "config.toml").exists():
                fail(f"--resume {resume}: not a run folder (no config.toml there).")
            values.update(load_config_file(resume / "config.toml"))
            values.pop("seeds", None)
        if config is not None:
            values.update(load_config_file(config))
    except ConfigError as error:
        fail(str(error))
    values["algorithm"] = algorithm
    flags = {
        "dataset": dataset,
        "steps": steps,
        "seed": seed,
        "seeds": seeds,
        "eval_every": eval_every,
        "eval_episodes": eval_episodes,
        "device": device,
        "out": out,
        "outer_losses": outer_loss or None,
        "alpha_lr_decay_steps": alpha_lr_decay_steps,
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    if "dataset" not in values:
        fail("no dataset given: use --dataset NAME (e.g. pen-human, or a Minari id such as D4RL/door/human-v2).")
    _train(values, resume=resume is not None)


@datasets_app.command("list")
def datasets_list() -> None:
    """Known D4RL short names, their Minari ids, and which are local."""
    from metaconstraint.rl.data import dataset_roots, known_datasets

    table = Table(title="datasets")
    table.add_column("short name")
    table.add_column("Minari id")
    table.add_column("local")
    for short, dataset_id, local in known_datasets():
        table.add_row(short or "", dataset_id, "[green]yes[/]" if local else "no")
    console.print(table)
    console.print("searched: " + ", ".join(str(p) for p in dataset_roots()))


from metaconstraint import grid_cli  # noqa: E402  (its commands import this module's console lazily)

app.command("compare")(grid_cli.compare)
app.command("report")(grid_cli.report)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
