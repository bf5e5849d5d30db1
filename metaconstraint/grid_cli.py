"""The ``compare``, ``sweep`` and ``report`` commands (registered on the typer app in :mod:`metaconstraint.cli`).

Heavy imports (torch, matplotlib) happen inside the commands, so ``metaconstraint --help`` stays fast.
"""

from __future__ import annotations

import json
import signal
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from metaconstraint.trackers import Tracker, WandbMode, tracker_values

EXIT_FAILED_RUNS = 1


class PairedTest(str, Enum):
    t = "t"
    wilcoxon = "wilcoxon"


class ScoreRule(str, Enum):
    last = "last"
    mean_last_k = "mean_last_k"


class BackendName(str, Enum):
    local = "local"
    ray = "ray"


# The options every grid command takes to choose where its runs go.
BACKEND_OPTION = typer.Option(BackendName.local, "--backend", help="local: worker processes here; ray: Ray tasks.")
ADDRESS_OPTION = typer.Option(
    None, "--address", help="Ray: the cluster to join ('auto': the running one, or HOST:PORT); default: start one here on 127.0.0.1."
)
CPUS_OPTION = typer.Option(None, "--cpus-per-run", min=0.01, help="CPUs (torch threads) per run (ray default 1; local default cores // workers).")
GPUS_OPTION = typer.Option(0.0, "--gpus-per-run", min=0.0, help="Ray: GPUs per run (fractions share a GPU); use with --device cuda.")
RETRIES_OPTION = typer.Option(3, "--max-retries", min=0, help="Ray: retries of a run whose worker or node is lost (it resumes from its checkpoint).")
DASHBOARD_OPTION = typer.Option(False, "--dashboard/--no-dashboard", help="Ray: start the dashboard (on 127.0.0.1) with the cluster this command starts.")


def make_backend(backend: BackendName, workers, address, cpus_per_run, gpus_per_run, max_retries, dashboard):
    """The backend the options ask for; bad combinations are usage errors."""
    from metaconstraint.cli import fail
    from metaconstraint.grid import LocalBackend

    if backend is BackendName.local:
        extra = [flag for flag, value in (("--address", address), ("--gpus-per-run", gpus_per_run), ("--dashboard", dashboard)) if value]
        if extra:
            fail(f"{', '.join(extra)}: only with --backend ray (locally, choose a GPU with --device cuda:N).")
        if cpus_per_run is not None and cpus_per_run != int(cpus_per_run):
            fail("--cpus-per-run: the local backend takes a whole number of threads.")
        return LocalBackend(workers, None if cpus_per_run is None else int(cpus_per_run))
    from metaconstraint.ray_backend import RayBackend, RayBackendError

    try:
        return RayBackend(address, cpus_per_run or 1.0, gpus_per_run, workers, max_retries, dashboard)
    except RayBackendError as error:
        fail(str(error))


def backend_command(backend: BackendName, address, cpus_per_run, gpus_per_run) -> list[str]:
    """The backend flags as they appear in the recorded command."""
    command = [] if backend is BackendName.local else ["--backend", "ray"]
    for flag, value in (("--address", address), ("--cpus-per-run", cpus_per_run), ("--gpus-per-run", gpus_per_run or None)):
        if value is not None:
            command += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return command


def finetune_labels(labels: list[str]) -> list[str]:
    """The report labels of fine-tuned runs: ``aspc`` -> ``aspc (finetune)``, ``aspc (x)`` -> ``aspc (x+finetune)``."""
    from metaconstraint.finetune import FINETUNE_TAG

    return [f"{label[:-1]}+{FINETUNE_TAG})" if label.endswith(")") else f"{label} ({FINETUNE_TAG})" for label in labels]


