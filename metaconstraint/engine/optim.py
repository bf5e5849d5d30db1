"""Functional, differentiable optimizers over parameter dicts.

An optimizer is a pair of pure functions (as in optax / TorchOpt)::

    state = opt.init(params)
    new_params, new_state = opt.step(grads, state, params)

``params``/``grads`` are ``dict[str, Tensor]``. The same ``step`` serves the *virtual* step of a
bilevel update, where nothing is mutated and the new parameters stay a differentiable function of
the gradients (and so of the meta-parameters), and the real update. In the real update (no input
requires grad) ``step`` *donates* the buffers of ``params`` and ``state``, as JAX does: it updates
them in place with PyTorch's fused kernels and returns them, so the caller must keep no reference
to the old values. (Fresh allocations of the full parameter set cost 5x the update itself on CPU.)
The step count lives in the state as a Python int: bias corrections are host floats, never a
device sync.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

Params = dict[str, Tensor]
OptState = dict[str, Any]


@dataclass(frozen=True)
class Optimizer:
    """``init(params) -> state`` and ``step(grads, state, params, lr=None) -> (params, state)``."""

    init: Callable[[Params], OptState]
    step: Callable[..., tuple[Params, OptState]]
    lr: float


def sgd(lr: float, momentum: float = 0.0) -> Optimizer:
    r"""SGD with optional heavy-ball momentum, as ``torch.optim.SGD`` (no dampening/nesterov).

    .. math:: b_t = \mu b_{t-1} + g_t,\qquad \theta_{t+1} = \theta_t - \eta\, b_t
    """

    def init(params: Params) -> OptState:
        state: OptState = {"count": 0}
        if momentum:
            state["momentum"] = {k: torch.zeros_like(p) for k, p in params.items()}
        return state

    default_lr = lr

    def step(grads: Params, state: OptState, params: Params, lr: float | Tensor | None = None, differentiable: bool | None = None):
        eta = lr if lr is not None else default_lr
        if momentum:
            first = state["count"] == 0
            buf = {k: g if first else momentum * state["momentum"][k] + g for k, g in grads.items()}
            new_params = {k: p - eta * buf[k] for k, p in params.items()}
            return new_params, {"count": state["count"] + 1, "momentum": buf}
        return {k: p - eta * grads[k] for k, p in params.items()}, {"count": state["count"] + 1}

    return Optimizer(init=init, step=step, lr=lr)


def _safe_sqrt(x: Tensor) -> Tensor:
    """``sqrt(x)`` whose derivative is 0 (not inf) where ``x == 0``.

    Adam's second moment is exactly zero for a parameter whose gradient is always zero (e.g. the
    weights of a state feature that is constant in the dataset). There ``d sqrt(v)/dv = inf`` meets
    ``dv/dalpha = 0`` and autograd returns NaN for the whole meta-gradient. The value is unchanged,
    so the step still equals ``torch.optim.Adam``'s.
    """
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))


def adam(lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> Optimizer:
    r"""Adam, step for step equal to ``torch.optim.Adam`` (``amsgrad=False``, no weight decay).

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,\\
        \theta_{t+1} = \theta_t - \frac{\eta}{1-\beta_1^t}\,
            \frac{m_t}{\sqrt{v_t}/\sqrt{1-\beta_2^t} + \epsilon}

    When any input requires grad (a virtual step), or ``differentiable`` says so (a virtual step
    under ``torch.func.grad``), the update is written out of place with a NaN-safe square root;
    otherwise it runs in place in ``torch._fused_adam_`` (donated buffers). ``lr`` may be a tensor
    (a learning rate that changes between calls of a compiled graph without recompiling it).
    """
    beta1, beta2 = betas
    default_lr = lr

    def init(params: Params) -> OptState:
        return {
            "count": 0,
            "exp_avg": {k: torch.zeros_like(p) for k, p in params.items()},
            "exp_avg_sq": {k: torch.zeros_like(p) for k, p in params.items()},
        }

    def step(grads: Params, state: OptState, params: Params, lr: float | Tensor | None = None, differentiable: bool | None = None):
        eta = lr if lr is not None else default_lr
        t = state["count"] + 1
        step_size = eta / (1.0 - beta1**t)
        bias2_sqrt = math.sqrt(1.0 - beta2**t)
        keys = list(params)
        g = [grads[k] for k in keys]
        m_old = [state["exp_avg"][k] for k in keys]
        v_old = [state["exp_avg_sq"][k] for k in keys]
        p_old = [params[k] for k in keys]
        if differentiable is None:  # torch.func transforms say so explicitly: their tensors do not require grad
            differentiable = torch.is_grad_enabled() and any(x.requires_grad for x in g + p_old)
        if differentiable or torch.compiler.is_compiling() or isinstance(eta, Tensor):
            # compiled: out of place too, the compiler fuses each parameter's update into one kernel
            sqrt = _safe_sqrt if differentiable else torch.sqrt
            m = [beta1 * mi + (1.0 - beta1) * gi for mi, gi in zip(m_old, g)]
            v = [beta2 * vi + (1.0 - beta2) * gi * gi for vi, gi in zip(v_old, g)]
            p = [pi - step_size * mi / (sqrt(vi) / bias2_sqrt + eps) for pi, mi, vi in zip(p_old, m, v)]
        else:
            m, v, p = m_old, v_old, p_old
            _fused_adam_in_place(p, g, m, v, t, eta, beta1, beta2, eps)
        new_state = {"count": t, "exp_avg": dict(zip(keys, m)), "exp_avg_sq": dict(zip(keys, v))}
        return dict(zip(keys, p)), new_state

    return Optimizer(init=init, step=step, lr=lr)


def _fused_adam_in_place(params, grads, exp_avg, exp_avg_sq, count, lr, beta1, beta2, eps) -> None:
    """``torch.optim.Adam(fused=True)``'s kernel on lists of tensors, step ``count`` (1-based)."""
    steps = [torch.full((), float(count), device=params[0].device)] * len(params)
    torch._fused_adam_(
        params, grads, exp_avg, exp_avg_sq, [], steps,
        lr=lr, beta1=beta1, beta2=beta2, weight_decay=0.0, eps=eps, amsgrad=False, maximize=False,
    )


def value_and_grad(loss_fn: Callable[[Params], tuple[Tensor, Any]], params: Params) -> tuple[Params, Tensor, Any]:
    """``(grads, loss, aux)`` of ``loss_fn(params) -> (scalar loss, aux)``; ``loss`` and ``aux`` detached.

    Eagerly by ``torch.autograd.grad`` on detached leaves; under ``torch.compile`` by
    ``torch.func.grad``, which the compiler traces into the same graph as the forward pass
    (``autograd.grad`` would split the graph there and leave the backward eager).
    """
    if torch.compiler.is_compiling():

        def with_loss(p):
            loss, aux = loss_fn(p)
            return loss, (loss, aux)

        grads, (loss, aux) = torch.func.grad(with_loss, has_aux=True)(params)
        return grads, loss.detach(), detach_tree(aux)
    leaf = {k: v.detach().requires_grad_() for k, v in params.items()}
    with torch.enable_grad():
        loss, aux = loss_fn(leaf)
        grads = torch.autograd.grad(loss, list(leaf.values()))
    return dict(zip(leaf, grads)), loss.detach(), detach_tree(aux)


def detach_tree(tree: Any) -> Any:
    """Detach every tensor in a nested dict/list/tuple; other leaves pass through."""
    if isinstance(tree, Tensor):
        return tree.detach()
    if isinstance(tree, dict):
        return {k: detach_tree(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(detach_tree(v) for v in tree)
    return tree
