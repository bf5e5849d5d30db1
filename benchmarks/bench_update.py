"""Training-update speed, with its yardsticks measured in the same process.

For each algorithm and member count: updates/s of the package's update, the update's matrix-multiply
FLOPs counted from the layer shapes, the matmul roofline (those FLOPs at the GEMM throughput
measured here at the same shapes), ASPC / TD3+BC, and the ratio to the straightforward eager
reference (``eager_reference.py``). Pen shapes by default (45-d states, 24-d actions), batch 256.

    OMP_NUM_THREADS=1 python benchmarks/bench_update.py --iterations 400 --seeds 1 5

Runs are interleaved (A, B, A, B, ...) and the median of ``--repeats`` is kept, so ratios are
measured side by side on a noisy machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import numpy as np
import torch

from eager_reference import EagerTD3BC
from metaconstraint.algorithms import ALGORITHMS
from metaconstraint.algorithms.base import ProblemSpec
from metaconstraint.rl.buffer import MemberSampler, OfflineBuffer, StateNormalizer


def synthetic_transitions(obs_dim: int, action_dim: int, size: int = 100_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    return SimpleNamespace(
        observations=rng.standard_normal((size, obs_dim), dtype=np.float32),
        actions=rng.uniform(-1, 1, (size, action_dim)).astype(np.float32),
        rewards=rng.standard_normal(size, dtype=np.float32),
        next_observations=rng.standard_normal((size, obs_dim), dtype=np.float32),
        next_actions=rng.uniform(-1, 1, (size, action_dim)).astype(np.float32),
        terminals=np.zeros(size, dtype=np.float32),
    )


def layer_shapes(obs_dim: int, action_dim: int):
    actor = [(obs_dim, 256), (256, 256), (256, action_dim)]
    critic = [(obs_dim + action_dim, 256), (256, 256), (256, 256), (256, 1)]
    return actor, critic


def matmul_flops_per_iteration(obs_dim: int, action_dim: int, batch: int, meta_interval: int | None) -> float:
    """GEMM FLOPs of one iteration, averaged over the actor (every 2nd) and alpha (every ``meta_interval``) steps.

    A linear layer costs ``2 B in out`` forward; a backward to weights and inputs twice that.
    Critic step: target actor forward, 2 target critics forward, 2 critics forward + backward.
    Actor step: actor forward + backward, Q1 forward + backward to its input (no weight grads).
    Alpha step (ASPC), counted as three more actor steps: the differentiable virtual step, the outer
    losses at the updated actor and the backward through both (an estimate, stated as such).
    """
    actor, critic = layer_shapes(obs_dim, action_dim)
    fwd = lambda layers: sum(2 * batch * i * o for i, o in layers)
    critic_step = fwd(actor) + 2 * fwd(critic) + 2 * 3 * fwd(critic)
    actor_step = 3 * fwd(actor) + 2 * fwd(critic)
    per_iteration = critic_step + actor_step / 2
    if meta_interval:
        per_iteration += 3 * actor_step / meta_interval
    return float(per_iteration)


def gemm_seconds(obs_dim: int, action_dim: int, batch: int, flops: float, repeats: int = 200) -> float:
    """Seconds the update's FLOPs take at the GEMM throughput measured at the update's layer shapes."""
    actor, critic = layer_shapes(obs_dim, action_dim)
    shapes = actor + critic
    mats = [(torch.randn(batch, i), torch.randn(i, o)) for i, o in shapes]
    work = sum(2 * batch * i * o for i, o in shapes)
    for a, b in mats:
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        for a, b in mats:
            a @ b
    throughput = work * repeats / (time.perf_counter() - start)
    return flops / throughput, throughput


def package_runner(name: str, members: int, obs_dim: int, action_dim: int, steps: int):
    cls = ALGORITHMS[name]
    algorithm = cls(cls.Config(), ProblemSpec(obs_dim, action_dim, 1.0, steps), members, torch.device("cpu"))
    buffer = OfflineBuffer(synthetic_transitions(obs_dim, action_dim), StateNormalizer.identity(obs_dim))
    sampler = MemberSampler(buffer, algorithm.batch_size, list(range(members)))
    state = algorithm.init_state(list(range(members)))
    counter = {"it": 0}

    def run(iterations: int) -> None:
        nonlocal state
        for _ in range(iterations):
            counter["it"] += 1
            state, _ = algorithm.update(state, sampler, counter["it"])

    return run


def eager_runner(adaptive: bool, obs_dim: int, action_dim: int, batch: int):
    torch.manual_seed(0)
    agent = EagerTD3BC(obs_dim, action_dim, adaptive=adaptive)
    data = synthetic_transitions(obs_dim, action_dim)
    tensors = [torch.as_tensor(x) for x in (data.observations, data.actions, data.rewards, data.next_observations, data.terminals)]

    def run(iterations: int) -> None:
        for _ in range(iterations):
            index = torch.randint(len(tensors[2]), (batch,))
            agent.update([t[index] for t in tensors])

    return run


def timed(run, iterations: int) -> float:
    start = time.perf_counter()
    run(iterations)
    return iterations / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--obs-dim", type=int, default=45)
    parser.add_argument("--action-dim", type=int, default=24)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=400, help="Per timed block (a multiple of 20 covers alpha steps evenly).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--algorithms", nargs="+", default=["td3bc", "aspc"])
    args = parser.parse_args()
    obs, act, batch = args.obs_dim, args.action_dim, args.batch
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), shapes obs {obs} act {act} batch {batch}")

    runners = {}
    for name in args.algorithms:
        for members in args.seeds:
            runners[(name, members)] = package_runner(name, members, obs, act, 1_000_000)
    runners[("eager-td3bc", 1)] = eager_runner(False, obs, act, batch)
    runners[("eager-aspc", 1)] = eager_runner(True, obs, act, batch)
    for run in runners.values():  # warm-up: allocator, first alpha step
        run(40)
    rates: dict = {key: [] for key in runners}
    gemm_rates = []
    for _ in range(args.repeats):
        for key, run in runners.items():
            rates[key].append(timed(run, args.iterations))
        gemm_rates.append(gemm_seconds(obs, act, batch, 1.0)[1])
    gemm = statistics.median(gemm_rates)
    median = {key: statistics.median(values) for key, values in rates.items()}
    print(f"GEMM throughput at the update's layer shapes: {gemm / 1e9:.1f} GFLOP/s (median of {args.repeats})\n")
    print("| algorithm | seeds | updates/s | seed-updates/s | GFLOP/iter | achieved GFLOP/s | of roofline | vs eager | ASPC/TD3+BC |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (name, members), rate in median.items():
        if name.startswith("eager"):
            continue
        meta = 20 if name == "aspc" else None
        flops = members * matmul_flops_per_iteration(obs, act, batch, meta)
        eager = median[("eager-aspc" if name == "aspc" else "eager-td3bc", 1)]
        cost = ""
        if name == "aspc" and ("td3bc", members) in median:
            cost = f"{median[('td3bc', members)] / rate:.2f}x time"
        print(
            f"| {name} | {members} | {rate:.1f} | {rate * members:.1f} | {flops / 1e9:.3f} | {flops * rate / 1e9:.1f} | "
            f"{flops * rate / gemm:.0%} | {rate * members / eager:.2f}x | {cost} |"
        )
    for key in (("eager-td3bc", 1), ("eager-aspc", 1)):
        print(f"| {key[0]} | 1 | {median[key]:.1f} | {median[key]:.1f} | | | | 1.00x | |")


if __name__ == "__main__":
    main()
