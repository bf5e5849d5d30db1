r"""Matrix products routed to the fastest float32 kernel this CPU has.

torch's default CPU matmul goes through its BLAS (MKL in the official wheels). On some CPUs and
layouts another kernel already linked into torch is faster: oneDNN's inner product (the kernel
behind ``torch.ops.mkldnn._linear_pointwise``), which is written for the CPU it runs on. Which one
wins depends on the CPU and on the product's shape and layout (``x @ W`` forward, ``g @ W^T`` for
the input gradient, ``x^T @ g`` for the weight gradient), so it is **measured**, never guessed from
the CPU's vendor.

:func:`matmul` is ``a @ b`` (leading dimensions broadcast) under one of three modes
(:func:`set_gemm`):

- ``"default"``: ``torch.matmul``, nothing changes (what every run did before).
- ``"onednn"``: every 2-D product through oneDNN (forced; what the equality tests use).
- ``"auto"``: each product shape and layout timed once on both kernels the first time it is met
  (a few milliseconds, cached per process); oneDNN kept where it is faster by more than what
  routing a product costs.

Only float32 CPU tensors are routed; every other device and dtype (a GPU's cuBLAS, float64 in the
tests) takes ``torch.matmul`` unchanged. A routed product is an ``autograd.Function`` whose
backward is made of routed products again, so ``torch.autograd.grad(create_graph=True)``, the
bilevel step's grad-of-grad, ``torch.func.grad``/``vmap``/``jvp`` and ``torch.compile`` all see an
ordinary differentiable matmul:

.. math::
    C = AB, \qquad \bar A = \bar C B^\top, \qquad \bar B = A^\top \bar C, \qquad
    \dot C = \dot A B + A \dot B

with :math:`\bar A, \bar B` summed over the dimensions that were broadcast.
"""

from __future__ import annotations

import itertools
import time

import torch
from torch import Tensor
from torch._inductor.custom_graph_pass import CustomGraphPass
from torch._subclasses.fake_tensor import unset_fake_temporarily

MODES: tuple[str, ...] = ("auto", "default", "onednn")

_mode: dict[str, str] = {"mode": "default"}
# (rows, inner, cols, a transposed, b transposed) -> "onednn" | "aten"
_choice: dict[tuple, str] = {}
_overhead: dict[str, float] = {}


def onednn_available() -> bool:
    """Whether this torch build has oneDNN's fp32 inner product (``mkldnn._linear_pointwise``)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def set_gemm(mode: str) -> None:
    """Select how CPU float32 matrix products run for the rest of the process (see module docstring)."""
    if mode not in MODES:
        raise ValueError(f"gemm must be one of {', '.join(MODES)}, not {mode!r}")
    if mode != "default" and not onednn_available():
        mode = "default"  # nothing else to choose from in this build
    _mode["mode"] = mode
    if mode == "auto":
        _routing_overhead()  # measured here, outside any transform of the code that will probe


def gemm_mode() -> str:
    """The mode in effect (``"default"`` when oneDNN is missing from this build)."""
    return _mode["mode"]


def choices() -> dict[tuple, str]:
    """The kernel chosen per product key so far (``"auto"`` mode), for reports and benchmarks."""
    return dict(_choice)


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for ``a (..., m, k)`` and ``b (..., k, n)`` (leading dimensions broadcast)."""
    if _mode["mode"] == "default" or not _routable(a, b) or torch.compiler.is_compiling():
        # compiled graphs keep aten's products; GemmGraphPass reroutes them after differentiation
        # (Dynamo mis-traces custom Functions under torch.func.grad)
        return a @ b
    if _mode["mode"] == "auto" and not _pays(a, b):
        return a @ b
    return _RoutedMatmulWithJvp.apply(a, b)


def _routable(a: Tensor, b: Tensor) -> bool:
    return (
        a.device.type == "cpu" and b.device.type == "cpu"
        and a.dtype == torch.float32 and b.dtype == torch.float32
        and a.dim() >= 2 and b.dim() >= 2
    )


def _transposed(t: Tensor) -> bool:
    """Whether a 2-D operand is a transposed view (unit stride along its rows)."""
    return t.stride(-2) == 1 and t.stride(-1) != 1


