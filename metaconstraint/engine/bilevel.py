r"""The bilevel step: an inner optimizer step made differentiable in the meta-parameters.

For parameters :math:`\theta`, meta-parameters :math:`\phi` (raw, e.g. :math:`\rho` with
:math:`\alpha = \mathrm{softplus}(\rho)`) and a batch :math:`b`:

.. math::
    \tilde\theta(\phi) = \mathrm{OptStep}\big(\nabla_\theta f(\theta, \phi, b)\big), \qquad
    \phi \leftarrow \phi - \eta_\phi \, \frac{\partial}{\partial\phi}
        \sum_j w_j\, \ell_j\big(\theta, \tilde\theta(\phi), \phi, b\big)

where ``OptStep`` is the policy's own optimizer written functionally (so Adam's live moments are
used). The outer losses :math:`\ell_j` see :math:`\phi` only as constants: they reach it through
:math:`\tilde\theta(\phi)`. The step :math:`\tilde\theta` is then committed as the real update.

Only meta-iterations (:func:`bilevel_step`, or :func:`functional_bilevel_step`, the same step
written with nested ``torch.func.grad`` so that ``torch.compile`` traces it whole) build the
second-order graph; every other iteration is a first-order :func:`inner_step`. Nothing here knows about reinforcement learning: the inner
objective, the outer losses and the context they share are supplied by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_unflatten

from metaconstraint.engine.members import per_member
from metaconstraint.engine.meta import MetaParameters
from metaconstraint.engine.optim import Optimizer, Params, detach_tree, value_and_grad

InnerObjective = Callable[[Params, dict[str, Tensor], dict[str, Tensor], dict[str, Any]], Tensor]
"""``f(params, meta, batch, frozen) -> scalar`` for one member."""


class cached_value:
    """``functools.cached_property`` without its lock: computed on first read, then an instance
    attribute. (Python 3.11's ``cached_property`` enters an ``RLock``, which ``torch.compile`` cannot
    trace: every outer-context field would split a compiled meta-iteration into pieces.)"""

    def __init__(self, compute: Callable[[Any], Any]):
        self.compute, self.name, self.__doc__ = compute, compute.__name__, compute.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.compute(instance)
        return value


class OuterContext:
    """What every outer loss receives (one member's view).

    Generic fields: ``params`` (before the inner step), ``updated_params`` (after it),
    ``meta`` (name -> value, constant), ``batch``, ``frozen`` (other inputs held constant, e.g. a
    critic) and ``state`` (this loss's own persistent state). Subclasses add quantities computed
    lazily and cached on first use (:class:`cached_value`), shared by every loss.
    """

    def __init__(self, params, updated_params, meta, batch, frozen, state=None):
        self.params = params
        self.updated_params = updated_params
        self.meta = meta
        self.batch = batch
        self.frozen = frozen
        self.state = state


class _StateView:
    """A context seen with one loss's state; attribute reads go to the shared context."""

    def __init__(self, context: OuterContext, state: Any):
        object.__setattr__(self, "_context", context)
        object.__setattr__(self, "state", state)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class OuterLossError(ValueError):
    """An outer loss that cannot be used: a specification that does not resolve, or a loss that
    returns what the bilevel step cannot differentiate (the message names the loss)."""


def _outer_value(loss: "OuterLoss", out: Any) -> Tensor:
    """The loss value of ``out`` (``value`` or ``(value, new_state)``), checked: a scalar tensor per
    member. Metadata checks only (type, dim), so they cost nothing on the hot path."""
    value = out[0] if isinstance(out, tuple) and len(out) == 2 else out
    if not isinstance(value, Tensor):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise OuterLossError(
            f"outer loss '{loss.name}' returned {type(value).__name__} {shown}; an outer loss returns a scalar "
            f"tensor computed from its context (the parameters after the inner step, ctx.updated_params, or values "
            f"derived from them), or (scalar tensor, new state) when it keeps state."
        )
    if value.dim() != 0:
        raise OuterLossError(
            f"outer loss '{loss.name}' returned a tensor of shape {tuple(value.shape)} for one member; it must be a "
            f"scalar (0-dim) tensor: reduce it, e.g. with .mean()."
        )
    return value


def _check_depends_on_the_step(terms: dict[str, Tensor]) -> None:
    """Every outer term must reach the meta-parameters through the inner step, i.e. depend on the
    updated parameters; a constant would give no meta-gradient (or, alone, no graph at all)."""
    for name, value in terms.items():
        if not value.requires_grad:
            raise OuterLossError(
                f"outer loss '{name}' returned a tensor that does not depend on the parameters after the inner "
                f"step (ctx.updated_params, or values computed from them): its meta-gradient would be zero. "
                f"Compute it from the updated parameters (a constant, or values taken with .detach() or .item(), "
                f"cannot steer the meta-parameters)."
            )


@dataclass(frozen=True)
class OuterLoss:
    """A named, weighted outer loss ``fn(ctx) -> scalar`` or ``-> (scalar, new_state)``.

    ``init_state``: the loss's persistent state at the start (name -> float), or ``None``.
    """

    name: str
    fn: Callable[[Any], Any]
    weight: float = 1.0
    init_state: dict[str, float] | None = None


@dataclass(frozen=True)
class BilevelProblem:
    """Everything the engine needs to take inner and bilevel steps for ``num_members`` members."""

    inner_objective: InnerObjective
    optimizer: Optimizer
    outer_losses: Sequence[OuterLoss]
    meta_parameters: MetaParameters
    make_context: Callable[..., OuterContext] = OuterContext
    num_members: int = 1
    outer_terms: tuple[str, ...] = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "outer_terms", tuple(loss.name for loss in self.outer_losses))

    def init_outer_state(self, device: torch.device | str = "cpu", dtype=None) -> dict[str, Any]:
        """``{loss name: {key: (M,) tensor}}`` for the losses that keep state (``dtype``: default
        ``torch.get_default_dtype()``)."""
        return {
            loss.name: {
                key: torch.full((self.num_members,), value, device=device, dtype=dtype)
                for key, value in loss.init_state.items()
            }
            for loss in self.outer_losses
            if loss.init_state is not None
        }


def _outer_objective(problem: BilevelProblem):
    """One member's weighted outer loss: ``(params, updated, meta, batch, frozen, state) ->
    (total, terms, new_state)``."""

    def objective(params, updated_params, meta, batch, frozen, state):
        context = problem.make_context(params, updated_params, meta, batch, frozen)
        total = 0.0
        terms: dict[str, Tensor] = {}
        new_state: dict[str, Any] = {}
        for loss in problem.outer_losses:
            loss_state = state.get(loss.name)
            out = loss.fn(_StateView(context, loss_state) if loss_state is not None else context)
            value = _outer_value(loss, out)
            if isinstance(out, tuple):
                new_state[loss.name] = out[1]
            elif loss_state is not None:
                new_state[loss.name] = loss_state
            terms[loss.name] = value
            total = total + loss.weight * value
        return total, terms, new_state

    return objective


def _requires_grad(params: Params) -> Params:
    return {k: v.detach().requires_grad_() for k, v in params.items()}


def inner_step(
    problem: BilevelProblem,
    params: Params,
    opt_state: dict[str, Any],
    meta: dict[str, Tensor],
    batch: dict[str, Tensor],
    frozen: dict[str, Any],
    lr: float | None = None,
) -> tuple[Params, dict[str, Any], Tensor]:
    """A first-order step of the inner objective; returns ``(params, opt_state, loss (M,))``."""

    def summed(p):
        loss = per_member(problem.inner_objective, problem.num_members)(p, meta, batch, frozen)
        return loss.sum(), loss

    grads, _, loss = value_and_grad(summed, params)
    with torch.no_grad():
        new_params, new_state = problem.optimizer.step(grads, opt_state, params, lr=lr)
    return new_params, new_state, loss


def bilevel_step(
    problem: BilevelProblem,
    params: Params,
    opt_state: dict[str, Any],
    meta_state: dict[str, Any],
    batch: dict[str, Tensor],
    frozen: dict[str, Any],
    outer_state: dict[str, Any],
    lr: float | None = None,
) -> tuple[Params, dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Tensor]]:
    """Inner step, meta-gradient through it, meta-update, commit.

    Returns ``(params, opt_state, meta_state, outer_state, info)`` where ``info`` holds per-member
    tensors: ``inner_loss``, ``outer_loss``, one entry per outer term and ``grad/<meta name>``.
    """
    meta_raw = {name: rho.detach().requires_grad_() for name, rho in meta_state["raw"].items()}
    leaf = _requires_grad(params)
    with torch.enable_grad():
        meta = MetaParameters.values(meta_raw)
        inner = per_member(problem.inner_objective, problem.num_members)(leaf, meta, batch, frozen)
        grads = torch.autograd.grad(inner.sum(), list(leaf.values()), create_graph=True)
        updated, new_opt_state = problem.optimizer.step(dict(zip(leaf, grads)), opt_state, leaf, lr=lr)
        constants = detach_tree(meta)
        total, terms, new_outer_state = per_member(_outer_objective(problem), problem.num_members)(
            detach_tree(params), updated, constants, batch, frozen, outer_state
        )
        _check_depends_on_the_step(terms)
        meta_grads = torch.autograd.grad(total.sum(), list(meta_raw.values()), allow_unused=True)
    meta_grads = {
        name: torch.zeros_like(meta_raw[name]) if g is None else g for name, g in zip(meta_raw, meta_grads)
    }
    new_meta_state = problem.meta_parameters.step(meta_state, meta_grads)
    info = _step_info(inner, total, terms, meta_grads)
    return (
        detach_tree(updated),
        detach_tree(new_opt_state),
        new_meta_state,
        detach_tree(new_outer_state),
        info,
    )


