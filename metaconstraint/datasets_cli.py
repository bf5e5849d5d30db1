"""``metaconstraint datasets ...``: list, info, download, collect."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from metaconstraint.terminal import aligned_columns


def _console():
    from metaconstraint.cli import console

    return console


def _progress_console(as_json: bool):
    """Where progress goes: stderr when stdout carries JSON."""
    from metaconstraint.cli import errors

    return errors if as_json else _console()


def _fail(message: str) -> None:
    from metaconstraint.cli import fail

    fail(message)


def datasets_list(as_json: bool = typer.Option(False, "--json", help="Print the list as JSON.")) -> None:
    """Short names, their dataset ids, and which are local (built-in sets are generated on first use)."""
    from metaconstraint.rl.data import dataset_roots, known_datasets

    entries = [
        {"short_name": short or None, "dataset_id": dataset_id, "local": local,
         "builtin": dataset_id.startswith("builtin/")}
        for short, dataset_id, local in known_datasets()
    ]
    searched = [str(p) for p in dataset_roots()]
    if as_json:
        typer.echo(json.dumps({"datasets": entries, "searched": searched}, indent=2))
        return
    rows = [
        (e["short_name"] or "-", "yes" if e["local"] else "on first use" if e["builtin"] else "no", e["dataset_id"])
        for e in entries
    ]
    console = _console()
    # Plain columns rather than a rich table, with the id last: a table fitted to 80 columns cuts ids.
    for index, line in enumerate(aligned_columns(("short name", "local", "dataset id"), rows)):
        console.print(line, style="bold" if index == 0 else None, markup=False, highlight=False, soft_wrap=True)
    console.print("searched: " + ", ".join(searched), markup=False, highlight=False, soft_wrap=True)
    console.print("local 'on first use': a built-in set, simulated on this machine the first time it is used; "
                  "builtin/pointmaze/* are local remakes of D4RL's maze2d sets by their published recipe.",
                  markup=False, highlight=False, soft_wrap=True)


def _histogram_lines(histogram: dict, width: int = 30) -> list[str]:
    counts, edges = histogram["counts"], histogram["edges"]
    if not counts:
        return []
    top = max(counts) or 1
    return [
        f"  [{edges[i]:>10.4g}, {edges[i + 1]:>10.4g})  {'#' * round(width * c / top):<{width}} {c}"
        for i, c in enumerate(counts)
    ]


def datasets_info(
    name: str = typer.Argument(..., help="Short name, dataset id, or a+b."),
    as_json: bool = typer.Option(False, "--json", help="Print the description as JSON."),
) -> None:
    """Episodes, steps, spaces, evaluation spec, reference scores and the return distribution."""
    from metaconstraint.rl.data import DatasetError, describe_dataset, generate_missing_builtin

    shown = _progress_console(as_json)
    try:
        generate_missing_builtin(name, shown)  # before the status line: it shows a progress bar
        with shown.status(f"reading {name}"):
            info = describe_dataset(name)
    except DatasetError as error:
        _fail(str(error))
    if as_json:
        typer.echo(json.dumps(info))
        return
    table = Table(title=info["dataset_id"], show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    refs = (
        f"random {info['ref_min_score']:.6g}, expert {info['ref_max_score']:.6g}"
        if info["ref_min_score"] is not None and info["ref_max_score"] is not None
        else "none (scores cannot be normalised)"
    )
    keys = f" = {' + '.join(info['observation_keys'])} flattened" if info["observation_keys"] else ""
    rows = [
        ("episodes", f"{info['episodes']:,}"),
        ("steps", f"{info['steps']:,}"),
        ("observations", f"{info['observation_space']} -> {info['observation_dim']}-d{keys}"),
        ("actions", info["action_space"]),
        ("evaluation", f"{info['env_id'] or '(no spec)'}, horizon {info['eval_horizon']}"),
        ("reference scores", refs),
    ]
    if info["reward_offset"]:
        rows.append(("training rewards", f"reward {info['reward_offset']:+g} (default for this domain)"))
    for label, key in (("episode returns", "returns"), ("normalised returns", "normalized_returns")):
        s = info[key]
        if s:
            rows.append((label, f"mean {s['mean']:.4g} +- {s['std']:.4g}; min {s['min']:.4g}, q25 {s['q25']:.4g}, "
                                f"median {s['median']:.4g}, q75 {s['q75']:.4g}, max {s['max']:.4g}"))
    if info.get("description"):
        rows.append(("description", info["description"]))
    for label, value in rows:
        table.add_row(label, str(value))
    console = _console()
    console.print(table, markup=False, highlight=False)
    for folder in info["folders"]:  # outside the table, which would cut a long path
        console.print(f"folder: {folder}", markup=False, highlight=False, soft_wrap=True)
    lines = _histogram_lines(info["histogram"])
    if lines:
        console.print("episode returns:", markup=False, highlight=False)
        for line in lines:
            console.print(line, markup=False, highlight=False)


def datasets_download(
    name: str = typer.Argument(..., help="Short name, Minari id, or a+b."),
    as_json: bool = typer.Option(False, "--json", help="Print each part's id, folder and how it came as JSON."),
) -> None:
    """Make a dataset local: download it through Minari (built-in sets are generated)."""
    from metaconstraint.rl.data import DatasetError, download_dataset, generate_missing_builtin

    shown = _progress_console(as_json)
    try:
        generated = generate_missing_builtin(name, shown)  # before the status line: it shows a progress bar
        with shown.status(f"getting {name}"):
            rows = download_dataset(name)
    except DatasetError as error:
        _fail(str(error))
    rows = [(dataset_id, folder, "generated" if dataset_id in generated else how) for dataset_id, folder, how in rows]
    if as_json:
        typer.echo(json.dumps([{"dataset_id": i, "folder": str(f), "how": how} for i, f, how in rows], indent=2))
        return
    for dataset_id, folder, how in rows:
        verb = {"local": "already local in", "generated": "generated in", "downloaded": "downloaded to"}[how]
        _console().print(f"{dataset_id}: {verb} {folder}", markup=False, highlight=False, soft_wrap=True)


def datasets_collect(
    env_id: str = typer.Argument(..., help="A Gymnasium environment id (e.g. Pendulum-v1, Hopper-v5, AntMaze_UMaze-v4)."),
    dataset_id: str = typer.Option(..., "--id", help="Id of the new dataset: NAMESPACE/ENV/NAME-vN."),
    policy: str = typer.Option("random", help="random, a run folder or checkpoint of a trained policy, or module:function."),
    episodes: Optional[int] = typer.Option(None, help="Number of episodes to collect."),
    steps: Optional[int] = typer.Option(None, help="Number of steps to collect (instead of --episodes)."),
    noise: float = typer.Option(0.0, help="Gaussian action noise, std in units of the action half-range."),
    root: Optional[Path] = typer.Option(None, help="Dataset root to write into (default: MINARI_DATASETS_PATH)."),
    seed: int = typer.Option(0, help="Seed: episode e resets with seed+e; noise and random actions are seeded too."),
    expert_score: Optional[float] = typer.Option(None, help="Expert reference return (default: the policy's measured return)."),
    reference_episodes: int = typer.Option(10, help="Episodes measured for each reference score."),
    max_episode_steps: Optional[int] = typer.Option(None, help="Episode horizon (default: the environment's)."),
) -> None:
    """Collect a Minari dataset by running a behaviour policy in ENV_ID."""
    import gymnasium as gym
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from metaconstraint.rl.collect import collect_dataset, make_env_spec
    from metaconstraint.rl.data import DatasetError
    from metaconstraint.rl.data.roots import minari_root
    from metaconstraint.rl.envs import make_env
    from metaconstraint.rl.observations import flat_dim

    if (episodes is None) == (steps is None):
        _fail("give either --episodes N or --steps N.")
    console = _console()
    try:
        spec = make_env_spec(env_id, max_episode_steps)
        env = make_env(spec)
        try:
            obs_dim, act_space = flat_dim(env.observation_space), env.action_space
        finally:
            env.close()
        if not isinstance(act_space, gym.spaces.Box):
            _fail(f"{env_id} has a {type(act_space).__name__} action space; only continuous (Box) actions are supported.")
        from metaconstraint.policies import resolve_policy

        behaviour = resolve_policy(policy, obs_dim, int(act_space.shape[0]), float(abs(act_space.high).max()))
        total = episodes if episodes is not None else steps
        progress = Progress(
            TextColumn(f"[bold]collect[/] {dataset_id}"),
            BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,} " + ("episodes" if episodes is not None else "steps")),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        with progress:
            task = progress.add_task("collect", total=total)

            def update(done_steps: int, done_episodes: int) -> None:
                progress.update(task, completed=done_episodes if episodes is not None else min(done_steps, total))

            result = collect_dataset(
                env_id,
                dataset_id,
                behaviour,
                root if root is not None else minari_root(),
                episodes=episodes,
                steps=steps,
                noise=noise,
                seed=seed,
                expert_score=expert_score,
                reference_episodes=reference_episodes,
                max_episode_steps=max_episode_steps,
                policy_name=policy if isinstance(behaviour, str) else getattr(behaviour, "__name__", policy),
                progress=update,
            )
    except DatasetError as error:
        _fail(str(error))
    except KeyboardInterrupt:
        _fail("interrupted; nothing was written.")
    score = 100.0 * (result.returns.mean() - result.ref_min_score) / (result.ref_max_score - result.ref_min_score)
    console.print(
        f"wrote {result.dataset_id} to {result.folder}: {result.episodes} episodes, {result.steps:,} steps of "
        f"{result.env_id} (horizon {result.eval_horizon}); mean return {result.returns.mean():.4g} "
        f"(normalised {score:.1f}); references random {result.ref_min_score:.6g}, expert {result.ref_max_score:.6g}.",
        markup=False,
        highlight=False,
    )


def register(datasets_app: typer.Typer) -> None:
    datasets_app.command("list")(datasets_list)
    datasets_app.command("info")(datasets_info)
    datasets_app.command("download")(datasets_download)
    datasets_app.command("collect")(datasets_collect)
