"""Grid throughput and per-run overhead of the local and the Ray backends, side by side.

Each configuration runs `metaconstraint compare td3bc --seeds R` (short runs) in a fresh folder as
its own process, the way a user runs it, and records:

- ``wall``: the whole command (imports, Ray's start and stop, the runs, the report);
- ``in_runs``: the sum of the runs' own seconds (``grid.json``: data loading, training, evaluation,
  writing, measured inside the worker);
- ``outside``: ``wall - in_runs / workers``, the cost of everything but the runs at that parallelism.

With two grid sizes at one worker, ``outside`` splits into a fixed cost (process start, Ray's cluster
start) and a cost per run (scheduling, result transport): the slope between the sizes.

    OMP_NUM_THREADS=1 python benchmarks/bench_grid.py --sizes 2 6 --steps 50
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATASET = "dapg/pen/expert-v0"


def run_grid(backend: str, workers: int, runs: int, steps: int, root: Path) -> dict:
    out = root / f"{backend}-w{workers}-r{runs}"
    command = [
        sys.executable, "-c", "from metaconstraint.cli import app; app()", "compare", "td3bc", "--datasets", DATASET,
        "--seeds", str(runs), "--steps", str(steps), "--eval-every", str(steps), "--eval-episodes", "1",
        "--workers", str(workers), "--cpus-per-run", "1", "--out", str(out), "--bootstrap-samples", "100",
    ]
    if backend == "ray":
        command += ["--backend", "ray"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    cells = json.loads((out / "grid.json").read_text())["cells"]
    in_runs = sum(c["seconds"] for c in cells)
    return {
        "backend": backend, "workers": workers, "runs": runs, "steps": steps, "wall": wall, "in_runs": in_runs,
        "outside": wall - in_runs / workers, "runs_per_minute": 60 * runs / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[2, 6], help="the two grid sizes (runs) at one worker")
    parser.add_argument("--steps", type=int, default=50, help="iterations per run")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("METACONSTRAINT_OFFLINE", "1")
    root = Path(tempfile.mkdtemp(prefix="bench-grid-"))
    if "RAY_AUTH_TOKEN" not in os.environ and "RAY_AUTH_TOKEN_PATH" not in os.environ:
        token = root / "token"  # a token of the benchmark's own, not the user's ~/.ray/auth_token
        token.write_text(secrets.token_hex(32))
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
    small, large = args.sizes
    plan = [(b, 1, small) for b in ("local", "ray")] + [(b, w, large) for w in (1, 2) for b in ("local", "ray")]
    rows = []
    for backend, workers, runs in plan:
        row = run_grid(backend, workers, runs, args.steps, root)
        rows.append(row)
        print(f"{backend:5} workers {workers} runs {runs}: wall {row['wall']:6.1f} s, in runs {row['in_runs']:6.1f} s, "
              f"outside {row['outside']:5.1f} s, {row['runs_per_minute']:.1f} runs/min", flush=True)
    for backend in ("local", "ray"):
        one = {r["runs"]: r for r in rows if r["backend"] == backend and r["workers"] == 1}
        per_run = (one[large]["outside"] - one[small]["outside"]) / (large - small)
        fixed = one[small]["outside"] - small * per_run
        print(f"{backend:5}: fixed cost {fixed:.1f} s per grid, {per_run:+.2f} s per run outside the run")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
