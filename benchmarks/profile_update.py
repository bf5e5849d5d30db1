"""Where an update's time goes: torch.profiler over whole 20-iteration cycles, grouped by kind.

For each algorithm (one seed, or ``--members`` stacked seeds; pen shapes, its default batch): wall time per iteration without the
profiler, and the profiler's self CPU time of every aten operator grouped into matrix products,
LayerNorm, the optimizers (fused Adam and the target updates), other elementwise and reduction
kernels, copies and indexing, random-number draws, and (compiled) the generated fused kernels.

    OMP_NUM_THREADS=1 python benchmarks/profile_update.py --algorithms td3bc aspc
    OMP_NUM_THREADS=1 python benchmarks/profile_update.py --algorithms aspc --compile --table
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_update import CYCLE, package_runner  # noqa: E402

KINDS = {
    "matmul": ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::mv", "aten::dot"),
    "layer norm": ("aten::native_layer_norm", "aten::native_layer_norm_backward"),
    "optimizer": ("aten::_fused_adam_", "aten::_foreach_lerp_"),
    "copy / index / cat": (
        "aten::copy_", "aten::index_select", "aten::cat", "aten::clone", "aten::contiguous", "aten::index",
        "aten::stack", "aten::zero_", "aten::fill_", "aten::empty", "aten::empty_strided", "aten::zeros", "aten::full",
    ),
    "random": ("aten::randint", "aten::randn", "aten::normal_", "aten::random_"),
}
VIEWS = (
    "aten::view", "aten::t", "aten::transpose", "aten::unsqueeze", "aten::squeeze", "aten::expand", "aten::as_strided",
    "aten::permute", "aten::select", "aten::slice", "aten::detach", "aten::alias", "aten::reshape", "aten::_unsafe_view",
    "aten::split", "aten::chunk", "aten::narrow", "aten::numpy_T", "aten::lift_fresh", "aten::resolve_conj", "aten::resolve_neg",
)


def kind_of(name: str) -> str | None:
    if not name.startswith("aten::"):
        if name.startswith("## Call CompiledFxGraph"):  # the generated fused kernels run inside this range
            return "compiled fused kernels"
        return "compiled-graph guards and wrappers" if name.startswith(("TorchDynamo Cache Lookup", "AOTDispatcher", "Pregraph")) else None
    for kind, names in KINDS.items():
        if name in names:
            return kind
    if name in VIEWS or name.startswith("aten::_to_copy") or name == "aten::to":
        return "views (metadata)"
    return "elementwise / reductions"


def profile_algorithm(name: str, cycles: int, threads: int, compiled: bool, table: bool, members: int = 1) -> None:
    run = package_runner(name, members, 45, 24, compile=compiled)
    run(3 * CYCLE)  # warm-up (and compilation)
    iterations = cycles * CYCLE
    start = time.perf_counter()
    run(iterations)
    wall = (time.perf_counter() - start) / iterations
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run(iterations)
    events = prof.key_averages()
    top_level = [e for e in events if kind_of(e.key) is not None]
    grouped: dict[str, float] = defaultdict(float)
    counts = 0
    for event in top_level:
        grouped[kind_of(event.key)] += event.self_cpu_time_total / 1e6 / iterations
        counts += event.count
    operators = sum(grouped.values())
    print(f"\n{name}{' (compiled)' if compiled else ''}, {members} member(s), {threads} thread(s): {1 / wall:.1f} it/s "
          f"({wall * 1e3:.2f} ms/iteration without the profiler); {counts / iterations:.0f} operator calls per iteration")
    print("| kind | ms/iteration (profiled) | share of operator time |")
    print("|---|---|---|")
    for kind, seconds in sorted(grouped.items(), key=lambda kv: -kv[1]):
        print(f"| {kind} | {seconds * 1e3:.3f} | {seconds / operators:.0%} |")
    print(f"| all operators | {operators * 1e3:.3f} | 100% |")
    print(f"(wall without the profiler {wall * 1e3:.2f} ms/iteration; the profiler's own cost and other processes inflate "
          f"the operator times, so read the shares, not the sum)")
    if table:
        print(events.table(sort_by="self_cpu_time_total", row_limit=30))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", nargs="+", default=["td3bc", "aspc"])
    parser.add_argument("--cycles", type=int, default=5, help="20-iteration cycles profiled.")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="Profile the compiled update (the run option).")
    parser.add_argument("--table", action="store_true", help="Also print the profiler's operator table.")
    parser.add_argument("--members", type=int, nargs="+", default=[1], help="Stacked members (seeds) profiled, e.g. 1 20.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load average {os.getloadavg()[0]:.2f}")
    for name in args.algorithms:
        for members in args.members:
            profile_algorithm(name, args.cycles, torch.get_num_threads(), args.compile, args.table, members)


if __name__ == "__main__":
    main()
