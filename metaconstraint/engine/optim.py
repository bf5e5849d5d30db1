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
The step count lives in the state as a Python int: bias corrections and scheduled learning rates
are host floats, never a device sync (under ``torch.compile`` the count becomes a symbolic graph
input after one recompile, so a schedule does not recompile every step).

A learning rate is a float or a *schedule* ``count -> rate`` of the optimizer's own step count
(0-based: the rate of the ``count + 1``-th step), as in optax. Gradient transformations
(:func:`clip_by_global_norm`) go in front of an optimizer with :func:`chain`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Union

import torch
from torch import Tensor

Params = dict[str, Tensor]
OptState = dict[str, Any]
Schedule = Callable[[int], float]
"""``count -> learning rate`` of the step after ``count`` steps."""
LearningRate = Union[float, Schedule]


def rate_at(learning_rate: LearningRate, count: int) -> float:
    """The learning rate of the step taken after ``count`` steps."""
    return learning_rate(count) if callable(learning_rate) else learning_rate


def cosine_decay(initial: float, total_steps: int) -> Schedule:
    r""":math:`\eta_k = \eta_0 \tfrac12\big(1 + \cos(\pi \min(k, K)/K)\big)` (``CosineAnnealingLR`` to 0 over ``K`` steps)."""

    def schedule(count: int) -> float:
        return initial * 0.5 * (1.0 + math.cos(math.pi * min(count, total_steps) / total_steps))

    return schedule


def exponential_decay(initial: float, final_fraction: float, decay_steps: int | None) -> Schedule:
    r""":math:`\eta_k = \eta_0 f^{\min(k, K)/K}`: the fraction ``f`` of the start after ``K`` steps, then
    constant (``ExponentialLR`` with ``gamma = f^{1/K}``, stopped at ``K``); ``K = None``: constant."""

    def schedule(count: int) -> float:
        if not decay_steps:
            return initial
        return initial * final_fraction ** (min(count, decay_steps) / decay_steps)

    return schedule


@dataclass(frozen=True)
class Optimizer:
    """``init(params) -> state`` and ``step(grads, state, params, differentiable=None) -> (params, state)``;
    ``learning_rate``: a float or a schedule of ``state["count"]``."""

    init: Callable[[Params], OptState]
    step: Callable[..., tuple[Params, OptState]]
    learning_rate: LearningRate

    def rate_at(self, count: int) -> float:
        """The learning rate of the step taken after ``count`` steps."""
        return rate_at(self.learning_rate, count)


def sgd(learning_rate: LearningRate, momentum: float = 0.0) -> Optimizer:
    r"""SGD with optional heavy-ball momentum, as ``torch.optim.SGD`` (no dampening/nesterov).

    .. math:: b_t = \mu b_{t-1} + g_t,\qquad \theta_{t+1} = \theta_t - \eta_t\, b_t
    """

    def init(params: Params) -> OptState:
        state: OptState = {"count": 0}
        if momentum:
            state["momentum"] = {k: torch.zeros_like(p) for k, p in params.items()}
        return state

    def step(grads: Params, state: OptState, params: Params, differentiable: bool | None = None):
        eta = rate_at(learning_rate, state["count"])
        if momentum:
            first = state["count"] == 0
            buf = {k: g if first else momentum * state["momentum"][k] + g for k, g in grads.items()}
            new_params = {k: p - eta * buf[k] for k, p in params.items()}
            return new_params, {"count": state["count"] + 1, "momentum": buf}
        return {k: p - eta * grads[k] for k, p in params.items()}, {"count": state["count"] + 1}

    return Optimizer(init=init, step=step, learning_rate=learning_rate)


def _safe_sqrt(x: Tensor) -> Tensor:
    """``sqrt(x)`` whose derivative is 0 (not inf) where ``x == 0``.

    Adam's second moment is exactly zero for a parameter whose gradient is always zero (e.g. the
    weights of a state feature that is constant in the dataset). There ``d sqrt(v)/dv = inf`` meets
    ``dv/dalpha = 0`` and autograd returns NaN for the whole meta-gradient. The value is unchanged,
    so the step still equals ``torch.optim.Adam``'s.
    """
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))


