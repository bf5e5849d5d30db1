"""float32 GEMM kernels on this CPU at the update's shapes: aten's (MKL) against oneDNN's.

For every linear layer of the TD3+BC/ASPC networks at batch 256 (pen shapes: 45-d states, 24-d
actions, so a 69-wide critic input) the three products of a layer, ``x @ W`` (forward),
``g @ W^T`` (input gradient) and ``x^T @ g`` (weight gradient), and the twin critic's batched
``(2, B, in) @ (2, in, out)``, each timed on both kernels interleaved (best of 7 blocks), plus
square products for the core's peak. oneDNN is called as the project calls it
(``metaconstraint.engine.gemm``: its inner product on the operands' own layouts), so its per-call
overhead is included.

    OMP_NUM_THREADS=1 python benchmarks/bench_gemm.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_update import machine  # noqa: E402

from metaconstraint.engine import gemm  # noqa: E402


def rate(fn, flops: float, calls: int, blocks: int = 7) -> float:
    """GFLOP/s of the fastest block of ``calls`` calls."""
    fn()
    best = float("inf")
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return flops / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--calls", type=int, default=30, help="Calls per timed block.")
    args = parser.parse_args()
    if not gemm.onednn_available():
        print("skipped: this torch build has no oneDNN.")
        return
    print(machine() + "\n")
    print("| product | shape (m x k x n) | aten (MKL) GFLOP/s | oneDNN GFLOP/s | oneDNN / aten |")
    print("|---|---|---|---|---|")
    onednn = gemm._onednn_2d
    b = args.batch
    rows = []
    for fan_in, fan_out in ((45, 256), (69, 256), (256, 256), (256, 24)):
        x, w, g = torch.randn(b, fan_in), torch.randn(fan_in, fan_out), torch.randn(b, fan_out)
        flops = 2.0 * b * fan_in * fan_out
        rows += [
            ("x @ W", f"{b} x {fan_in} x {fan_out}", lambda x=x, w=w: torch.mm(x, w), lambda x=x, w=w: onednn(x, w), flops),
            ("g @ W^T", f"{b} x {fan_out} x {fan_in}", lambda g=g, w=w: torch.mm(g, w.t()), lambda g=g, w=w: onednn(g, w.t()), flops),
            ("x^T @ g", f"{fan_in} x {b} x {fan_out}", lambda x=x, g=g: torch.mm(x.t(), g), lambda x=x, g=g: onednn(x.t(), g), flops),
        ]
    for fan_in in (69, 256):
        x, w = torch.randn(2, b, fan_in), torch.randn(2, fan_in, 256)
        rows.append(("twin x @ W (bmm)", f"2 x {b} x {fan_in} x 256", lambda x=x, w=w: torch.bmm(x, w),
                     lambda x=x, w=w: torch.ops.metaconstraint.onednn_bmm(x, w), 2 * 2.0 * b * fan_in * 256))
    for size in (256, 1024):
        x, w = torch.randn(size, size), torch.randn(size, size)
        rows.append(("square", f"{size}^3", lambda x=x, w=w: torch.mm(x, w), lambda x=x, w=w: onednn(x, w), 2.0 * size**3))
    for name, shape, aten_fn, onednn_fn, flops in rows:
        calls = max(1, int(args.calls * 3e7 / flops)) if flops > 3e7 else args.calls
        a, o = rate(aten_fn, flops, calls), rate(onednn_fn, flops, calls)
        print(f"| {name} | {shape} | {a:.0f} | {o:.0f} | {o / a:.2f}x |")


if __name__ == "__main__":
    main()
