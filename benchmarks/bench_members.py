"""Hyperparameter members: a sweep over alpha x seeds as one vectorised process against one seed alone.

The evidence issue's fixed-alpha sweep, TD3+BC* at alpha in {0.3, 1, 2.5, 10} x 5 seeds, trains as one
run of 20 members (``--member-sweep alpha=0.3,1,2.5,10 --seeds 5``). The figure of merit is the
per-member rate: member-updates/s of the 20-member run over updates/s of one seed alone (target
>= 90%). Pen shapes (45-d states, 24-d actions, batch 256), synthetic data. The variants are
interleaved round by round in one process; the ratio is the median of per-round ratios. Each block
is timed twice: by the wall clock and by this process's CPU time (``time.process_time``, one
thread). On a machine shared with other processes the wall-clock rate follows the share of a core
the scheduler gives the process, which changes from block to block; the CPU-time rate is the
work's own cost (what an idle core would show), so the CPU-time ratio is the one to read there.

    OMP_NUM_THREADS=1 python benchmarks/bench_members.py --compile
    OMP_NUM_THREADS=1 python benchmarks/bench_members.py --rounds 3 --iterations 200
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_update import machine, synthetic_transitions, update_loop  # noqa: E402

from metaconstraint.algorithms import ALGORITHMS  # noqa: E402
from metaconstraint.algorithms.base import ProblemSpec  # noqa: E402
from metaconstraint.members import expand_members  # noqa: E402
from metaconstraint.rl.buffer import MemberSampler, OfflineBuffer, StateNormalizer  # noqa: E402

OBS, ACT = 45, 24


def member_runner(name: str, alphas: list[float], seeds: int, compile: bool, buffer, warmup: int = 4):
    """One run of ``len(alphas) x seeds`` members (``alphas`` empty: seeds alone); returns ``run(n)``
    with its member count and the seconds its first calls spent compiling."""
    members = expand_members({"alpha": alphas} if alphas else {}, list(range(seeds)))
    cls = ALGORITHMS[name]
    algorithm = cls(cls.Config(), ProblemSpec(OBS, ACT, 1.0, 1_000_000), len(members), torch.device("cpu"))
    if alphas:
        algorithm.set_member_values({"alpha": [m.values["alpha"] for m in members]})
    if compile:
        algorithm.compile()
    sampler = MemberSampler(buffer, algorithm.batch_size, [m.seed for m in members])
    run = update_loop(algorithm, sampler, algorithm.init_state([m.seed for m in members]))
    start = time.perf_counter()
    run(warmup)  # compiles (static, then symbolic step counts)
    run.warmup_seconds = time.perf_counter() - start
    run.members = len(members)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithm", default="td3bc")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.3, 1.0, 2.5, 10.0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=200, help="iterations of the one-seed run per round")
    parser.add_argument("--member-iterations", type=int, default=40, help="iterations of the member runs per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="the compiled update (the run option), as long runs use")
    parser.add_argument("--warmup", type=int, default=4, help="iterations before timing (compiling happens in the first 2)")
    args = parser.parse_args()

    print(f"machine: {machine()}")
    buffer = OfflineBuffer(synthetic_transitions(OBS, ACT), StateNormalizer.identity(OBS))
    variants = {
        "1 seed": (member_runner(args.algorithm, [], 1, args.compile, buffer, args.warmup), args.iterations),
        f"{args.seeds} seeds": (member_runner(args.algorithm, [], args.seeds, args.compile, buffer, args.warmup), args.member_iterations),
        f"{len(args.alphas)} alphas x {args.seeds} seeds": (
            member_runner(args.algorithm, args.alphas, args.seeds, args.compile, buffer, args.warmup), args.member_iterations
        ),
    }
    for label, (run, _) in variants.items():
        print(f"  {label}: {run.members} member(s), warm-up ({args.warmup} iterations{', compiling' if args.compile else ''}) {run.warmup_seconds:.1f} s")
    rates = {clock: {label: [] for label in variants} for clock in ("wall", "cpu")}
    for round_index in range(args.rounds):
        for label, (run, iterations) in variants.items():
            wall, cpu = time.perf_counter(), time.process_time()
            run(iterations)
            rates["wall"][label].append(iterations * run.members / (time.perf_counter() - wall))  # member-updates/s
            rates["cpu"][label].append(iterations * run.members / (time.process_time() - cpu))
        print(f"  round {round_index + 1} (member-updates per wall / CPU second): " + ", ".join(
            f"{label} {rates['wall'][label][-1]:.1f} / {rates['cpu'][label][-1]:.1f}" for label in variants), flush=True)
    print(f"after the rounds: {machine()}")
    mode = "compiled" if args.compile else "eager"
    print(f"\n{args.algorithm} ({mode}), medians of {args.rounds} rounds; ratios are medians of per-round ratios to one seed:\n")
    print("| run | members | updates/s (wall) | member-updates/s (wall) | per member vs one seed (wall) | "
          "member-updates per CPU second | per member vs one seed (CPU time) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, (run, _) in variants.items():
        ratio = {c: statistics.median(r / o for r, o in zip(rates[c][label], rates[c]["1 seed"])) for c in rates}
        wall = statistics.median(rates["wall"][label])
        print(
            f"| {label} | {run.members} | {wall / run.members:.1f} | {wall:.1f} | {ratio['wall']:.0%} | "
            f"{statistics.median(rates['cpu'][label]):.1f} | {ratio['cpu']:.0%} |"
        )


if __name__ == "__main__":
    main()
