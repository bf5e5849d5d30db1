"""Training-update speed, with its yardsticks measured in the same process.

For every registered algorithm (and the eager reference of TD3+BC and ASPC, ``eager_reference.py``):

- updates/s (iterations/s) and seed-updates/s, for one seed and for stacked seeds (``--seeds``);
- the update's matrix-multiply FLOPs, counted from the shapes of the matrix products it actually
  runs (forward and backward, recorded over one full 20-iteration cycle, so actor and alpha steps
  are averaged in);
- the **matmul roofline**: the same matrix products replayed alone, at the same shapes and memory
  layouts, in the same run; ``of roofline`` = updates/s over the rate those products alone allow,
  i.e. the share of the update's time that is matrix multiplication at the machine's GEMM speed;
- ASPC / TD3+BC (time per iteration) and the ratio to the eager reference, whose updates/s are
  printed beside it.

Pen shapes by default (45-d states, 24-d actions), each algorithm at its own default batch (256,
ReBRAC 1024). Runs are interleaved round by round (A, B, ..., GEMM replay, A, B, ...); ratios are
medians of per-round ratios, so they are measured side by side on a loaded machine; ``best`` is the
fastest round (closest to an idle machine).

    OMP_NUM_THREADS=1 python benchmarks/bench_update.py
    OMP_NUM_THREADS=1 python benchmarks/bench_update.py --algorithms td3bc aspc --seeds 1 5 --profile aspc
    OMP_NUM_THREADS=2 python benchmarks/bench_update.py --algorithms td3bc aspc --seeds 1 5 --compile

``--compile`` adds the compiled update (the run option) of td3bc and aspc beside the eager one,
with its compile time and the break-even point; its FLOPs and roofline are the eager update's
(the same products).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eager_reference import EagerTD3BC  # noqa: E402

from metaconstraint.algorithms import ALGORITHMS  # noqa: E402
from metaconstraint.algorithms.base import ProblemSpec  # noqa: E402
from metaconstraint.engine import gemm  # noqa: E402
from metaconstraint.rl.buffer import MemberSampler, OfflineBuffer, StateNormalizer  # noqa: E402

CYCLE = 20  # policy_freq x alpha_interval: one actor step in 2, one alpha step in 20
aten = torch.ops.aten
GEMMS = {aten.mm.default, aten.bmm.default, aten.addmm.default, aten.baddbmm.default, aten.mv.default, aten.dot.default}


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


def analytic_flops(obs_dim: int, action_dim: int, batch: int, meta_interval: int | None) -> float:
    """Matmul FLOPs of one TD3+BC/ASPC iteration from the layer shapes, for cross-checking the count.

    A linear layer costs ``2 B in out`` forward; its backward to weights and to inputs twice that.
    Critic step: target actor, two target critics forward; two critics forward + backward (weights,
    and inputs of every layer but the first). Actor step (every 2nd): actor forward + backward (weights; the
    first layer needs no input gradient), Q1 forward + backward to its input only. Alpha step (ASPC,
    every ``meta_interval``): the second-order graph, estimated as three more actor steps.
    """
    actor = [(obs_dim, 256), (256, 256), (256, action_dim)]
    critic = [(obs_dim + action_dim, 256), (256, 256), (256, 256), (256, 1)]
    fwd = lambda layers: sum(2 * batch * i * o for i, o in layers)  # noqa: E731
    critic_step = fwd(actor) + 2 * fwd(critic) + 2 * (3 * fwd(critic) - 2 * batch * (obs_dim + action_dim) * 256)
    actor_step = fwd(actor) + 2 * fwd(actor) - 2 * batch * obs_dim * 256 + fwd(critic) + fwd(critic)
    per_iteration = critic_step + actor_step / 2
    if meta_interval:
        per_iteration += 3 * actor_step / meta_interval
    return float(per_iteration)


class GemmRecorder(TorchDispatchMode):
    """Records every matrix product (op, argument shapes and strides) dispatched while active."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in GEMMS:
            layout = tuple((a.shape, a.stride(), a.dtype) if isinstance(a, torch.Tensor) else a for a in args)
            self.calls.append((func, layout, kwargs or {}))
        return func(*args, **(kwargs or {}))


def gemm_flops(func, layout) -> float:
    shapes = [entry[0] for entry in layout if isinstance(entry, tuple)]
    if func in (aten.mm.default, aten.addmm.default):
        a, b = shapes[-2], shapes[-1]
        return 2.0 * a[0] * a[1] * b[1]
    if func in (aten.bmm.default, aten.baddbmm.default):
        a, b = shapes[-2], shapes[-1]
        return 2.0 * a[0] * a[1] * a[2] * b[2]
    if func is aten.mv.default:
        return 2.0 * shapes[0][0] * shapes[0][1]
    return 2.0 * shapes[0][0]


