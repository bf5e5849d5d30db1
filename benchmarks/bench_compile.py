"""Does ``torch.compile`` pay on this update? Measured on its largest part, the twin-critic step.

Times the twin critic's loss forward + backward (pen shapes, batch 256, the robust 3x256 LayerNorm
critic as one tensor set) eagerly and compiled (inductor), interleaved, and reports the compile
time beside the per-step gain, so the break-even point over a run is explicit.

    OMP_NUM_THREADS=1 python benchmarks/bench_compile.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from metaconstraint.rl.networks import init_members, twin_critic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--obs-dim", type=int, default=45)
    parser.add_argument("--action-dim", type=int, default=24)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    critic = twin_critic(args.obs_dim, args.action_dim)
    params = {k: v[0].requires_grad_() for k, v in init_members(critic, [0], torch.device("cpu"), salt=2).items()}
    states = torch.randn(args.batch, args.obs_dim)
    actions = torch.rand(args.batch, args.action_dim) * 2 - 1
    target = torch.randn(args.batch)

    def step(p):
        loss = (critic.apply(p, states, actions) - target).pow(2).mean(-1).sum()
        return torch.autograd.grad(loss, list(p.values()))

    compiled = torch.compile(step)
    start = time.perf_counter()
    compiled(params)
    compiled(params)
    compile_seconds = time.perf_counter() - start

    def rate(fn) -> float:
        begin = time.perf_counter()
        for _ in range(args.steps):
            fn(params)
        return args.steps / (time.perf_counter() - begin)

    eager, fast = [], []
    for _ in range(args.repeats):
        eager.append(rate(step))
        fast.append(rate(compiled))
    e, c = statistics.median(eager), statistics.median(fast)
    saved = 1 / e - 1 / c
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"critic step eager    : {e:8.1f} steps/s")
    print(f"critic step compiled : {c:8.1f} steps/s  ({c / e:.2f}x)")
    print(f"compile time         : {compile_seconds:8.1f} s")
    if saved > 0:
        print(f"break-even after     : {compile_seconds / saved:,.0f} steps")
    else:
        print("compiled is not faster: no break-even")


if __name__ == "__main__":
    main()
