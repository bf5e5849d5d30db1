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

How :math:`\partial_\phi \sum_j w_j \ell_j` is computed is the problem's hypergradient method
(:class:`Unroll`: through one, or ``K``, differentiated inner steps), a small strategy object behind
:func:`bilevel_step`. Only meta-iterations (:func:`bilevel_step`) build the second-order graph;
every other iteration is a first-order :func:`inner_step`. Nothing here knows about reinforcement
learning: the inner objective, the outer losses and the context they share are supplied by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Protocol, Sequence

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_unflatten

from metaconstraint.engine.members import per_member
from metaconstraint.engine.meta import MetaParameters
from metaconstraint.engine.optim import Optimizer, OptState, Params, detach_tree, value_and_grad

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


def _outer_value(loss: "OuterLoss", value: Any) -> Tensor:
    """``value`` checked: a scalar tensor per member. Metadata checks only (type, dim), so they cost
    nothing on the hot path."""
    if isinstance(value, tuple):
        raise OuterLossError(
            f"outer loss '{loss.name}' returned a tuple of {len(value)}; an outer loss returns one scalar tensor. "
            f"A loss that keeps state declares its update apart: init_state={{...}} and next_state=fn(ctx) -> new "
            f"state (reading ctx.state), on OuterLoss or @outer_loss."
        )
    if not isinstance(value, Tensor):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise OuterLossError(
            f"outer loss '{loss.name}' returned {type(value).__name__} {shown}; an outer loss returns a scalar "
            f"tensor computed from its context (the parameters after the inner step, ctx.updated_params, or values "
            f"derived from them)."
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
    """A named, weighted outer loss ``fn(ctx) -> scalar tensor``.

    A loss that keeps state across meta-iterations (an EMA, say) declares it apart from its value:
    ``init_state`` (name -> float, the state at the start) and ``next_state(ctx) -> new state`` (the
    same keys, tensors), both reading the current state as ``ctx.state``. The state is detached,
    checkpointed and resumed with the run.
    """

    name: str
    fn: Callable[[Any], Tensor]
    weight: float = 1.0
    init_state: dict[str, float] | None = None
    next_state: Callable[[Any], dict[str, Tensor]] | None = None

    def __post_init__(self):
        if (self.init_state is None) != (self.next_state is None):
            raise OuterLossError(
                f"outer loss '{self.name}': a loss that keeps state gives both init_state and next_state "
                f"(got {'init_state' if self.init_state is not None else 'next_state'} only)."
            )


@dataclass(frozen=True)
class BilevelProblem:
    """Everything the engine needs to take inner and bilevel steps for ``num_members`` members;
    ``hypergradient``: how a bilevel step differentiates through the inner step (default one-step unroll)."""

    inner_objective: InnerObjective
    optimizer: Optimizer
    outer_losses: Sequence[OuterLoss]
    meta_parameters: MetaParameters
    make_context: Callable[..., OuterContext] = OuterContext
    num_members: int = 1
    hypergradient: "HypergradientMethod" = field(default_factory=lambda: Unroll(1))
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
            view = _StateView(context, loss_state) if loss_state is not None else context
            value = _outer_value(loss, loss.fn(view))
            if loss_state is not None:
                new_state[loss.name] = loss.next_state(view)
            terms[loss.name] = value
            total = total + loss.weight * value
        return total, terms, new_state

    return objective


def _requires_grad(params: Params) -> Params:
    return {k: v.detach().requires_grad_() for k, v in params.items()}


class InnerStep(NamedTuple):
    """What :func:`inner_step` returns: the new parameters and optimizer state, and the inner loss ``(M,)``."""

    params: Params
    opt_state: OptState
    loss: Tensor


class BilevelStep(NamedTuple):
    """What :func:`bilevel_step` returns (detached): the committed parameters and optimizer state,
    the updated meta-parameter and outer-loss states, and ``info`` (per-member metrics ``(M,)``:
    ``inner_loss``, ``outer_loss``, ``outer/<term>``, ``grad/<meta name>``)."""

    params: Params
    opt_state: OptState
    meta_state: dict[str, Any]
    outer_state: dict[str, Any]
    info: dict[str, Tensor]


class Hypergradient(NamedTuple):
    """What a hypergradient method returns (detached): ``meta_grads`` (name -> ``(M,)``, of the
    summed outer loss w.r.t. the raw meta-parameters), the inner steps' result to commit
    (``params``, ``opt_state``), the new outer-loss state, the inner loss at the start ``(M,)``,
    the weighted outer loss ``(M,)`` and its terms."""

    meta_grads: dict[str, Tensor]
    params: Params
    opt_state: OptState
    outer_state: dict[str, Any]
    inner_loss: Tensor
    outer_loss: Tensor
    terms: dict[str, Tensor]


class HypergradientMethod(Protocol):
    """``method(problem, params, opt_state, meta_raw, batch, frozen, outer_state) -> Hypergradient``."""

    def __call__(self, problem: BilevelProblem, params: Params, opt_state: OptState, meta_raw: dict[str, Tensor],
                 batch: dict[str, Tensor], frozen: dict[str, Any], outer_state: dict[str, Any]) -> Hypergradient: ...


def _autograd_grad(loss_fn: Callable[[Params], Tensor], params: Params) -> tuple[Params, Tensor]:
    """``(grad of sum_M loss, loss (M,))`` with the graph kept (``create_graph``), for ``params`` in an autograd graph."""
    loss = loss_fn(params)
    grads = torch.autograd.grad(loss.sum(), list(params.values()), create_graph=True)
    return dict(zip(params, grads)), loss


def _functional_grad(loss_fn: Callable[[Params], Tensor], params: Params) -> tuple[Params, Tensor]:
    """The same by ``torch.func.grad`` (differentiable by an enclosing ``torch.func.grad``)."""

    def summed(p):
        loss = loss_fn(p)
        return loss.sum(), loss

    return torch.func.grad(summed, has_aux=True)(params)


@dataclass(frozen=True)
class Unroll:
    r"""Hypergradient through ``steps`` = K unrolled inner steps on the same batch:

    .. math::
        \theta_{k+1} = \mathrm{OptStep}\big(\nabla_\theta f(\theta_k, \phi, b)\big),\ k < K, \qquad
        g_\phi = \frac{\partial}{\partial\phi} \textstyle\sum_j w_j\, \ell_j(\theta_0, \theta_K, \phi, b)

    differentiating through all K steps (and the optimizer's state along them); :math:`\theta_K` and
    the optimizer's state after K steps are what the bilevel step commits. ``steps = 1`` is the
    one-step look-ahead (ASPC's method). Eagerly the inner gradients keep autograd's graph
    (``create_graph``); under ``torch.compile`` both levels are ``torch.func.grad``, which the
    compiler traces into one graph (autograd's double backward would break it). Same numbers to float
    rounding. Memory and time grow linearly in K.
    """

    steps: int = 1

    def __post_init__(self):
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"Unroll(steps) needs a positive number of inner steps, got {self.steps!r}")

    def unrolled(self, problem, inner_grad, params, opt_state, meta_raw, batch, frozen, outer_state):
        """``(summed outer loss, (inner loss at theta_0, total (M,), terms, new outer state, theta_K, opt state K))``
        as a function of the raw meta-parameters; gradients of the inner loss by ``inner_grad``."""
        meta = MetaParameters.values(meta_raw)
        member_objective = per_member(problem.inner_objective, problem.num_members)
        updated, new_opt_state, first_loss = params, opt_state, None
        for _ in range(self.steps):
            grads, loss = inner_grad(lambda p: member_objective(p, meta, batch, frozen), updated)
            updated, new_opt_state = problem.optimizer.step(grads, new_opt_state, updated, differentiable=True)
            first_loss = loss if first_loss is None else first_loss
        total, terms, new_outer_state = per_member(_outer_objective(problem), problem.num_members)(
            detach_tree(params), updated, detach_tree(meta), batch, frozen, outer_state
        )
        return total.sum(), (first_loss, total, terms, new_outer_state, updated, new_opt_state)

    def __call__(self, problem, params, opt_state, meta_raw, batch, frozen, outer_state) -> Hypergradient:
        if torch.compiler.is_compiling():
            return self._by_func_grad(problem, params, opt_state, meta_raw, batch, frozen, outer_state)
        return self._by_autograd(problem, params, opt_state, meta_raw, batch, frozen, outer_state)

    def _by_autograd(self, problem, params, opt_state, meta_raw, batch, frozen, outer_state) -> Hypergradient:
        leaf_raw = {name: rho.detach().requires_grad_() for name, rho in meta_raw.items()}
        with torch.enable_grad():
            summed, (inner, total, terms, new_outer_state, updated, new_opt_state) = self.unrolled(
                problem, _autograd_grad, _requires_grad(params), opt_state, leaf_raw, batch, frozen, outer_state
            )
            _check_depends_on_the_step(terms)
            grads = torch.autograd.grad(summed, list(leaf_raw.values()), allow_unused=True)
        meta_grads = {name: torch.zeros_like(leaf_raw[name]) if g is None else g for name, g in zip(leaf_raw, grads)}
        return Hypergradient(meta_grads, *detach_tree((updated, new_opt_state, new_outer_state, inner, total, terms)))

    def _by_func_grad(self, problem, params, opt_state, meta_raw, batch, frozen, outer_state) -> Hypergradient:
        structure: dict[str, Any] = {}  # the optimizer state's layout and Python leaves (step counts): aux holds tensors only

        def outer_total(raw):
            summed, (inner, total, terms, new_outer_state, updated, new_opt_state) = self.unrolled(
                problem, _functional_grad, params, opt_state, raw, batch, frozen, outer_state
            )
            leaves, structure["spec"] = tree_flatten(new_opt_state)
            structure["python"] = {i: leaf for i, leaf in enumerate(leaves) if not isinstance(leaf, Tensor)}
            tensors = [leaf for leaf in leaves if isinstance(leaf, Tensor)]
            return summed, (inner, total, terms, new_outer_state, updated, tensors)

        meta_grads, aux = torch.func.grad(outer_total, has_aux=True)(meta_raw)
        inner, total, terms, new_outer_state, updated, tensors = detach_tree(aux)
        python, tensors = structure["python"], iter(tensors)
        leaves = [python[i] if i in python else next(tensors) for i in range(structure["spec"].num_leaves)]
        new_opt_state = tree_unflatten(leaves, structure["spec"])
        return Hypergradient(meta_grads, updated, new_opt_state, new_outer_state, inner, total, terms)