def _onednn_2d(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` through oneDNN's inner product: ``linear(x, w) = x w^T`` with ``w = b^T`` ``(n, k)``."""
    return torch.ops.mkldnn._linear_pointwise(a, b.transpose(0, 1), None, "none", [], "")


@torch.library.custom_op("metaconstraint::onednn_mm", mutates_args=())
def _onednn_mm(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` (2-D) through oneDNN, as an op compiled graphs call opaquely (no autograd: it is
    only placed into graphs that are already differentiated, by :class:`GemmGraphPass`)."""
    return _onednn_2d(a, b)


@_onednn_mm.register_fake
def _(a: Tensor, b: Tensor) -> Tensor:
    return a.new_empty(a.shape[0], b.shape[1])


@torch.library.custom_op("metaconstraint::onednn_bmm", mutates_args=())
def _onednn_bmm(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for ``(N, m, k) @ (N, k, n)``, one oneDNN product per slice."""
    return torch.stack([_onednn_2d(x, y) for x, y in zip(a, b)])


@_onednn_bmm.register_fake
def _(a: Tensor, b: Tensor) -> Tensor:
    return a.new_empty(a.shape[0], a.shape[1], b.shape[2])


def best_time(fn, repeats: int) -> float:
    """The fastest of ``repeats`` calls of ``fn`` after one warm-up call, in seconds."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _operand(rows: int, cols: int, transposed: bool) -> Tensor:
    """Random values ``(rows, cols)``, stored transposed (column-major) if ``transposed``."""
    return torch.randn(cols, rows).transpose(0, 1) if transposed else torch.randn(rows, cols)


def _probe(key: tuple) -> str:
    """Time both kernels on fresh tensors of the key's shapes and layouts; the faster one's name.

    oneDNN must win by 3% to be kept (below that the timing cannot tell them apart), after paying
    for the routing itself (:func:`_routing_overhead`)."""
    if key in _choice:
        return _choice[key]
    rows, inner, cols, a_transposed, b_transposed = key
    with unset_fake_temporarily(), torch._C._DisableFuncTorch(), torch.no_grad():
        x, y = _operand(rows, inner, a_transposed), _operand(inner, cols, b_transposed)
        repeats = 5 if rows * inner * cols > 1 << 20 else 20
        aten = min(best_time(lambda: torch.mm(x, y), repeats) for _ in range(2))
        onednn = min(best_time(lambda: _onednn_2d(x, y), repeats) for _ in range(2))
    _choice[key] = "onednn" if onednn + _routing_overhead() < 0.97 * aten else "aten"
    return _choice[key]


def _routing_overhead() -> float:
    """Seconds a routed product costs beyond its kernel (the Function's Python, or the opaque op's
    dispatch in a compiled graph), measured once on an 8 x 8 product, when ``auto`` is selected."""
    if "overhead" not in _overhead:
        mode, _mode["mode"] = _mode["mode"], "onednn"  # the Function without probing its own shape
        try:
            with unset_fake_temporarily(), torch.no_grad():
                x = torch.randn(8, 8)
                routed = min(best_time(lambda: _RoutedMatmulWithJvp.apply(x, x), 20) for _ in range(2))
                direct = min(best_time(lambda: _onednn_2d(x, x), 20) for _ in range(2))
        finally:
            _mode["mode"] = mode
        _overhead["overhead"] = max(routed - direct, 0.0)
    return _overhead["overhead"]


def _kernel(a: Tensor, b: Tensor) -> str:
    """The kernel for one 2-D product: forced, or measured once per shape and layout."""
    if _mode["mode"] == "onednn":
        return "onednn"
    return _probe((int(a.shape[0]), int(a.shape[1]), int(b.shape[1]), _transposed(a), _transposed(b)))


def _slice_key(a: Tensor, b: Tensor) -> tuple:
    """The probe key of the 2-D products :func:`_product` runs for ``a @ b``."""
    if b.dim() == 2 and a.dim() > 2 and a.is_contiguous():
        return (a.numel() // a.shape[-1], a.shape[-1], b.shape[-1], False, _transposed(b))
    return (a.shape[-2], a.shape[-1], b.shape[-1], _transposed(a), _transposed(b))


def _pays(a: Tensor, b: Tensor) -> bool:
    """``auto``: whether oneDNN wins any of the three products of ``a @ b`` (forward, and the
    backward's ``grad b^T`` and ``a^T grad``); if none, ``a @ b`` stays on aten with no wrapper."""
    m, k, n, a_transposed, b_transposed = _slice_key(a, b)
    keys = ((m, k, n, a_transposed, b_transposed), (m, n, k, False, not b_transposed), (k, m, n, not a_transposed, False))
    return any(_probe(tuple(int(v) for v in key)) == "onednn" for key in keys)


def _product(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` on plain tensors, every 2-D slice through the chosen kernel."""
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    if not batch:
        return _onednn_2d(a, b) if _kernel(a, b) == "onednn" else torch.mm(a, b)
    if b.dim() == 2 and a.is_contiguous():
        # one weight for every row of a: a single call over the flattened rows
        rows = a.reshape(-1, a.shape[-1])
        flat = _onednn_2d(rows, b) if _kernel(rows, b) == "onednn" else torch.mm(rows, b)
        return flat.reshape(*a.shape[:-1], b.shape[-1])
    a_full = a.expand(*batch, *a.shape[-2:])
    b_full = b.expand(*batch, *b.shape[-2:])
    kernel = _kernel(a_full[(0,) * len(batch)], b_full[(0,) * len(batch)])
    if kernel == "aten":
        return torch.matmul(a, b)
    slices = [_onednn_2d(a_full[i], b_full[i]) for i in itertools.product(*map(range, batch))]
    return torch.stack(slices).reshape(*batch, a.shape[-2], b.shape[-1])


def _mapped(a: Tensor, b: Tensor, in_dims) -> tuple[Tensor, int]:
    """The vmap rule of ``a @ b``: the mapped dimension goes in front, padded so that both
    operands' own leading dimensions still line up from the right; an unmapped operand broadcasts."""
    rank = max(x.dim() - (d is not None) for x, d in zip((a, b), in_dims))

    def front(x, dim):
        if dim is None:
            return x
        x = x.movedim(dim, 0)
        return x.reshape(x.shape[0], *([1] * (rank - x.dim() + 1)), *x.shape[1:])

    return matmul(front(a, in_dims[0]), front(b, in_dims[1])), 0


def _reduce_to(grad: Tensor, shape: torch.Size) -> Tensor:
    """Sum a gradient over the dimensions broadcasting added or expanded."""
    return grad if grad.shape == shape else grad.sum_to_size(shape)


class _RoutedMatmul(torch.autograd.Function):
    """``a @ b`` through :func:`_product`, differentiable any number of times and under torch.func."""

    @staticmethod
    def forward(a: Tensor, b: Tensor) -> Tensor:
        return _product(a, b)

    @staticmethod
    def setup_context(ctx, inputs, output):
        a, b = inputs
        ctx.save_for_backward(a, b)
        ctx.save_for_forward(a, b)

    @staticmethod
    def backward(ctx, grad: Tensor):
        a, b = ctx.saved_tensors
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = _reduce_to(matmul(grad, b.transpose(-1, -2)), a.shape)
        if ctx.needs_input_grad[1]:
            grad_b = _reduce_to(matmul(a.transpose(-1, -2), grad), b.shape)
        return grad_a, grad_b

    @staticmethod
    def vmap(info, in_dims, a, b):
        return _mapped(a, b, in_dims)


class _RoutedMatmulWithJvp(_RoutedMatmul):
    """:class:`_RoutedMatmul` with forward-mode AD (``torch.func.jvp``), for eager code: Dynamo
    does not trace Functions that define ``jvp``, so compiled code takes the parent class."""

    @staticmethod
    def jvp(ctx, tangent_a, tangent_b):
        a, b = ctx.saved_tensors
        out = None
        if tangent_a is not None:
            out = matmul(tangent_a, b)
        if tangent_b is not None:
            term = matmul(a, tangent_b)
            out = term if out is None else out + term
        return out


class GemmGraphPass(CustomGraphPass):
    """Inductor post-grad pass: every float32 CPU ``mm``/``bmm`` of a compiled graph (forward and
    backward, already differentiated) whose kernel is oneDNN becomes :func:`_onednn_mm` /
    :func:`_onednn_bmm`. The choice is the same per-shape probe as in eager code."""

    def __call__(self, graph: torch.fx.Graph) -> None:
        aten = torch.ops.aten
        replacement = {aten.mm.default: torch.ops.metaconstraint.onednn_mm.default,
                       aten.bmm.default: torch.ops.metaconstraint.onednn_bmm.default}
        for node in list(graph.nodes):
            if node.op != "call_function" or node.target not in replacement:
                continue
            a, b = (arg.meta.get("val") for arg in node.args[:2])
            if a is None or b is None or not _routable(a, b):
                continue
            if a.dim() == 3:
                a, b = a[0], b[0]
            if _kernel(a, b) != "onednn":
                continue
            with graph.inserting_before(node):
                routed = graph.call_function(replacement[node.target], tuple(node.args[:2]))
            routed.meta.update(node.meta)
            node.replace_all_uses_with(routed)
            graph.erase_node(node)

    def uuid(self) -> str:
        # cached graphs depend on the mode; in "auto" also on this machine's probe (the cache is per machine)
        return f"metaconstraint-gemm-1-{_mode['mode']}"


def compile_options() -> dict:
    """``torch.compile(options=...)`` that route compiled products as this process's mode says."""
    if _mode["mode"] == "default":
        return {}
    return {"post_grad_custom_post_pass": GemmGraphPass()}
