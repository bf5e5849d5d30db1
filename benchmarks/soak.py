"""Soak: a long training run that records resident memory every few thousand iterations.

Trains through the real :class:`~metaconstraint.training.Trainer` (evaluations, metric flushes,
checkpoints, divergence checks included) and reads the resident set size from
``/proc/self/statm`` at every ``--record-every`` iterations. Memory should stay flat after the
first evaluation and checkpoint have allocated their buffers.

    MINARI_DATASETS_PATH=../shared/datasets OMP_NUM_THREADS=1 \\
        python benchmarks/soak.py --steps 100000 --eval-every 10000 --eval-episodes 2 --json soak.json

The run folder goes to a temporary directory (removed afterwards) unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_mb() -> float:
    """Resident set size of this process in MiB (``/proc/self/statm``, second field)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE / 2**20


def soak(algorithm: str, dataset: str, steps: int, eval_every: int, eval_episodes: int, record_every: int, out: Path, log_every: int = 1000) -> dict:
    import torch

    from metaconstraint.config import build_configs
    from metaconstraint.training import Trainer

    values = {
        "algorithm": algorithm,
        "dataset": dataset,
        "steps": steps,
        "eval_every": eval_every,
        "eval_episodes": eval_episodes,
        "log_every": log_every,
        "out": out,
    }
    run, config = build_configs(values, source="soak")
    records: list[dict] = []
    start = time.perf_counter()

    def record(iteration: int, score, scale) -> None:
        if iteration == 0 or iteration % record_every == 0 or iteration == steps:
            records.append(
                {
                    "iteration": iteration,
                    "rss_mb": round(resident_mb(), 2),
                    "seconds": round(time.perf_counter() - start, 1),
                    "scale": None if scale is None else scale[1],  # the learned scale (alpha for aspc)
                }
            )
            print(f"{iteration:>8,}  rss {records[-1]['rss_mb']:8.1f} MiB  {records[-1]['seconds']:8.1f} s", flush=True)

    before = resident_mb()
    trainer = Trainer(run, config, progress=record)
    summary = trainer.fit()[0]
    after_setup = records[0]["rss_mb"] if records else before
    steady = [r["rss_mb"] for r in records if r["iteration"] >= min(2 * eval_every, steps)]
    return {
        "command": " ".join(sys.argv),
        "algorithm": algorithm,
        "dataset": dataset,
        "steps": steps,
        "torch_threads": torch.get_num_threads(),
        "rss_before_setup_mb": round(before, 2),
        "rss_after_setup_mb": after_setup,
        "rss_final_mb": records[-1]["rss_mb"],
        "rss_max_mb": max(r["rss_mb"] for r in records),
        "steady_state_spread_mb": round(max(steady) - min(steady), 2) if steady else None,
        "steady_state_from_iteration": min(2 * eval_every, steps),
        "updates_per_second": summary["updates_per_second"],
        "final_score": summary["final_score"],
        "final_alpha": summary.get("final_alpha"),
        "records": records,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithm", default="aspc")
    parser.add_argument("--dataset", default="dapg/pen/expert-v0")
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--eval-every", type=int, default=10_000)
    parser.add_argument("--eval-episodes", type=int, default=2)
    parser.add_argument("--record-every", type=int, default=5_000)
    parser.add_argument("--out", type=Path, default=None, help="Output root (default: a temporary folder, removed).")
    parser.add_argument("--json", type=Path, default=None, help="Write the figures here.")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="metaconstraint-soak-"))
    try:
        result = soak(args.algorithm, args.dataset, args.steps, args.eval_every, args.eval_episodes, args.record_every, out)
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
    print(json.dumps({k: v for k, v in result.items() if k != "records"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