def inner_step(
    problem: BilevelProblem,
    params: Params,
    opt_state: OptState,
    meta: dict[str, Tensor],
    batch: dict[str, Tensor],
    frozen: dict[str, Any],
) -> InnerStep:
    r"""A first-order step of the inner objective :math:`\theta \leftarrow \mathrm{OptStep}(\nabla_\theta f(\theta, \phi, b))`
    with the meta-parameter values ``meta`` (name -> ``(M,)``) held constant."""

    def summed(p):
        loss = per_member(problem.inner_objective, problem.num_members)(p, meta, batch, frozen)
        return loss.sum(), loss

    grads, _, loss = value_and_grad(summed, params)
    with torch.no_grad():
        new_params, new_state = problem.optimizer.step(grads, opt_state, params)
    return InnerStep(new_params, new_state, loss)


def bilevel_step(
    problem: BilevelProblem,
    params: Params,
    opt_state: OptState,
    meta_state: dict[str, Any],
    batch: dict[str, Tensor],
    frozen: dict[str, Any],
    outer_state: dict[str, Any],
) -> BilevelStep:
    """Inner step(s), meta-gradient through them (``problem.hypergradient``), meta-update, commit.

    Eager or under ``torch.compile`` (where it is traced whole, meta-update included)."""
    step = problem.hypergradient(problem, params, opt_state, meta_state["raw"], batch, frozen, outer_state)
    new_meta_state = problem.meta_parameters.step(meta_state, step.meta_grads)
    info = _step_info(step.inner_loss, step.outer_loss, step.terms, step.meta_grads)
    return BilevelStep(step.params, step.opt_state, new_meta_state, step.outer_state, info)


def _step_info(inner: Tensor, total: Tensor, terms: dict[str, Tensor], meta_grads: dict[str, Tensor]) -> dict[str, Tensor]:
    """A bilevel step's per-member metrics: ``inner_loss``, ``outer_loss``, ``outer/<term>``, ``grad/<meta>``."""
    info = {"inner_loss": inner.detach(), "outer_loss": total.detach()}
    info.update({f"outer/{name}": value.detach() for name, value in terms.items()})
    info.update({f"grad/{name}": g for name, g in meta_grads.items()})
    return info
