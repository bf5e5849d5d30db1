"""The ``metaconstraint`` command line (typer + rich)."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from metaconstraint.terminal import print_whole
from metaconstraint.trackers import Tracker, WandbMode, tracker_values




class GemmKernel(str, Enum):
    """``--gemm`` (metaconstraint.engine.gemm)."""

    default = "default"
    auto = "auto"
    onednn = "onednn"


app = typer.Typer(
    help="Offline RL with adaptive policy constraints learned by meta-gradients.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
datasets_app = typer.Typer(help="Offline datasets: list, info, download, collect.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")

console = Console()
errors = Console(stderr=True)

EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_IO = 4  # a run folder cannot be written (full disk, permissions)
EXIT_INTERRUPTED = 130  # 128 + SIGINT; SIGTERM exits 143


def fail(message: str, code: int = EXIT_USAGE) -> None:
    from rich.markup import escape

    # soft_wrap: the terminal wraps the message, rich inserts no newlines (paths and commands stay whole)
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _progress_callback(progress: Progress, task):
    """The trainer's progress as the bar's fields; the learned scale under its own name (alpha, beta)."""

    def update(iteration: int, score: float | None, scale: tuple[str, float] | None) -> None:
        fields = {}
        if score is not None:
            fields["score"] = f"{score:.1f}"
        if scale is not None:
            fields["scale"] = f"{scale[0]} [magenta]{scale[1]:.3f}[/]"
        progress.update(task, completed=iteration, **fields)

    return update


def _train(
    values: dict, resume: bool, dry_run: bool = False, member_sweep: dict | None = None, members: list | None = None,
    as_json: bool = False,
) -> None:
    try:
        _train_or_check(values, resume, dry_run, member_sweep, members, as_json)
    except KeyboardInterrupt:
        fail("interrupted; no new checkpoint was written (an earlier one, if any, is intact).", EXIT_INTERRUPTED)


def _print_dry_run(report: dict, as_json: bool = False) -> None:
    from metaconstraint.config import to_toml

    info = report["info"]
    if as_json:
        typer.echo(json.dumps({"dataset_id": info.dataset_id, "run_folders": [str(d) for d in report["directories"]],
                               "config": report["config"]}, indent=2))
        return
    console.print(
        f"dry run: the configuration, the dataset {info.dataset_id} ({info.observation_dim}-d observations, "
        f"{info.action_dim}-d actions, {info.total_steps:,} transitions, evaluated in {info.env_id}) and the "
        f"output folder are valid; nothing was written.",
        markup=False,
        highlight=False,
    )
    for directory in report["directories"]:
        console.print(f"run folder: {directory}", markup=False, highlight=False, soft_wrap=True)
    typer.echo(to_toml(report["config"]))


def _announce_builtin(dataset: str) -> None:
    """Generate missing built-in sets with their progress bar (before any status display), and say
    in one line when the data are a local remake of a published set."""
    from metaconstraint.rl.builtin import remake_note
    from metaconstraint.rl.data import generate_missing_builtin, resolve_dataset_id

    generate_missing_builtin(dataset, console)
    note = remake_note(resolve_dataset_id(dataset))
    if note:
        console.print(f"note: {note}.", markup=False, highlight=False)


def _train_or_check(
    values: dict, resume: bool, dry_run: bool, member_sweep: dict | None = None, members: list | None = None,
    as_json: bool = False,
) -> None:
    """``member_sweep`` (field -> values) makes members values x seeds; ``members`` (a resumed
    run's) gives them as they were."""
    from metaconstraint.config import ConfigError, build_configs
    from metaconstraint.members import expand_members
    from metaconstraint.objectives import ObjectiveError
    from metaconstraint.outer_losses import OuterLossError
    from metaconstraint.rl.data import DatasetError
    from metaconstraint.runs import RunFolderError
    from metaconstraint.trackers import TrackerError
    from metaconstraint.monitor import TrainingDiverged
    from metaconstraint.problem import DeviceError
    from metaconstraint.runs import ResumeError, has_run
    from metaconstraint.finetune import FinetuneError, make_trainer
    from metaconstraint.training import TrainingInterrupted, validate_run

    def notify(message: str) -> None:
        errors.print(message, markup=False, highlight=False)

    try:
        run, algorithm_config = build_configs(values, source="config file and flags")
        if member_sweep:
            members = expand_members(member_sweep, [run.seed + i for i in range(run.seeds)], run.tag)
        if dry_run:
            _print_dry_run(validate_run(run, algorithm_config, members), as_json)
            return
        _announce_builtin(run.dataset)
        with console.status(f"loading {run.dataset}"):
            trainer = make_trainer(run, algorithm_config, notify=notify, members=members)
    except (ConfigError, DatasetError, DeviceError, ResumeError, ObjectiveError, FinetuneError) as error:
        fail(str(error))
    except RunFolderError as error:
        fail(str(error), EXIT_IO)
    existing = [d for d in trainer.directories if has_run(d)]
    if existing and not resume:
        fail(
            f"{existing[0]} already holds a run (checkpoints or summary.json). Continue it with "
            f"`metaconstraint resume {existing[0]}`, or choose another --out (or delete the folder)."
        )
    progress = Progress(
        TextColumn(f"[bold]{run.algorithm}[/] {trainer.dataset_id}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,}"),
        TextColumn("[cyan]{task.fields[rate]}"),
        TextColumn("score [green]{task.fields[score]}"),
        TextColumn("{task.fields[scale]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    with progress:
        task = progress.add_task("train", total=trainer.total_steps, score="-", scale="", rate="")
        base = _progress_callback(progress, task)

        def update(iteration, score, scale):
            base(iteration, score, scale)
            speed = progress.tasks[0].speed
            if speed:
                progress.update(task, rate=f"{speed:,.0f} it/s")

        trainer.progress = update
        try:
            summaries = trainer.fit(resume=resume)
        except TrainingDiverged as error:
            progress.stop()
            fail(str(error), EXIT_DIVERGED)
        except TrainingInterrupted as error:
            progress.stop()
            errors.print(
                f"{error} Continue the run with:\n  metaconstraint resume {error.directories[0]}",
                markup=False,
                highlight=False,
            )
            raise typer.Exit(128 + error.signal_number)
        except (ResumeError, OuterLossError) as error:  # OuterLossError: what an outer loss returned
            progress.stop()
            fail(str(error))
        except RunFolderError as error:
            progress.stop()
            fail(str(error), EXIT_IO)
        except TrackerError as error:
            progress.stop()
            fail(str(error), EXIT_IO)
    _print_summaries(summaries, trainer.directories)


def _print_summaries(summaries: list[dict], directories: list[Path]) -> None:
    table = Table(title="results")
    names = {s["scale_name"] for s in summaries if "scale_name" in s}
    scale_column = [f"final {names.pop()}"] if len(names) == 1 else []  # the learned scale by its own name
    offline_column = ["offline score"] if all("score" in s.get("offline", {}) for s in summaries) else []  # fine-tuning
    columns = ("member" if any("-" in d.name for d in directories) else "seed", *offline_column, "final score", *scale_column, "updates/s")
    for column in columns:
        table.add_column(column, no_wrap=column in ("member", "seed"))
    for summary, directory in zip(summaries, directories):
        scale = [f"{summary['final_scale']:.3f}"] if scale_column else []
        offline = [f"{summary['offline']['score']:.1f}"] if offline_column else []
        table.add_row(
            directory.name.removeprefix("seed") if "-" in directory.name else str(summary["seed"]),
            *offline,
            f"{summary['final_score']:.1f}",
            *scale,
            f"{summary['updates_per_second']:.0f}",
        )
    print_whole(console, table)
    for summary, directory in zip(summaries, directories):  # below the table: a column would cut long paths
        label = directory.name if "-" in directory.name else f"seed {summary['seed']}"
        console.print(f"{label}: {directory}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def run(
    algorithm: str = typer.Argument(..., help="Algorithm: aspc, td3bc, ..."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="D4RL short name or Minari id."),
    steps: Optional[int] = typer.Option(None, help="Training iterations (default 1,000,000)."),
    seed: Optional[int] = typer.Option(None, help="Seed (first seed with --seeds)."),
    seeds: Optional[int] = typer.Option(None, help="Number of seeds trained together (seed..seed+N-1)."),
    member_sweep: Optional[list[str]] = typer.Option(
        None, "--member-sweep", metavar="FIELD=V1,V2,...",
        help="Train these values of a scalar hyperparameter beside the seeds, as one computation (members = values x "
        "seeds, e.g. alpha=0.3,1,2.5,10); each member writes its run folder seed<K>-FIELD=V. Repeatable (every combination).",
    ),
    eval_every: Optional[int] = typer.Option(None, help="Iterations between evaluations (default 5000)."),
    eval_episodes: Optional[int] = typer.Option(None, help="Episodes per evaluation (default 10)."),
    final_eval_episodes: Optional[int] = typer.Option(
        None, help="Episodes of the final evaluation (default: --eval-episodes); every seed and method plays the same ones."
    ),
    reward_scale: Optional[float] = typer.Option(None, help="Multiply training rewards by this (scores are unaffected)."),
    reward_center: Optional[bool] = typer.Option(
        None, "--reward-center/--no-reward-center", help="Subtract the dataset's mean training reward (before scaling)."
    ),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:N."),
    threads: Optional[int] = typer.Option(
        None, help="torch threads (default: torch's, all cores or OMP_NUM_THREADS); 1 on a machine other processes share."
    ),
    compile: Optional[bool] = typer.Option(
        None, "--compile/--no-compile",
        help="torch.compile the update (TD3-backbone methods, any --seeds); default: on from 50,000 --steps.",
    ),
    gemm: Optional[GemmKernel] = typer.Option(
        None, help="CPU float32 matmul kernel: default (torch's BLAS), onednn, or auto (timed per product shape at start)."
    ),
    out: Optional[Path] = typer.Option(None, help="Output root (default runs/)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML or YAML config; flags override it."),
    outer_loss: Optional[list[str]] = typer.Option(
        None, "--outer-loss", help="Outer loss (repeatable): l1, l2, l2-ema, l2-rel, l3, l3-rel, gain-rel or module:function, optionally =WEIGHT."
    ),
    objective: Optional[str] = typer.Option(
        None, "--objective",
        help="Inner objective of the learned scale: td3bc, awr, wpc, a2pr, rebrac or module:factory. aspc with another "
        "backbone's objective runs on that backbone (aspc --objective rebrac: aspc-rebrac; docs/results/aspc-backbones.md).",
    ),
    scale_lr: Optional[float] = typer.Option(None, help="Learned scale (aspc, aspc-*): Adam learning rate of rho (default 0.002)."),
    scale_interval: Optional[int] = typer.Option(
        None, help="Learned scale: actor steps between its updates (default 10 on TD3 backbones, 20 on IQL)."
    ),
    scale_lr_decay_steps: Optional[str] = typer.Option(
        None, "--scale-lr-decay-steps", "--alpha-lr-decay-steps",
        help="Learned scale: iterations over which its lr decays (default 1000000, the released code's schedule; 'run': --steps).",
    ),
    scale_final_lr_fraction: Optional[float] = typer.Option(
        None, help="Learned scale: the fraction of its lr left at the end of the decay (default 0.01)."
    ),
    logger: Optional[list[Tracker]] = typer.Option(
        None, "--logger", help="Also log to a tracker (repeatable): tensorboard, wandb (offline by default), mlflow (file store in the run folder)."
    ),
    wandb_mode: Optional[WandbMode] = typer.Option(None, help="W&B: offline (default; `wandb sync` uploads later) or online."),
    wandb_project: Optional[str] = typer.Option(None, help="W&B project (default metaconstraint)."),
    mlflow_tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: file store RUN_FOLDER/mlruns)."),
    resume: Optional[Path] = typer.Option(
        None, help="Continue the run in this run folder (seeds trained together resume together); other flags must match it."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Check the config, the dataset and --out, print the resolved config; train and write nothing."
    ),
    as_json: bool = typer.Option(False, "--json", help="With --dry-run: print the run folders and the resolved config as JSON."),
) -> None:
    """Train ALGORITHM on a dataset and write a run folder per seed."""
    from metaconstraint.config import ConfigError, load_config_file

    if as_json and not dry_run:
        fail("--json lists what a dry run checked: give it with --dry-run.")

    values: dict = {}
    try:
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
        "final_eval_episodes": final_eval_episodes,
        "reward_scale": reward_scale,
        "reward_center": reward_center,
        "device": device,
        "threads": threads,
        "compile": compile,
        "gemm": gemm.value if gemm else None,
        "out": out,
        "outer_losses": outer_loss or None,
        "objective": objective,
        "scale_lr": scale_lr,
        "scale_interval": scale_interval,
        "scale_lr_decay_steps": scale_lr_decay_steps,
        "scale_final_lr_fraction": scale_final_lr_fraction,
        **tracker_values(logger, wandb_mode, wandb_project, mlflow_tracking_uri),
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    sweep = _member_sweep(member_sweep or [], values)
    if resume is not None:
        if sweep:
            fail("--resume continues a run with its own members: drop --member-sweep.")
        saved, members = _resume_values(resume, values)
        _train(saved, resume=True, dry_run=dry_run, members=members, as_json=as_json)
        return
    if "dataset" not in values:
        fail("no dataset given: use --dataset NAME (e.g. pen-human, or a Minari id such as D4RL/door/human-v2).")
    _train(values, resume=False, dry_run=dry_run, member_sweep=sweep, as_json=as_json)


def _member_sweep(specs: list[str], values: dict) -> dict:
    """``--member-sweep`` specs -> field -> values; a field also set by a flag or the config file is an error."""
    from metaconstraint.config import ConfigError
    from metaconstraint.members import parse_member_sweep

    try:
        sweep = parse_member_sweep(specs)
    except ConfigError as error:
        fail(str(error))
    both = sorted(set(sweep) & set(values))
    if both:
        fail(f"{', '.join(both)}: set by --member-sweep and by a flag or the config file; give it in one place.")
    return sweep


def _resume_values(run_dir: Path, given: dict) -> tuple[dict, list | None]:
    """The saved run's config and its members (``None``: seeds of one config); ``given`` (flags and
    config-file keys) must agree with the config, except ``device``. Exits when the run had finished."""
    from metaconstraint.config import ConfigError, build_configs, resolved_config
    from metaconstraint.rl.data import DatasetError, resolve_dataset_id
    from metaconstraint.checkpoint import RESUME_FREE_KEYS, plan_resume
    from metaconstraint.runs import ResumeError

    try:
        plan = plan_resume(run_dir)
        saved = plan.values
        algorithm = given.get("algorithm", saved["algorithm"])
        if algorithm != saved["algorithm"]:
            fail(
                f"{run_dir} holds a {saved['algorithm']} run, not {algorithm}: a run resumes with its own algorithm "
                f"(`metaconstraint resume {run_dir}`)."
            )
        if plan.finished:
            console.print(f"{run_dir} has finished ({plan.iteration:,} iterations); its results are in summary.json.", markup=False)
            raise typer.Exit(0)
        changes = {k: v for k, v in given.items() if k not in RESUME_FREE_KEYS}
        if "dataset" in changes:
            changes["dataset"] = resolve_dataset_id(str(changes["dataset"]))
        before = resolved_config(*build_configs(saved, source=f"{run_dir / 'config.toml'}"))
        after = resolved_config(*build_configs({**saved, **changes}, source="config file and flags"))
    except (ConfigError, DatasetError, ResumeError) as error:
        fail(str(error))
    differ = [f"{k} (saved {before.get(k)!r}, given {after.get(k)!r})" for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]
    if "out" in given and Path(given["out"]).resolve() != Path(saved["out"]).resolve():
        differ.append(f"out (the run is in {saved['out']}, given {given['out']})")
    if differ:
        fail(
            f"--resume continues {run_dir} exactly as it was configured, but these differ from its config.toml: "
            f"{'; '.join(differ)}. Drop them (or start a new run in another --out)."
        )
    where = "from iteration 0 (no checkpoint yet)" if plan.iteration is None else f"from iteration {plan.iteration:,}"
    together = f"{', '.join(d.name for d in plan.directories)} together (one vectorised run) " if len(plan.directories) > 1 else ""
    errors.print(f"resuming {together}{where}", markup=False, highlight=False)
    return {**saved, **{k: given[k] for k in RESUME_FREE_KEYS if k != "out" and k in given}}, plan.members


@app.command("resume")
def resume_command(
    run_dir: Path = typer.Argument(..., help="A run folder: OUT/<algorithm>/<dataset>/seed<K>[-<tag>]."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:N (default: the run's)."),
) -> None:
    """Continue an interrupted run in its own folder (short for `run ALGORITHM --resume RUN_DIR`)."""
    saved, members = _resume_values(run_dir, {} if device is None else {"device": device})
    _train(saved, resume=True, members=members)


@app.command("finetune")
def finetune_command(
    run_dirs: list[Path] = typer.Argument(
        ..., help="Finished offline run folders (OUT/<algorithm>/<dataset>/seed<K>[-<tag>]) of one config; their seeds train together."
    ),
    online_steps: int = typer.Option(..., "--online-steps", help="Environment steps per seed; one update follows each after the warm-up."),
    offline_fraction: Optional[float] = typer.Option(
        None, help="Share of each minibatch from the offline data, the rest online (default 0.5: RLPD's symmetric sampling)."
    ),
    warmup_steps: Optional[int] = typer.Option(None, help="Environment steps before the first update (default 1000, at most a tenth of --online-steps)."),
    exploration_noise: Optional[float] = typer.Option(
        None, help="Gaussian action noise, in units of max_action (default 0.1); Gaussian actors (iql) sample their policy."
    ),
    eval_every: Optional[int] = typer.Option(None, help="Online steps between evaluations (default: the offline run's)."),
    eval_episodes: Optional[int] = typer.Option(None, help="Episodes per evaluation (default: the offline run's)."),
    final_eval_episodes: Optional[int] = typer.Option(
        None, help="Episodes of the final evaluation and of step 0's (default: the offline run's)."
    ),
    checkpoint_every: Optional[int] = typer.Option(None, help="Online steps between checkpoints (default: every evaluation)."),
    keep_checkpoints: Optional[int] = typer.Option(None, help="Checkpoints kept per folder, the newest (default: the offline run's)."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default: the offline runs' own, so each fine-tuning folder sits beside its run)."),
    tag: Optional[str] = typer.Option(None, help="Folders are seed<K>-finetune+<TAG>: tells apart fine-tunings of one run."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:N (default: the offline run's)."),
    threads: Optional[int] = typer.Option(None, min=1, help="torch threads (use 1 beside other processes)."),
    logger: Optional[list[Tracker]] = typer.Option(
        None, "--logger", help="Also log to a tracker (repeatable): tensorboard, wandb (offline by default), mlflow (default: the offline run's)."
    ),
) -> None:
    """Fine-tune finished offline runs online, in their dataset's environment, with minibatches mixed from the
    offline data and the online buffer; a learned constraint scale keeps adapting."""
    from metaconstraint.config import ConfigError
    from metaconstraint.finetune import FinetuneError, finetune_values
    from metaconstraint.runs import ResumeError

    options = {
        "offline_fraction": offline_fraction, "warmup_steps": warmup_steps, "exploration_noise": exploration_noise,
        "eval_every": eval_every, "eval_episodes": eval_episodes, "final_eval_episodes": final_eval_episodes,
        "checkpoint_every": checkpoint_every, "keep_checkpoints": keep_checkpoints, "device": device, "threads": threads,
        **tracker_values(logger, None, None, None),
    }
    try:
        values, members = finetune_values(run_dirs, online_steps, out, tag, **options)
    except (ConfigError, FinetuneError, ResumeError) as error:
        fail(str(error))
    _train(values, resume=False, members=members)


@app.command("evaluate")
def evaluate_command(
    run_dir: Path = typer.Argument(..., help="A run folder: OUT/<algorithm>/<dataset>/seed<K>[-<tag>]."),
    episodes: Optional[int] = typer.Option(None, min=1, help="Episodes (default: the run's eval_episodes)."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Score the newest checkpoint of a run folder again, on the run's seeded evaluation episodes."""
    from metaconstraint.config import ConfigError
    from metaconstraint.rl.data import DatasetError
    from metaconstraint.checkpoint import evaluate_run
    from metaconstraint.problem import DeviceError
    from metaconstraint.runs import ResumeError

    try:
        with console.status(f"evaluating {run_dir}"):
            result = evaluate_run(run_dir, episodes, device)
    except (ConfigError, DatasetError, DeviceError, ResumeError) as error:
        fail(str(error))
    except KeyboardInterrupt:
        fail("interrupted.", EXIT_INTERRUPTED)
    if as_json:
        typer.echo(json.dumps(result))
        return
    console.print(
        f"{run_dir} at iteration {result['step']:,}: score {result['mean']:.1f} +- {result['std']:.1f} "
        f"(D4RL-normalised, {result['episodes']} episodes, seed {result['seed']})",
        markup=False,
        highlight=False,
    )


@app.command("export")
def export_command(
    run_dir: Path = typer.Argument(..., help="A finished run folder: OUT/<algorithm>/<dataset>/seed<K>[-<tag>]."),
    format: str = typer.Option("torchscript", "--format", help="torchscript (torch.jit.load), onnx (onnxruntime) or torch-export (torch.export.load, .pt2)."),
    out: Optional[Path] = typer.Option(None, "--out", help="The policy file (default RUN_DIR/export/policy.pt or .onnx)."),
    check: bool = typer.Option(True, "--check/--no-check", help="Load the file back and compare its actions with the toolkit's."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Write a finished run's policy as one standalone file (normalisation and action scaling inside) plus a JSON of
    its spaces and provenance."""
    from metaconstraint.config import ConfigError
    from metaconstraint.export import ExportError, export_policy
    from metaconstraint.rl.data import DatasetError
    from metaconstraint.problem import DeviceError
    from metaconstraint.runs import ResumeError

    try:
        with console.status(f"exporting {run_dir} to {format}"):
            result = export_policy(run_dir, format, out, check)  # type: ignore[arg-type]
    except (ConfigError, DatasetError, DeviceError, ResumeError, ExportError) as error:
        fail(str(error))
    except KeyboardInterrupt:
        fail("interrupted.", EXIT_INTERRUPTED)
    record = {
        "file": str(result.path), "sidecar": str(result.sidecar), "format": result.format, "action": result.action,
        "bytes": result.size_bytes, "export_seconds": result.export_seconds, "load_seconds": result.load_seconds,
        "max_abs_difference": result.max_abs_difference,
    }
    if as_json:
        typer.echo(json.dumps(record))
        return
    checked = (
        f"; loads in {result.load_seconds * 1000:.0f} ms, actions within {result.max_abs_difference:.1e} of the toolkit's"
        if result.max_abs_difference is not None else ""
    )
    console.print(f"{result.path} ({result.size_bytes / 1024:.0f} KiB, {result.action}){checked}", markup=False, highlight=False)
    console.print(f"{result.sidecar}: spaces and provenance", markup=False, highlight=False)


from metaconstraint import datasets_cli  # noqa: E402  (list, info, download, collect)

datasets_cli.register(datasets_app)

from metaconstraint import grid_cli  # noqa: E402  (its commands import this module's console lazily)

app.command("compare")(grid_cli.compare)
app.command("sweep")(grid_cli.sweep)
app.command("report")(grid_cli.report)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