def run_and_report(cells, backend, out: Path, spec: dict, labels, dataset_names, rule: ScoreRule, k: int,
                   bootstrap_samples: int, bootstrap_seed: int, pack: bool = False, max_members: int | None = None,
                   finetune: int | None = None) -> None:
    """Run a grid's cells on ``backend``, record them in ``grid.json`` and write the report.
    ``finetune``: then fine-tune every finished run for that many online steps (one vectorised job per
    algorithm and dataset), reported beside it as ``algorithm (finetune)``."""
    from metaconstraint.cli import EXIT_INTERRUPTED, console, fail
    from metaconstraint.finetune import FinetuneError
    from metaconstraint.grid import GridInterrupted, finetune_cells, run_grid, write_grid_record
    from metaconstraint.ray_backend import RayBackendError
    from metaconstraint.report import RunResult, build_report, load_run
    from metaconstraint.runs import ResumeError

    try:
        outcomes = run_grid(cells, console=console, backend=backend, pack=pack, max_members=max_members)
        if finetune:
            finished = [o.directory for o in outcomes if o.status in ("done", "skipped") and o.directory is not None]
            console.print(f"fine-tuning {len(finished)} run(s) for {finetune:,} online steps each")
            outcomes += run_grid(finetune_cells(finished, finetune, out), console=console, backend=backend, pack=True)
            labels = [*labels, *finetune_labels(labels)]
    except (FinetuneError, ResumeError) as error:
        fail(str(error))
    except GridInterrupted as stopped:
        write_grid_record(out, stopped.outcomes, spec)
        unfinished = sum(o.status == "interrupted" for o in stopped.outcomes)
        console.print(
            f"[yellow]stopped[/] ({signal.Signals(stopped.signal_number).name}): {unfinished} run(s) unfinished, each "
            "with its newest checkpoint. Rerun the same command to resume.",
            highlight=False,
        )
        raise typer.Exit(128 + stopped.signal_number)
    except RayBackendError as error:
        fail(str(error))
    except KeyboardInterrupt:  # before the runs started (Ray still starting) or a second Ctrl-C
        fail("interrupted; every run keeps its newest checkpoint. Rerun the same command to resume.", EXIT_INTERRUPTED)
    write_grid_record(out, outcomes, spec)
    results = []
    for outcome in outcomes:
        if outcome.status in ("done", "skipped") and outcome.directory is not None:
            results.append(load_run(outcome.directory, rule.value, k))
        else:
            algorithm, tag = outcome.values["algorithm"], outcome.values.get("tag")
            label = f"{algorithm} ({tag})" if tag else algorithm
            results.append(RunResult(label, outcome.dataset_id, outcome.values["seed"], "failed", error=outcome.error))
    build_report(
        results, out, labels, _dataset_ids(dataset_names), bootstrap_samples, bootstrap_seed,
        command=spec["command"], console=console,
    )
    failed = sum(o.status == "failed" for o in outcomes)
    if failed:
        console.print(f"[red]{failed} of {len(outcomes)} run(s) failed[/] (see above and {out / 'grid.json'}).", soft_wrap=True)
        raise typer.Exit(EXIT_FAILED_RUNS)


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
    final_eval_episodes: Optional[int] = typer.Option(
        None, min=1, help="Episodes of the final evaluation (default: --eval-episodes); the same for every run."
    ),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:N."),
    final_score_rule: ScoreRule = typer.Option(ScoreRule.last, help="last: the final evaluation; mean_last_k: mean of the last k."),
    final_score_k: int = typer.Option(5, min=1, help="k of mean_last_k."),
    outer_loss: Optional[list[str]] = typer.Option(
        None, "--outer-loss", help="ASPC outer loss (repeatable): l1, l2, l2-ema, l2-rel, l3, l3-rel or module:function[=WEIGHT]."
    ),
    scale_lr_decay_steps: Optional[str] = typer.Option(
        None, "--scale-lr-decay-steps", "--alpha-lr-decay-steps",
        help="Learned scales (aspc, aspc-iql, aspc-*): iterations over which the scale's lr decays to 1% (default 1000000, "
        "the released code's schedule; 'run': --steps).",
    ),
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
    finetune: Optional[int] = typer.Option(
        None, "--finetune", min=1, metavar="N",
        help="Then fine-tune every run online for N environment steps (`metaconstraint finetune` defaults) and report "
        "both: 'algorithm (finetune)' beside 'algorithm', with the learned scale through the switch (finetune.png).",
    ),
    backend: BackendName = BACKEND_OPTION,
    address: Optional[str] = ADDRESS_OPTION,
    cpus_per_run: Optional[float] = CPUS_OPTION,
    gpus_per_run: float = GPUS_OPTION,
    max_retries: int = RETRIES_OPTION,
    dashboard: bool = DASHBOARD_OPTION,
) -> None:
    """Run ALGORITHMS x datasets x seeds (finished runs are skipped) and report the results."""
    from metaconstraint.cli import fail
    from metaconstraint.config import ConfigError, algorithm_class
    from metaconstraint.grid import expand_grid
    from metaconstraint.report import describe_rule
    from metaconstraint.trackers import check_available

    names = [d.strip() for d in datasets.split(",") if d.strip()]
    if not names:
        fail("--datasets: give at least one dataset (comma-separated).")
    algorithms = list(dict.fromkeys(algorithms))
    run_options = {
        "steps": steps,
        "eval_every": eval_every,
        "eval_episodes": eval_episodes,
        "final_eval_episodes": final_eval_episodes,
        "device": device,
        "out": str(out),
        "final_score_rule": final_score_rule.value,
        "final_score_k": final_score_k,
        "tag": tag,
        **tracker_values(logger, wandb_mode, wandb_project, mlflow_tracking_uri),
    }
    algorithm_options = {"outer_losses": outer_loss or None, "scale_lr_decay_steps": scale_lr_decay_steps}
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
        ("--steps", steps), ("--eval-every", eval_every), ("--eval-episodes", eval_episodes),
        ("--final-eval-episodes", final_eval_episodes), ("--device", device),
        ("--scale-lr-decay-steps", scale_lr_decay_steps), ("--tag", tag), ("--workers", workers), ("--out", out),
        ("--finetune", finetune),
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
    command += backend_command(backend, address, cpus_per_run, gpus_per_run)

    runner = make_backend(backend, workers, address, cpus_per_run, gpus_per_run, max_retries, dashboard)
    spec = {
        "command": command,
        "algorithms": algorithms,
        "datasets": names,
        "seeds": [seed + k for k in range(seeds)],
        "final_score_rule": describe_rule(final_score_rule.value, final_score_k),
    }
    labels = [f"{name} ({tag})" for name in algorithms] if tag else algorithms
    run_and_report(cells, runner, out, spec, labels, names, final_score_rule, final_score_k, bootstrap_samples, bootstrap_seed,
                   finetune=finetune)