def _like(shape, stride, dtype) -> torch.Tensor:
    """Random values viewed with ``shape`` and ``stride`` (expanded, transposed layouts included)."""
    size = 1 + sum((n - 1) * st for n, st in zip(shape, stride) if n > 0)
    return torch.randn(size, dtype=dtype).as_strided(shape, stride)


class GemmReplay:
    """The recorded products, replayed on fresh tensors of the same shapes and layouts."""

    def __init__(self, calls: list[tuple], iterations: int):
        self.iterations = iterations
        self.flops = sum(gemm_flops(f, layout) for f, layout, _ in calls) / iterations
        self.calls = []
        for func, layout, kwargs in calls:
            args = [_like(*e) if isinstance(e, tuple) else e for e in layout]
            self.calls.append((func, args, kwargs))

    def seconds_per_iteration(self) -> float:
        start = time.perf_counter()
        for func, args, kwargs in self.calls:
            func(*args, **kwargs)
        return (time.perf_counter() - start) / self.iterations

    def best_seconds_per_iteration(self) -> float:
        """The same products, each on the faster of aten's (MKL) and oneDNN's kernel (chosen once,
        call by call), replayed in sequence like :meth:`seconds_per_iteration`."""
        if not hasattr(self, "best_calls"):
            self.best_calls = []
            for func, args, kwargs in self.calls:
                kernels = [lambda func=func, args=args, kwargs=kwargs: func(*args, **kwargs)]
                routed = onednn_replay(func, args)
                if routed is not None:
                    kernels.append(routed)
                self.best_calls.append(min(kernels, key=lambda kernel: gemm.best_time(kernel, 3)))
        start = time.perf_counter()
        for kernel in self.best_calls:
            kernel()
        return (time.perf_counter() - start) / self.iterations


def onednn_replay(func, args):
    """A recorded product through oneDNN (``None`` for the ops it has no kernel for here)."""
    if not gemm.onednn_available():
        return None
    onednn = torch.ops.metaconstraint
    if func is aten.mm.default:
        return lambda: onednn.onednn_mm(args[0], args[1])
    if func is aten.bmm.default:
        return lambda: onednn.onednn_bmm(args[0], args[1])
    if func is aten.addmm.default:
        return lambda: onednn.onednn_mm(args[1], args[2]) + args[0]
    if func is aten.baddbmm.default:
        return lambda: onednn.onednn_bmm(args[1], args[2]) + args[0]
    return None