def functional_bilevel_step(
    problem: BilevelProblem,
    params: Params,
    opt_state: dict[str, Any],
    meta_state: dict[str, Any],
    batch: dict[str, Tensor],
    frozen: dict[str, Any],
    outer_state: dict[str, Any],
    meta_lrs: dict[str, Tensor],
    lr: float | None = None,
) -> tuple[Params, dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Tensor]]:
    """:func:`bilevel_step` written with ``torch.func.grad`` of ``torch.func.grad`` instead of
    ``autograd.grad(create_graph=True)``, so that ``torch.compile`` traces the whole meta-iteration
    (virtual step, meta-gradient, meta-update, commit) into one graph. ``meta_lrs``: each
    meta-parameter's learning rate for this update as a 0-d tensor (a graph input, so the decaying
    schedule does not recompile). Same returns as :func:`bilevel_step`; equal to it to float rounding.
    """
    member_objective = per_member(problem.inner_objective, problem.num_members)
    member_outer = per_member(_outer_objective(problem), problem.num_members)
    structure: dict[str, Any] = {}  # the optimizer state's layout and Python leaves (step counts): aux holds tensors only

    def outer_total(meta_raw):
        meta = MetaParameters.values(meta_raw)

        def inner_total(p):
            loss = member_objective(p, meta, batch, frozen)
            return loss.sum(), loss

        grads, inner = torch.func.grad(inner_total, has_aux=True)(params)
        updated, new_opt_state = problem.optimizer.step(grads, opt_state, params, lr=lr, differentiable=True)
        total, terms, new_outer_state = member_outer(params, updated, detach_tree(meta), batch, frozen, outer_state)
        leaves, structure["spec"] = tree_flatten(new_opt_state)
        structure["python"] = {i: leaf for i, leaf in enumerate(leaves) if not isinstance(leaf, Tensor)}
        tensors = [leaf for leaf in leaves if isinstance(leaf, Tensor)]
        return total.sum(), (inner, total, terms, new_outer_state, updated, tensors)

    meta_grads, aux = torch.func.grad(outer_total, has_aux=True)(meta_state["raw"])
    inner, total, terms, new_outer_state, updated, tensors = detach_tree(aux)
    python, tensors = structure["python"], iter(tensors)
    leaves = [python[i] if i in python else next(tensors) for i in range(structure["spec"].num_leaves)]
    new_opt_state = tree_unflatten(leaves, structure["spec"])
    new_meta_state = problem.meta_parameters.step(meta_state, meta_grads, lrs=meta_lrs)
    return updated, new_opt_state, new_meta_state, new_outer_state, _step_info(inner, total, terms, meta_grads)


def _step_info(inner: Tensor, total: Tensor, terms: dict[str, Tensor], meta_grads: dict[str, Tensor]) -> dict[str, Tensor]:
    """A bilevel step's per-member metrics: ``inner_loss``, ``outer_loss``, ``outer/<term>``, ``grad/<meta>``."""
    info = {"inner_loss": inner.detach(), "outer_loss": total.detach()}
    info.update({f"outer/{name}": value.detach() for name, value in terms.items()})
    info.update({f"grad/{name}": g for name, g in meta_grads.items()})
    return info