def sweep(
    spec_file: Path = typer.Argument(..., metavar="SPEC", help="A TOML or YAML sweep: algorithms, datasets, seeds, swept config fields."),
    out: Path = typer.Option(Path("runs"), help="Grid folder: run folders, results.md/csv and plots go here."),
    workers: Optional[int] = typer.Option(None, min=1, help="Local worker processes (default: one per core)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate the spec and list the settings and runs; train nothing."),
    as_json: bool = typer.Option(False, "--json", help="With --dry-run: print the settings and runs as JSON."),
    final_score_rule: ScoreRule = typer.Option(ScoreRule.last, help="last: the final evaluation; mean_last_k: mean of the last k."),
    final_score_k: int = typer.Option(5, min=1, help="k of mean_last_k."),
    bootstrap_samples: int = typer.Option(2000, min=1, help="Stratified bootstrap samples for the aggregate intervals."),
    bootstrap_seed: int = typer.Option(0, min=0, help="Seed of the bootstrap resampler."),
    backend: BackendName = BACKEND_OPTION,
    address: Optional[str] = ADDRESS_OPTION,
    cpus_per_run: Optional[float] = CPUS_OPTION,
    gpus_per_run: float = GPUS_OPTION,
    max_retries: int = RETRIES_OPTION,
    dashboard: bool = DASHBOARD_OPTION,
    pack: bool = typer.Option(
        True, "--pack/--no-pack",
        help="Train runs that differ only in seed and a scalar the algorithm can vary per member (td3bc's alpha, ...) as "
        "one vectorised job each (members = values x seeds); each still writes its own run folder.",
    ),
    max_members: Optional[int] = typer.Option(
        None, min=1, help="At most this many runs per packed job (shorter jobs: a stopped grid loses less).",
    ),
) -> None:
    """Run a sweep: every setting of SPEC x datasets x seeds (run folders seed<K>-<tag>), one report column per setting."""
    from metaconstraint.cli import console, fail
    from metaconstraint.config import ConfigError
    from metaconstraint.report import describe_rule
    from metaconstraint.sweep import expand_sweep, load_sweep

    try:
        plan = load_sweep(spec_file)
        cells = expand_sweep(plan, {"out": str(out), "final_score_rule": final_score_rule.value, "final_score_k": final_score_k})
    except ConfigError as error:
        fail(str(error))
    if as_json:
        if not dry_run:
            fail("--json lists the sweep's settings and runs: give it with --dry-run.")
        typer.echo(json.dumps(_sweep_listing(plan, cells), indent=2))
        return
    console.print(
        f"sweep {spec_file}: {len(plan.settings)} setting(s) x {len(plan.datasets)} dataset(s) x {len(plan.seeds)} seed(s) "
        f"= {len(cells)} run(s)",
        highlight=False,
        soft_wrap=True,
    )
    for setting in plan.settings:
        console.print(f"  {setting.label}: {setting.describe()}", markup=False, highlight=False, soft_wrap=True)
    if dry_run:
        console.print("dry run: the spec and every run's configuration are valid; nothing was trained.")
        return
    command = ["metaconstraint", "sweep", str(spec_file), "--out", str(out)]
    if workers is not None:
        command += ["--workers", str(workers)]
    if final_score_rule is ScoreRule.mean_last_k:
        command += ["--final-score-rule", "mean_last_k", "--final-score-k", str(final_score_k)]
    if not pack:
        command.append("--no-pack")
    if max_members is not None:
        command += ["--max-members", str(max_members)]
    command += backend_command(backend, address, cpus_per_run, gpus_per_run)
    runner = make_backend(backend, workers, address, cpus_per_run, gpus_per_run, max_retries, dashboard)
    spec = {
        "command": command,
        "algorithms": [s.label for s in plan.settings],
        "datasets": plan.datasets,
        "seeds": plan.seeds,
        "final_score_rule": describe_rule(final_score_rule.value, final_score_k),
    }
    run_and_report(
        cells, runner, out, spec, [s.label for s in plan.settings], plan.datasets, final_score_rule, final_score_k,
        bootstrap_samples, bootstrap_seed, pack=pack, max_members=max_members,
    )


