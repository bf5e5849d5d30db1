"""Run the pre-registered grid of docs/results.md, on one code version, one dataset at a time.

Usage, from the repository root (finished runs are skipped, interrupted ones resume)::

    export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MINARI_DATASETS_PATH=../shared/datasets METACONSTRAINT_OFFLINE=1
    nice -n 10 python docs/results/evidence/run_grid.py [--workers 2] [--only DATASET]

The grid's code version is the commit in ``GRID_COMMIT`` (written at the first start from a clean
HEAD, then committed with the run folders). Every stage runs ``metaconstraint sweep`` from a git
worktree of that commit, so a later session with newer code finishes the grid on the version it
began with. Package versions (torch, mujoco, ...) must match the runs already made: a MuJoCo patch
release changes pen's trajectories (docs/results/history-20k.md), so a mismatch stops the grid.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import tomli_w

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
RUNS = HERE.relative_to(ROOT) / "runs"
COMMIT_FILE = HERE / "GRID_COMMIT"
CODE_PATHS = ["metaconstraint", "pyproject.toml"]


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


def check_packages(code: Path) -> None:
    """Stop unless this environment's packages and Python match every run already in the grid."""
    probe = "import json; from metaconstraint.runs import environment_record as e; r = e(); print(json.dumps([r['packages'], r['python']]))"
    now_packages, now_python = json.loads(
        subprocess.run([sys.executable, "-c", probe], env={**os.environ, "PYTHONPATH": str(code)}, check=True,
                       capture_output=True, text=True).stdout
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", help="run only the stages of this dataset")
    args = parser.parse_args()
    code = checkout(grid_commit())
    check_packages(code)
    env = {**os.environ, "PYTHONPATH": str(code), "MPLBACKEND": "Agg"}
    failed = []
    for spec in stages(args.only):
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as file:
            file.write(tomli_w.dumps(spec))
        command = [sys.executable, "-m", "metaconstraint", "sweep", file.name, "--out", str(RUNS), "--workers", str(args.workers),
                   "--max-members", "5"]  # a job per setting and dataset: 5 seeds, under an hour
        print("+", " ".join(command[1:]), f"# {spec['datasets'][0]}", flush=True)
        if subprocess.run(command, cwd=ROOT, env=env).returncode != 0:
            failed.append(spec["datasets"][0])
        os.unlink(file.name)
    if failed:
        sys.exit(f"run_grid.py: stages with failed runs: {', '.join(failed)} (see {RUNS}/grid.json).")


if __name__ == "__main__":
    main()