def adam(learning_rate: LearningRate, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> Optimizer:
    r"""Adam, step for step equal to ``torch.optim.Adam`` (``amsgrad=False``, no weight decay).

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,\\
        \theta_{t+1} = \theta_t - \frac{\eta_t}{1-\beta_1^t}\,
            \frac{m_t}{\sqrt{v_t}/\sqrt{1-\beta_2^t} + \epsilon}

    When any input requires grad (a virtual step), or ``differentiable`` says so (a virtual step
    under ``torch.func.grad``), the update is written out of place with a NaN-safe square root;
    otherwise it runs in place in ``torch._fused_adam_`` (donated buffers).
    """
    return _adam(learning_rate, betas, eps, weight_decay=0.0)


def adamw(
    learning_rate: LearningRate, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2
) -> Optimizer:
    r"""Adam with decoupled weight decay, step for step equal to ``torch.optim.AdamW``:
    :math:`\theta_{t+1} = (1 - \eta_t\lambda)\,\theta_t - \frac{\eta_t}{1-\beta_1^t}\frac{m_t}{\sqrt{v_t}/\sqrt{1-\beta_2^t} + \epsilon}`
    (the decay does not pass through the moments)."""
    return _adam(learning_rate, betas, eps, weight_decay)


def _adam(learning_rate: LearningRate, betas: tuple[float, float], eps: float, weight_decay: float) -> Optimizer:
    beta1, beta2 = betas

    def init(params: Params) -> OptState:
        return {
            "count": 0,
            "exp_avg": {k: torch.zeros_like(p) for k, p in params.items()},
            "exp_avg_sq": {k: torch.zeros_like(p) for k, p in params.items()},
        }

    def step(grads: Params, state: OptState, params: Params, differentiable: bool | None = None):
        eta = rate_at(learning_rate, state["count"])
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
            if weight_decay:
                p_old = [pi * (1.0 - eta * weight_decay) for pi in p_old]
            m = [beta1 * mi + (1.0 - beta1) * gi for mi, gi in zip(m_old, g)]
            v = [beta2 * vi + (1.0 - beta2) * gi * gi for vi, gi in zip(v_old, g)]
            p = [pi - step_size * mi / (sqrt(vi) / bias2_sqrt + eps) for pi, mi, vi in zip(p_old, m, v)]
        else:
            m, v, p = m_old, v_old, p_old
            _fused_adam_in_place(p, g, m, v, t, eta, beta1, beta2, eps, weight_decay)
        new_state = {"count": t, "exp_avg": dict(zip(keys, m)), "exp_avg_sq": dict(zip(keys, v))}
        return dict(zip(keys, p)), new_state

    return Optimizer(init=init, step=step, learning_rate=learning_rate)


def _fused_adam_in_place(params, grads, exp_avg, exp_avg_sq, count, lr, beta1, beta2, eps, weight_decay) -> None:
    """``torch.optim.Adam(fused=True)``'s kernel (``AdamW``'s with a decoupled ``weight_decay``) on
    lists of tensors, step ``count`` (1-based)."""
    steps = [torch.full((), float(count), device=params[0].device)] * len(params)
    kernel = torch._fused_adamw_ if weight_decay else torch._fused_adam_
    kernel(
        params, grads, exp_avg, exp_avg_sq, [], steps,
        lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay, eps=eps, amsgrad=False, maximize=False,
    )


@dataclass(frozen=True)
class GradientTransformation:
    """``init(params) -> state`` and ``update(grads, state, params) -> (grads, state)``: what a
    gradient becomes before an optimizer takes it (see :func:`chain`)."""

    init: Callable[[Params], Any]
    update: Callable[[Params, Any, Params], tuple[Params, Any]]


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    r"""Scale each member's gradients by :math:`\min\big(1, c / (\lVert g\rVert_2 + 10^{-6})\big)`,
    :math:`\lVert g\rVert_2` over every tensor of the tree (``torch.nn.utils.clip_grad_norm_``).

    Tensors carry the engine's leading member dimension ``M``: the norm is taken per member, over
    every other dimension, so members are clipped independently (a tree of ``(M, ...)`` tensors ->
    norms ``(M,)``)."""

    def update(grads: Params, state: Any, params: Params) -> tuple[Params, Any]:
        squares = sum(g.pow(2).flatten(1).sum(1) for g in grads.values())  # (M,)
        scale = torch.clamp(max_norm / (squares.sqrt() + 1e-6), max=1.0)
        return {k: g * scale.reshape(-1, *[1] * (g.dim() - 1)) for k, g in grads.items()}, state

    return GradientTransformation(init=lambda params: {}, update=update)


def chain(*parts: GradientTransformation | Optimizer) -> Optimizer:
    """``chain(t_1, ..., t_n, opt)``: the gradient passes through ``t_1 ... t_n`` in order, then
    ``opt`` steps with it. State: ``{"transforms": (s_1, ..., s_n), "optimizer": opt state}``."""
    *transforms, optimizer = parts
    if not isinstance(optimizer, Optimizer) or not all(isinstance(t, GradientTransformation) for t in transforms):
        raise TypeError("chain(transform, ..., optimizer): gradient transformations first, one optimizer last")

    def init(params: Params) -> OptState:
        return {"transforms": tuple(t.init(params) for t in transforms), "optimizer": optimizer.init(params)}

    def step(grads: Params, state: OptState, params: Params, differentiable: bool | None = None):
        transform_states = []
        for transform, transform_state in zip(transforms, state["transforms"]):
            grads, transform_state = transform.update(grads, transform_state, params)
            transform_states.append(transform_state)
        new_params, optimizer_state = optimizer.step(grads, state["optimizer"], params, differentiable=differentiable)
        return new_params, {"transforms": tuple(transform_states), "optimizer": optimizer_state}

    return Optimizer(init=init, step=step, learning_rate=optimizer.learning_rate)


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