def _sweep_listing(plan, cells: list[dict]) -> dict:
    """The dry run's listing as data: each setting's values, and each run with its folder."""
    from metaconstraint.grid import cell_directory

    return {
        "settings": [{"label": s.label, "algorithm": s.algorithm, "tag": s.tag, "values": {**s.fixed, **s.swept}}
                     for s in plan.settings],
        "datasets": plan.datasets,
        "seeds": plan.seeds,
        "runs": [{"algorithm": c["algorithm"], "dataset": c["dataset"], "seed": c["seed"], "tag": c.get("tag"),
                  "folder": None if (folder := cell_directory(c)) is None else str(folder)} for c in cells],
    }


def report(
    folder: Path = typer.Argument(..., help="A run folder or a grid folder (every summary.json below it counts)."),
    final_score_rule: Optional[ScoreRule] = typer.Option(
        None, help="Recompute every final score with this rule (default: each summary's own)."
    ),
    final_score_k: int = typer.Option(5, min=1, help="k of mean_last_k."),
    out: Optional[Path] = typer.Option(None, help="Where to write results.md/csv and plots (default: FOLDER)."),
    reference: Optional[str] = typer.Option(
        None, help="The algorithm every other is compared with (paired differences, P(reference > X)); "
        "default: the table's first column (the grid's first algorithm, else the first by name).",
    ),
    effect: float = typer.Option(
        10.0, min=0.0, help="Paired difference (normalised points) a comparison should detect; below it: underpowered."
    ),
    paired_test: PairedTest = typer.Option(PairedTest.t, help="Paired test: t (paired t-test) or wilcoxon (signed-rank)."),
    bootstrap_samples: int = typer.Option(2000, min=1, help="Stratified bootstrap samples for the aggregate intervals."),
    bootstrap_seed: int = typer.Option(0, min=0, help="Seed of the bootstrap resampler."),
    as_json: bool = typer.Option(False, "--json", help="Print the table, the paired comparisons and the files written as JSON."),
) -> None:
    """Rebuild the results table, aggregates and plots from saved runs."""
    from metaconstraint.cli import console, fail
    from metaconstraint.grid_record import GRID_FILE
    from metaconstraint.report import build_report, collect_runs, report_listing
    from metaconstraint.runs import read_json
    from metaconstraint.suggest import did_you_mean

    if not folder.is_dir():
        fail(f"{folder}: no such folder.")
    rule = final_score_rule.value if final_score_rule is not None else None
    runs = collect_runs(folder, rule, final_score_k)
    if not runs:
        fail(f"{folder}: no runs found (no summary.json below it).")
    grid = read_json(folder / GRID_FILE) if (folder / GRID_FILE).exists() else {}
    datasets = _dataset_ids(grid["datasets"]) if grid.get("datasets") else None
    algorithms = grid.get("algorithms")
    if reference is not None and reference not in {r.algorithm for r in runs}:
        with_runs = sorted({r.algorithm for r in runs})
        fail(f"--reference {reference}: no runs of it below {folder}.{did_you_mean(reference, with_runs)} "
             f"Algorithms with runs: {', '.join(with_runs)}.")
    written = build_report(
        runs, out or folder, algorithms, datasets, bootstrap_samples, bootstrap_seed, reference,
        command=grid.get("command"), console=None if as_json else console, effect=effect, paired_test=paired_test.value,
    )
    if as_json:
        typer.echo(json.dumps(report_listing(written), indent=2))