def peak_gemm(size: int, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of one square float32 product on aten's kernel (MKL) and on oneDNN's."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    rates = {"aten": 2.0 * size**3 / gemm.best_time(lambda: torch.mm(a, b), repeats) / 1e9}
    if gemm.onednn_available():
        rates["onednn"] = 2.0 * size**3 / gemm.best_time(lambda: torch.ops.metaconstraint.onednn_mm(a, b), repeats) / 1e9
    return rates


def with_gemm(run, mode: str):
    """``run`` with the process's GEMM kernel set to ``mode`` for each call (interleaved variants)."""

    def wrapped(iterations: int) -> None:
        gemm.set_gemm(mode)
        try:
            run(iterations)
        finally:
            gemm.set_gemm("default")

    wrapped.batch = run.batch
    return wrapped


def package_runner(name: str, members: int, obs_dim: int, action_dim: int, steps: int = 1_000_000, compile: bool = False):
    cls = ALGORITHMS[name]
    algorithm = cls(cls.Config(), ProblemSpec(obs_dim, action_dim, 1.0, steps), members, torch.device("cpu"))
    if compile:
        algorithm.compile()
    buffer = OfflineBuffer(synthetic_transitions(obs_dim, action_dim), StateNormalizer.identity(obs_dim))
    sampler = MemberSampler(buffer, algorithm.batch_size, list(range(members)))
    run = update_loop(algorithm, sampler, algorithm.init_state(list(range(members))))
    run.batch = algorithm.batch_size
    return run


def update_loop(algorithm, sampler, state):
    """``run(n)``: ``n`` more iterations of ``algorithm.update``, counting on from the last call."""
    counter = {"it": 0, "state": state}

    def run(iterations: int) -> None:
        for _ in range(iterations):
            counter["it"] += 1
            counter["state"], _ = algorithm.update(counter["state"], sampler, counter["it"])

    return run


def eager_runner(adaptive: bool, obs_dim: int, action_dim: int, batch: int = 256):
    torch.manual_seed(0)
    agent = EagerTD3BC(obs_dim, action_dim, adaptive=adaptive)
    data = synthetic_transitions(obs_dim, action_dim)
    tensors = [torch.as_tensor(x) for x in (data.observations, data.actions, data.rewards, data.next_observations, data.terminals)]

    def run(iterations: int) -> None:
        for _ in range(iterations):
            index = torch.randint(len(tensors[2]), (batch,))
            agent.update([t[index] for t in tensors])

    run.batch = batch
    return run


def plain(name: str) -> str:
    """The algorithm of a row name (``aspc+compile@auto`` -> ``aspc``)."""
    return name.split("@")[0].removesuffix("+compile")


def timed(run, iterations: int) -> float:
    start = time.perf_counter()
    run(iterations)
    return iterations / (time.perf_counter() - start)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} logical CPU(s), {platform.system()} {platform.machine()}, python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} thread(s)), load average {load:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--obs-dim", type=int, default=45)
    parser.add_argument("--action-dim", type=int, default=24)
    parser.add_argument("--iterations", type=int, default=200, help="Per timed block (a multiple of 20).")
    parser.add_argument("--repeats", type=int, default=5, help="Interleaved rounds.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 5], help="Member counts (stacked seeds).")
    parser.add_argument("--algorithms", nargs="+", default=None, help="Default: every registered algorithm.")
    parser.add_argument("--stacked", nargs="+", default=["td3bc", "aspc"], help="Algorithms also timed at member counts > 1.")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's).")
    parser.add_argument("--profile", default=None, help="Also print a torch.profiler table of this algorithm (1 seed).")
    parser.add_argument("--compile", nargs="*", default=None, metavar="ALGORITHM",
                        help="Also time these algorithms (default: td3bc aspc) compiled (the run option), beside the eager ones.")
    parser.add_argument("--gemm", nargs="+", default=["default"], choices=gemm.MODES,
                        help="GEMM kernel modes (the run option gemm) to time side by side; rows of other modes than "
                        "default are marked @mode. Default: default only.")
    args = parser.parse_args()
    if args.iterations % CYCLE:
        parser.error(f"--iterations must be a multiple of {CYCLE}")
    if args.threads:
        torch.set_num_threads(args.threads)
    obs, act = args.obs_dim, args.action_dim
    names = args.algorithms or sorted(ALGORITHMS)
    print(machine())
    print(f"shapes: obs {obs}, act {act}; {args.repeats} interleaved rounds of {args.iterations} iterations\n")

    runners = {}
    for name in names:
        for members in args.seeds:
            if members == 1 or name in args.stacked:
                runners[(name, members)] = package_runner(name, members, obs, act)
    compiled = [] if args.compile is None else (args.compile or ["td3bc", "aspc"])
    for name in compiled:
        for members in args.seeds:
            if (name, members) in runners:
                runners[(name + "+compile", members)] = package_runner(name, members, obs, act, compile=True)
    for mode in [m for m in args.gemm if m != "default"]:
        for (name, members) in list(runners):
            if "@" in name or name.startswith("eager-"):
                continue
            gemm.set_gemm(mode)  # compiled runners take their graph pass when built
            runners[(f"{name}@{mode}", members)] = with_gemm(
                package_runner(name.removesuffix("+compile"), members, obs, act, compile=name.endswith("+compile")), mode
            )
            gemm.set_gemm("default")
    peaks = {size: peak_gemm(size) for size in (256, 1024)}
    print("square float32 GEMM, GFLOP/s: " + "; ".join(
        f"{size}^3 " + ", ".join(f"{kernel} {rate:.0f}" for kernel, rate in rates.items()) for size, rates in peaks.items()
    ) + "\n")
    if "td3bc" in names:
        runners[("eager-td3bc", 1)] = eager_runner(False, obs, act)
    if "aspc" in names:
        runners[("eager-aspc", 1)] = eager_runner(True, obs, act)

    replays, compile_seconds = {}, {}
    for key, run in runners.items():
        start = time.perf_counter()
        run(2 * CYCLE)  # warm-up: allocator, first actor and alpha steps (and compilation)
        if key[0].split("@")[0].endswith("+compile"):
            compile_seconds[key] = time.perf_counter() - start
        if key[0].split("@")[0].endswith("+compile") or "@" in key[0]:
            continue
        recorder = GemmRecorder()
        with recorder:
            run(CYCLE)
        replays[key] = GemmReplay(recorder.calls, CYCLE)
    for key in runners:  # compiled and rerouted updates run the same products as the eager default one
        replays.setdefault(key, replays[(plain(key[0]), key[1])])

    rates: dict = {key: [] for key in runners}
    roofline: dict = {key: [] for key in runners}
    best_roofline: dict = {key: [] for key in runners}
    for _ in range(args.repeats):
        for key, run in runners.items():
            rates[key].append(timed(run, args.iterations))
            roofline[key].append(1.0 / min(replays[key].seconds_per_iteration() for _ in range(3)))
            best_roofline[key].append(1.0 / min(replays[key].best_seconds_per_iteration() for _ in range(3)))

    def ratio(a, b, invert=False):
        values = [(y / x if invert else x / y) for x, y in zip(rates[a], rates[b])]
        return statistics.median(values)

    print("| algorithm | seeds | batch | updates/s (median) | best | seed-updates/s | GFLOP/iter (matmul) | GEMM GFLOP/s at these shapes | "
          "matmul roofline, updates/s | of roofline | best-kernel GFLOP/s | best-GEMM roofline | of best roofline | "
          "vs eager reference | eager reference, updates/s | time vs TD3+BC | compiled vs eager | vs default gemm |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key in runners:
        name, members = key
        algorithm = plain(name)
        rate, best = statistics.median(rates[key]), max(rates[key])
        flops = replays[key].flops
        roof = statistics.median(roofline[key])
        share = statistics.median([r / f for r, f in zip(rates[key], roofline[key])])
        eager_key = ("eager-aspc" if algorithm in ("aspc", "eager-aspc") else "eager-td3bc", 1)
        vs_eager = eager_rate = ""
        if algorithm in ("td3bc", "aspc", "eager-td3bc", "eager-aspc") and eager_key in rates:
            vs_eager = f"{statistics.median([members * x / y for x, y in zip(rates[key], rates[eager_key])]):.2f}x"
            eager_rate = f"{statistics.median(rates[eager_key]):.1f}"
        vs_td3bc = ""
        base = ("eager-td3bc", 1) if name == "eager-aspc" else (name.replace("aspc", "td3bc"), members)
        if algorithm in ("aspc", "eager-aspc") and base in rates:
            vs_td3bc = f"{ratio(base, key):.3f}x"
        mode = name.split("@")[1] if "@" in name else ""
        uncompiled = (algorithm + (f"@{mode}" if mode else ""), members)
        vs_uncompiled = f"{ratio(key, uncompiled):.2f}x" if key in compile_seconds and uncompiled in rates else ""
        vs_default = f"{ratio(key, (name.split('@')[0], members)):.2f}x" if mode else ""
        best_roof = statistics.median(best_roofline[key])
        best_share = statistics.median([r / f for r, f in zip(rates[key], best_roofline[key])])
        print(
            f"| {name} | {members} | {runners[key].batch} | {rate:.1f} | {best:.1f} | {rate * members:.1f} | {flops / 1e9:.3f} | "
            f"{flops * roof / 1e9:.1f} | {roof:.1f} | {share:.0%} | {flops * best_roof / 1e9:.1f} | {best_roof:.1f} | {best_share:.0%} | "
            f"{vs_eager} | {eager_rate} | {vs_td3bc} | {vs_uncompiled} | {vs_default} |"
        )
    for key, seconds in compile_seconds.items():
        eager_key = (key[0].replace("+compile", ""), key[1])
        eager_rate, compiled_rate = statistics.median(rates[eager_key]), statistics.median(rates[key])
        saved = 1 / eager_rate - 1 / compiled_rate
        even = f"break-even after {seconds / saved:,.0f} iterations" if saved > 0 else "not faster: no break-even"
        print(f"{key[0]} x{key[1]}: first {2 * CYCLE} iterations (compilation included) took {seconds:.1f} s; {even}")
    for name, meta in (("td3bc", None), ("aspc", CYCLE)):
        if (name, 1) in replays:
            print(f"\nanalytic count from the layer shapes, {name}: {analytic_flops(obs, act, 256, meta) / 1e9:.3f} GFLOP/iter "
                  f"(recorded: {replays[(name, 1)].flops / 1e9:.3f})")
    if gemm.choices():
        chosen = gemm.choices()
        onednn = sorted(key for key, kernel in chosen.items() if kernel == "onednn")
        print(f"\ngemm auto: {len(chosen)} product shapes probed, oneDNN kept for {len(onednn)}: "
              + ", ".join(f"{m}x{k}x{n}{'T' if ta else ''}{'T' if tb else ''}" for m, k, n, ta, tb in onednn))
    threads = torch.get_num_threads()
    for key in runners:
        if key[1] > 1:
            print(f"{key[0]} x{key[1]}: {statistics.median(rates[key]) * key[1] / threads:.1f} seed-updates/s per core")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        run = runners[(args.profile, 1)]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run(args.iterations)
        print(f"\nprofile of {args.profile}, 1 seed, {args.iterations} iterations (self CPU time):")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
