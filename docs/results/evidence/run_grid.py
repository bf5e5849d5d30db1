"""Run the pre-registered grid of docs/results.md, on one code version, as jobs that fit a session.

Usage, from the repository root (finished runs are skipped)::

    export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MINARI_DATASETS_PATH=../shared/datasets METACONSTRAINT_OFFLINE=1
    nice -n 10 python docs/results/evidence/run_grid.py [--workers 2] [--until 14:40] [--only DATASET] [--dry-run]

The grid's code version is the commit in ``GRID_COMMIT`` (written at the first start from a clean
HEAD, then committed with the run folders). Every job runs ``metaconstraint sweep`` from a git
worktree of that commit, so a later session with newer code finishes the grid on the version it
began with. Package versions (torch, mujoco, ...) must match the runs already made: a MuJoCo patch
release changes pen's trajectories (docs/results/history-20k.md), so a mismatch stops the grid.

A job is one setting of one arm on one dataset for up to ``--max-seeds`` seeds (default 2), trained as
one vectorised run. Packing more seeds does not make a seed cheaper on this CPU (docs/performance.md:
5 packed seeds run at 104% of one seed's per-seed rate), and a big job is a big loss when it cannot
finish: session 7's two 5-seed jobs slowed from 15 to ~3.5 iterations/s while four helpers tested.
Checkpoints do not outlive a session's machine (they are not committed), so a job cut off at the
session's end is lost: with ``--until`` a job starts only with as many seeds as it can finish by then
(``--member-minutes`` per seed, raised to the slowest per-seed time a finished job of this session
took), and no job starts when not even one seed fits. Jobs are taken in the pre-registered order: datasets as listed, then invariance.toml.
``--seed-major`` takes seed 0 of every setting before seed 1 of any (a partial grid is then paired across
arms), and ``--prefer TEXT`` moves the settings whose name contains TEXT to the front. Neither changes
what a run computes: each seed trains on its own, from its own seed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path

import tomli_w

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
RUNS = HERE.relative_to(ROOT) / "runs"
COMMIT_FILE = HERE / "GRID_COMMIT"
CODE_PATHS = ["metaconstraint", "pyproject.toml"]
MAX_SEEDS = 2  # seeds per job: ~25 min on a quiet core, so a session's end or a busy machine costs little


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def grid_commit() -> str:
    if COMMIT_FILE.exists():
        return COMMIT_FILE.read_text().strip()
    if git("status", "--porcelain", "--", *CODE_PATHS):
        sys.exit("run_grid.py: the code has uncommitted changes; the grid must start from a commit.")
    commit = git("rev-parse", "HEAD")
    COMMIT_FILE.write_text(commit + "\n")
    print(f"the grid runs on commit {commit}; commit {COMMIT_FILE.relative_to(ROOT)} with the first run folders.")
    return commit


def checkout(commit: str) -> Path:
    """A detached worktree of ``commit`` (made once per machine)."""
    path = Path(tempfile.gettempdir()) / f"metaconstraint-grid-{commit[:12]}"
    if not (path / "metaconstraint").is_dir():
        git("worktree", "prune")
        git("worktree", "add", "--detach", str(path), commit)
    return path


def check_code(code: Path, env: dict[str, str]) -> None:
    """Stop unless ``python -m metaconstraint`` run as the jobs run it imports the grid's worktree.
    (Session 7's jobs ran ``-m`` from the repository root, whose own package comes first on sys.path:
    they trained with the checkout's code, which a later merge changed under them.)"""
    probe = "import metaconstraint; print(metaconstraint.__file__)"
    found = subprocess.run([sys.executable, "-c", probe], cwd=code, env=env, check=True, capture_output=True, text=True).stdout
    if not Path(found.strip()).resolve().is_relative_to(code.resolve()):
        sys.exit(f"run_grid.py: the jobs would import {found.strip()}, not the grid's code in {code}.")


def check_packages(code: Path, env: dict[str, str]) -> None:
    """Stop unless this environment's packages and Python match every run already in the grid."""
    probe = "import json; from metaconstraint.runs import environment_record as e; r = e(); print(json.dumps([r['packages'], r['python']]))"
    now_packages, now_python = json.loads(
        subprocess.run([sys.executable, "-c", probe], cwd=code, env=env, check=True, capture_output=True, text=True).stdout
    )
    for record in sorted((ROOT / RUNS).glob("*/*/*/environment.json")):
        started = json.loads(record.read_text())
        differ = [f"{name} {version} (now {now_packages.get(name)})" for name, version in started["packages"].items()
                  if name != "metaconstraint" and now_packages.get(name) != version]
        if started["python"] != now_python:
            differ.append(f"python {started['python']} (now {now_python})")
        if differ:
            sys.exit(f"run_grid.py: {record.parent.relative_to(ROOT)} ran under {', '.join(differ)}; install those "
                     "versions first (runs under other versions are not comparable).")


def stages(only: str | None) -> list[dict]:
    """One sweep spec per dataset of grid.toml, in its order, then invariance.toml."""
    grid = tomllib.loads((HERE / "grid.toml").read_text())
    specs = [{**grid, "datasets": [dataset]} for dataset in grid["datasets"]]
    specs.append(tomllib.loads((HERE / "invariance.toml").read_text()))
    return [spec for spec in specs if only is None or only in spec["datasets"]]


def settings(spec: dict) -> list[dict]:
    """The stage split into one spec per setting (one value of every swept key), seeds unchanged."""
    cells = []
    for algorithm, options in spec["algorithms"].items():
        swept = options.get("sweep", {})
        for values in itertools.product(*swept.values()):
            sweep = {key: [value] for key, value in zip(swept, values)}
            cells.append({**spec, "algorithms": {algorithm: {**options, "sweep": sweep}}})
    return cells


def sweep_command(spec: dict, *options: str) -> list[str]:
    handle, name = tempfile.mkstemp(suffix=".toml", prefix="grid-job-")
    with os.fdopen(handle, "w") as file:
        file.write(tomli_w.dumps(spec))
    return [sys.executable, "-m", "metaconstraint", "sweep", name, "--out", str(ROOT / RUNS), *options]


def folders(spec: dict, env: dict[str, str]) -> list[str]:
    """The run folders of ``spec``, from ``sweep --dry-run --json`` of the grid's own code (``env``'s
    ``PYTHONPATH``, run from inside it)."""
    command = sweep_command(spec, "--dry-run", "--json")
    try:
        listing = subprocess.run(command, cwd=env["PYTHONPATH"], env=env, check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(command[4])
    return [run["folder"] for run in json.loads(listing)["runs"]]


@dataclass
class Job:
    spec: dict  # one setting, one dataset
    seeds: list[int]  # the seeds still to train, ascending

    @property
    def name(self) -> str:
        (algorithm, options), = self.spec["algorithms"].items()
        tag = ",".join(f"{k}={v[0]}" for k, v in options.get("sweep", {}).items())
        return f"{algorithm}({tag}) {self.spec['datasets'][0]}"


def pending_jobs(only: str | None, env: dict[str, str]) -> list[Job]:
    """Every setting with unfinished seeds, in the pre-registered order; checks that the settings'
    run folders are exactly the stage's (so a job writes where the whole stage's sweep would)."""
    jobs = []
    for stage in stages(only):
        cells = settings(stage)
        cell_folders = [folders(cell, env) for cell in cells]
        if sorted(itertools.chain(*cell_folders)) != sorted(folders(stage, env)):
            sys.exit(f"run_grid.py: the per-setting run folders of {stage['datasets']} differ from the stage's.")
        seeds = range(stage.get("seed", 0), stage.get("seed", 0) + stage["seeds"])
        for cell, paths in zip(cells, cell_folders):
            todo = [seed for seed, path in zip(seeds, paths) if not (ROOT / path / "summary.json").exists()]
            if todo:
                jobs.append(Job(cell, todo))
    return jobs


def reorder(jobs: list[Job], seed_major: bool, prefer: list[str]) -> list[Job]:
    """``jobs`` split into one job per seed when ``seed_major`` (then sorted by seed), with the jobs
    whose name contains one of ``prefer`` first; otherwise in their given order."""
    if seed_major:
        jobs = sorted((Job(job.spec, [seed]) for job in jobs for seed in job.seeds), key=lambda job: job.seeds[0])
    return sorted(jobs, key=lambda job: not any(text in job.name for text in prefer))


def leading_run(seeds: list[int], limit: int) -> list[int]:
    """The first consecutive seeds of ``seeds``, at most ``limit`` of them."""
    run = seeds[:1]
    for seed in seeds[1:limit]:
        if seed != run[-1] + 1:
            break
        run.append(seed)
    return run


def seeds_that_fit(until: dt.datetime | None, member_minutes: float, max_seeds: int) -> int:
    if until is None:
        return max_seeds
    minutes = (until - dt.datetime.now(dt.timezone.utc)).total_seconds() / 60
    return max(0, min(max_seeds, int(minutes // member_minutes)))


def deadline(text: str | None) -> dt.datetime | None:
    """``HH:MM`` today (UTC), or an ISO date and time."""
    if text is None:
        return None
    now = dt.datetime.now(dt.timezone.utc)
    try:
        clock = dt.time.fromisoformat(text)
        return now.replace(hour=clock.hour, minute=clock.minute, second=0, microsecond=0)
    except ValueError:
        moment = dt.datetime.fromisoformat(text)
        return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def prepare_datasets(jobs: list[Job], env: dict[str, str]) -> None:
    """Generate the built-in datasets once, before two workers would both generate them."""
    for dataset in dict.fromkeys(job.spec["datasets"][0] for job in jobs):
        if dataset.startswith("builtin/"):
            subprocess.run([sys.executable, "-m", "metaconstraint", "datasets", "download", dataset], cwd=env["PYTHONPATH"],
                           env=env, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", help="run only the stages of this dataset")
    parser.add_argument("--until", help="start no job that cannot finish by then: HH:MM (UTC, today) or ISO time")
    parser.add_argument("--member-minutes", type=float, default=12.0,
                        help="wall minutes one seed adds to a job (50k iterations on one core, evaluations included)")
    parser.add_argument("--max-seeds", type=int, default=MAX_SEEDS, help="seeds trained together in one job")
    parser.add_argument("--seed-major", action="store_true", help="seed 0 of every setting before seed 1 of any")
    parser.add_argument("--prefer", action="append", default=[], metavar="TEXT",
                        help="run first the settings whose name contains TEXT (repeatable), e.g. 'td3bc(alpha=10.0)'")
    parser.add_argument("--dry-run", action="store_true", help="list the pending jobs and stop")
    args = parser.parse_args()
    until = deadline(args.until)
    code = checkout(grid_commit())
    env = {**os.environ, "PYTHONPATH": str(code), "MPLBACKEND": "Agg"}
    check_code(code, env)
    check_packages(code, env)
    queue = reorder(pending_jobs(args.only, env), args.seed_major, args.prefer)
    print(f"{sum(len(job.seeds) for job in queue)} runs pending in {len(queue)} settings", flush=True)
    for job in queue:
        print(f"  {job.name}: seeds {job.seeds}", flush=True)
    if args.dry_run or not queue:
        return
    prepare_datasets(queue, env)
    lock, failed, member_minutes = threading.Lock(), [], [args.member_minutes]

    def worker() -> None:
        while True:
            with lock:
                fit = seeds_that_fit(until, member_minutes[0], args.max_seeds)
                if not queue or fit == 0:
                    return
                job = queue[0]
                seeds = leading_run(job.seeds, fit)
                job.seeds = [seed for seed in job.seeds if seed not in seeds]
                if not job.seeds:
                    queue.pop(0)
            spec = {**job.spec, "seed": seeds[0], "seeds": len(seeds)}
            command = sweep_command(spec, "--workers", "1", "--max-members", str(args.max_seeds))
            started = dt.datetime.now(dt.timezone.utc)
            print(f"{started:%H:%M} start {job.name} seeds {seeds}", flush=True)
            result = subprocess.run(command, cwd=code, env=env, stdout=subprocess.DEVNULL)
            os.unlink(command[4])
            minutes = (dt.datetime.now(dt.timezone.utc) - started).total_seconds() / 60
            print(f"{dt.datetime.now(dt.timezone.utc):%H:%M} {'done' if result.returncode == 0 else 'FAILED'} "
                  f"{job.name} seeds {seeds} in {minutes:.0f} min ({minutes / len(seeds):.1f} per seed)", flush=True)
            if result.returncode != 0:
                failed.append(f"{job.name} seeds {seeds}")
            else:
                with lock:  # later jobs are sized by what this machine, at this load, really took
                    member_minutes[0] = max(member_minutes[0], minutes / len(seeds))

    threads = [threading.Thread(target=worker) for _ in range(args.workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if queue:
        print(f"stopped for the deadline: {sum(len(job.seeds) for job in queue)} runs still pending", flush=True)
    if failed:
        sys.exit(f"run_grid.py: failed jobs: {'; '.join(failed)} (see {RUNS}/grid.json).")


if __name__ == "__main__":
    main()
