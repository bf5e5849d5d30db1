"""Compiled ASPC (its alpha step compiled too) against compiled TD3+BC, and ASPC's phases one by one.

Target (issue 21): ASPC's time per iteration <= 1.02x TD3+BC's, both compiled. One seed, pen shapes,
synthetic data, one thread. Rounds of ``--iterations`` interleave the two; each is timed by the wall
clock and by this process's CPU time (on a shared machine the wall clock follows the core share the
scheduler gives); ratios are medians of per-round ratios. Then the CPU time of one call of each
compiled phase: critic, first-order actor, and the meta phase compiled and eager.

    OMP_NUM_THREADS=1 python benchmarks/bench_aspc_compiled.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_update import machine, synthetic_transitions  # noqa: E402

from metaconstraint.algorithms import ALGORITHMS  # noqa: E402
from metaconstraint.algorithms.base import ProblemSpec  # noqa: E402
from metaconstraint.rl.buffer import MemberSampler, OfflineBuffer, StateNormalizer  # noqa: E402


class Runner:
    """One seed of ``name``, compiled, on synthetic pen-shaped data; ``run(n)`` takes n iterations."""

    def __init__(self, name: str):
        cls = ALGORITHMS[name]
        self.algorithm = cls(cls.Config(), ProblemSpec(45, 24, 1.0, 1_000_000), 1, torch.device("cpu"))
        self.algorithm.compile()
        self.sampler = MemberSampler(OfflineBuffer(synthetic_transitions(45, 24), StateNormalizer.identity(45)), 256, [0])
        self.state = self.algorithm.init_state([0])
        self.iteration = 0

    def __call__(self, iterations: int) -> None:
        for _ in range(iterations):
            self.iteration += 1
            self.state, _ = self.algorithm.update(self.state, self.sampler, self.iteration)


def cpu_ms(call, repeats: int) -> float:
    start = time.process_time()
    for _ in range(repeats):
        call()
    return (time.process_time() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=100, help="per round (a multiple of 20)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(machine())
    runs = {name: Runner(name) for name in ("td3bc", "aspc")}
    for run in runs.values():
        run(60)  # compiles every graph (static, then symbolic step counts), three alpha steps
    ratios: dict[str, list[float]] = {"wall": [], "cpu": []}
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(args.rounds):
        wall, cpu = {}, {}
        for name, run in runs.items():
            c, w = time.process_time(), time.perf_counter()
            run(args.iterations)
            cpu[name], wall[name] = time.process_time() - c, time.perf_counter() - w
            rates[name].append(args.iterations / wall[name])
        ratios["wall"].append(wall["aspc"] / wall["td3bc"])
        ratios["cpu"].append(cpu["aspc"] / cpu["td3bc"])
        print(f"round {r + 1}: td3bc {rates['td3bc'][-1]:.1f} it/s, aspc {rates['aspc'][-1]:.1f} it/s; aspc / td3bc time: "
              f"wall {ratios['wall'][-1]:.3f}x, CPU {ratios['cpu'][-1]:.3f}x", flush=True)
    print(f"\nmedian: ASPC / TD3+BC time {statistics.median(ratios['wall']):.3f}x (wall), {statistics.median(ratios['cpu']):.3f}x "
          f"(CPU); td3bc {statistics.median(rates['td3bc']):.1f} it/s, aspc {statistics.median(rates['aspc']):.1f} it/s")

    aspc = runs["aspc"].algorithm
    state, sampler = runs["aspc"].state, runs["aspc"].sampler
    batch = sampler.sample()
    noise = sampler.normal(*batch["actions"].shape[1:])
    for _ in range(2):
        critic = cpu_ms(lambda: aspc.phases.critic(state, batch, noise), 20)
        actor = cpu_ms(lambda: aspc.phases.first_order_actor(state, batch), 20)
        meta = cpu_ms(lambda: aspc.phases.meta(state, batch), 10)
        eager = cpu_ms(lambda: aspc.phases.meta_phase(state, batch), 10)
    print(f"phases, CPU ms per call: critic {critic:.2f}, actor (first order) {actor:.2f}, meta compiled {meta:.2f}, "
          f"meta eager {eager:.2f} ({eager / meta:.2f}x); a 20-iteration cycle over TD3+BC's: "
          f"{(20 * critic + 9 * actor + meta) / (20 * critic + 10 * actor):.3f}x compiled, "
          f"{(20 * critic + 9 * actor + eager) / (20 * critic + 10 * actor):.3f}x with the eager alpha step")
    print(machine())


if __name__ == "__main__":
    main()
