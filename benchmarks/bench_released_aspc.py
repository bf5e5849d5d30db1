"""The project's ASPC update beside the paper's released one, on the same core, in one process.

The released code (github.com/Colin-Jing/ASPC, ``algorithms/offline/aspc.py``) is not part of this
project and nothing of it is copied here: pass the path of a checkout (or of that file). Its
module imports ``d4rl``, ``gym``, ``wandb`` and ``pyrallis`` at the top, which the update itself
does not use; empty stand-ins are put in ``sys.modules`` for the ones not installed. The update
needs ``torchopt`` (its actor optimizer), which is not a dependency of this project:
``pip install torchopt`` to run this benchmark; without it the benchmark says so and exits.
The released update reads ``self.reward_mean`` without setting it (its training script does); it
is set to 0 here, which is what the rewards' offset is in both.

Both updates train on synthetic pen-shaped batches (45-d states, 24-d actions, batch 256), with the
released defaults (policy_freq 2, alpha_freq 10: an alpha step every 20 iterations) and ours. Rounds
are interleaved (released, project eager, project compiled, TD3+BC, ...); ratios are medians of
per-round ratios. One torch thread.

    OMP_NUM_THREADS=1 python benchmarks/bench_released_aspc.py /path/to/ASPC --iterations 200 --repeats 5
    OMP_NUM_THREADS=1 python benchmarks/bench_released_aspc.py /path/to/ASPC --gemm default auto --profile

Also printed: TD3+BC* (compiled) against the one-core JAX figure of issue 21 (90 updates/s,
measured on another machine: a reference point, not a side-by-side ratio), and ASPC against the
GEMM rooflines of ``bench_update.py`` (MKL's and the best kernel's).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_update import CYCLE, GemmRecorder, GemmReplay, machine, package_runner, synthetic_transitions, with_gemm  # noqa: E402

from metaconstraint.engine import gemm  # noqa: E402

JAX_TD3BC_ONE_CORE = 90.0  # updates/s, issue 21 (JAX-CORL-style jit over updates, one core, another machine)
RELEASED_FILE = Path("algorithms") / "offline" / "aspc.py"


class _StandIn(types.ModuleType):
    """An empty module whose every attribute is a placeholder class (``gym.Env`` in annotations);
    ``wrap()`` (pyrallis, decorating the training script) returns the function unchanged."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        if name == "wrap":
            return lambda *args, **kwargs: (lambda fn: fn)
        return type(name, (), {})


def released_module(path: Path) -> types.ModuleType:
    """Import the released ``aspc.py`` with stand-ins for the imports its update does not use."""
    source = path / RELEASED_FILE if path.is_dir() else path
    if not source.is_file():
        raise SystemExit(f"{source}: not found; pass a checkout of github.com/Colin-Jing/ASPC or its {RELEASED_FILE}")
    for name in ("d4rl", "gym", "wandb", "pyrallis"):
        if importlib.util.find_spec(name) is None:
            sys.modules[name] = _StandIn(name)
    spec = importlib.util.spec_from_file_location("released_aspc", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def released_runner(module: types.ModuleType, obs_dim: int, action_dim: int, batch: int = 256):
    """The released ``Adaptive_TD3_BC.train`` on minibatches of synthetic transitions."""
    import torchopt

    torch.manual_seed(0)
    actor = module.Actor(obs_dim, action_dim, 1.0)
    critic_1, critic_2 = module.Critic(obs_dim, action_dim), module.Critic(obs_dim, action_dim)
    vnet = module.Vnet(obs_dim)
    trainer = module.Adaptive_TD3_BC(
        max_action=1.0,
        actor=actor,
        actor_optimizer=torchopt.adam(lr=3e-4, use_accelerated_op=True),
        critic_1=critic_1,
        critic_1_optimizer=torch.optim.Adam(critic_1.parameters(), lr=3e-4),
        critic_2=critic_2,
        critic_2_optimizer=torch.optim.Adam(critic_2.parameters(), lr=3e-4),
        vnet=vnet,
        vnet_optimizer=torch.optim.Adam(vnet.parameters(), lr=3e-4),
        device="cpu",
        action_dim=action_dim,
    )
    trainer.reward_mean = 0.0  # set by the released training script, read by its update
    data = synthetic_transitions(obs_dim, action_dim)
    tensors = [
        torch.as_tensor(data.observations),
        torch.as_tensor(data.actions),
        torch.as_tensor(data.rewards).unsqueeze(-1),
        torch.as_tensor(data.next_observations),
        torch.as_tensor(data.terminals).unsqueeze(-1),
    ]

    def run(iterations: int) -> None:
        for _ in range(iterations):
            index = torch.randint(len(tensors[0]), (batch,))
            trainer.train([t[index] for t in tensors])

    run.batch = batch
    return run


def timed(run, iterations: int) -> float:
    start = time.perf_counter()
    run(iterations)
    return iterations / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("released", type=Path, help="Checkout of github.com/Colin-Jing/ASPC (or its algorithms/offline/aspc.py).")
    parser.add_argument("--iterations", type=int, default=200, help="Per timed block (a multiple of 20).")
    parser.add_argument("--repeats", type=int, default=5, help="Interleaved rounds.")
    parser.add_argument("--gemm", nargs="+", default=["default"], choices=gemm.MODES, help="GEMM modes of the project's rows.")
    parser.add_argument("--no-compile", action="store_true", help="Leave out the compiled rows (no C++ compiler, say).")
    parser.add_argument("--profile", action="store_true", help="Also print torch.profiler's top operators of the compiled ASPC update.")
    args = parser.parse_args()
    if args.iterations % CYCLE:
        parser.error(f"--iterations must be a multiple of {CYCLE}")
    if importlib.util.find_spec("torchopt") is None:
        print("skipped: the released update needs torchopt (`pip install torchopt`; not a dependency of this project).")
        return
    torch.set_num_threads(1)
    obs, act = 45, 24
    module = released_module(args.released)
    print(machine())
    print(f"pen shapes (obs {obs}, act {act}, batch 256); {args.repeats} interleaved rounds of {args.iterations} iterations, 1 thread\n")

    runners = {"released aspc": released_runner(module, obs, act)}
    for mode in args.gemm:
        suffix = "" if mode == "default" else f" @{mode}"
        for name in ("aspc", "td3bc"):
            variants = [("eager", False)] + ([] if args.no_compile else [("compiled", True)])
            for label, compiled in variants:
                gemm.set_gemm(mode)
                runners[f"{name} {label}{suffix}"] = with_gemm(package_runner(name, 1, obs, act, compile=compiled), mode)
                gemm.set_gemm("default")

    warmup = {}
    for key, run in runners.items():
        start = time.perf_counter()
        run(2 * CYCLE)  # allocator, first actor and alpha steps, compilation
        warmup[key] = time.perf_counter() - start
    recorder = GemmRecorder()
    with recorder:
        runners["aspc eager"](CYCLE)
    replay = GemmReplay(recorder.calls, CYCLE)

    rates = {key: [] for key in runners}
    roofs = {"mkl": [], "best": []}
    for _ in range(args.repeats):
        for key, run in runners.items():
            rates[key].append(timed(run, args.iterations))
        roofs["mkl"].append(1.0 / min(replay.seconds_per_iteration() for _ in range(3)))
        roofs["best"].append(1.0 / min(replay.best_seconds_per_iteration() for _ in range(3)))

    released = rates["released aspc"]
    print("| update | updates/s (median) | best round | vs released ASPC | of MKL roofline | of best-GEMM roofline | first 40 iterations, s |")
    print("|---|---|---|---|---|---|---|")
    for key in runners:
        ratio = statistics.median([x / y for x, y in zip(rates[key], released)])
        share = {k: statistics.median([x / r for x, r in zip(rates[key], roofs[k])]) for k in roofs}
        print(f"| {key} | {statistics.median(rates[key]):.1f} | {max(rates[key]):.1f} | {ratio:.2f}x | {share['mkl']:.0%} | "
              f"{share['best']:.0%} | {warmup[key]:.1f} |")
    flops = replay.flops
    print(f"\nASPC matmul work {flops / 1e9:.3f} GFLOP/iteration; rooflines (median): MKL {statistics.median(roofs['mkl']):.1f} "
          f"updates/s ({flops * statistics.median(roofs['mkl']) / 1e9:.1f} GFLOP/s), best kernel per product "
          f"{statistics.median(roofs['best']):.1f} updates/s ({flops * statistics.median(roofs['best']) / 1e9:.1f} GFLOP/s)")
    for key in [k for k in runners if k.startswith("td3bc")]:
        print(f"{key}: {statistics.median(rates[key]):.1f} updates/s = {statistics.median(rates[key]) / JAX_TD3BC_ONE_CORE:.2f}x "
              f"the one-core JAX TD3+BC* figure of issue 21 ({JAX_TD3BC_ONE_CORE:.0f}/s, another machine)")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        key = "aspc compiled" if "aspc compiled" in runners else "aspc eager"
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            runners[key](args.iterations)
        print(f"\nprofile of {key}, {args.iterations} iterations (self CPU time):")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
