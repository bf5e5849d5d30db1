r"""The constraint scale an actor objective reads: fixed (a config value) or learned (ASPC's component).

The actor objective reads a scale :math:`c` (alpha for TD3+BC, beta for AWR and ReBRAC). A fixed
scale is a config field, one value per member. A learned scale is :math:`c = \mathrm{softplus}(\rho)`:
every ``scale_interval`` actor steps the actor step is the virtual step :math:`\tilde\theta(c)` of
:func:`metaconstraint.engine.bilevel_step`, and

.. math:: \rho \leftarrow \rho - \eta_\rho\,\partial_\rho \textstyle\sum_j w_j \ell_j(\tilde\theta(c))

with the configured outer losses; Adam on :math:`\rho` (``scale_lr``) decays exponentially to
``scale_final_lr_fraction`` of its rate over ``scale_lr_decay_steps`` iterations (default 1,000,000,
the released code's schedule, whatever the run's length; ``"run"``: the run's length).

Every algorithm holds one of the two as ``self.scale`` and takes its actor step with
``self.scale.actor_step(problem, state, batch, frozen, iteration)``; an algorithm whose config is
an :class:`AdaptiveScaleConfig` learns its scale
(``aspc`` is ``td3bc`` with such a config, ``aspc-iql`` is ``iql`` with one, and so on).
"""

from __future__ import annotations

from typing import Annotated, Any, Callable, ClassVar, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from torch import Tensor

from metaconstraint.algorithms.base import AlgorithmConfig
from metaconstraint.engine import BilevelProblem, MetaParameter, MetaParameters, bilevel_step, inner_step
from metaconstraint.outer_losses import context_factory, resolve_outer_losses

RELEASED_DECAY_STEPS = 1_000_000  # the released ASPC code decays alpha's lr over 1M iterations in every run
DecayHorizon = Annotated[int, Field(gt=0)] | Literal["run"]  # iterations, or "run": the run's own length


def _named(field: str, *old: str) -> AliasChoices:
    """The field's name first, then the names config files written before it had one (read, never written)."""
    return AliasChoices(field, *old)


class AdaptiveScaleConfig(AlgorithmConfig):
    """The settings every learned scale shares, whatever its backbone. The scale's initial value
    keeps the objective's own name (``alpha``, ``beta``, ``actor_bc_coef``) in the backbone's config.

    Config files from before these names (``alpha_lr``, ``beta_interval``, ...) still read."""

    BACKBONE: ClassVar[str] = "td3bc"  # the algorithm whose update this config's algorithm runs

    outer_losses: list[str] = Field(default_factory=lambda: ["l1", "l2", "l3"], min_length=1)
    objective: str = Field(..., description="Inner objective: a registered name or module:factory.")
    scale_lr: float = Field(
        2e-3, gt=0, validation_alias=_named("scale_lr", "alpha_lr", "beta_lr"),
        description="Adam learning rate of rho (scale = softplus(rho)).",
    )
    scale_interval: int = Field(
        10, ge=1, validation_alias=_named("scale_interval", "alpha_interval", "beta_interval"),
        description="The scale is updated every this many actor steps (TD3 backbones step the actor every policy_freq iterations).",
    )
    scale_lr_decay_steps: DecayHorizon = Field(
        RELEASED_DECAY_STEPS, validation_alias=_named("scale_lr_decay_steps", "alpha_lr_decay_steps", "beta_lr_decay_steps"),
        description="Iterations over which the scale's lr decays to scale_final_lr_fraction: 1,000,000 whatever --steps "
        "is (the released code's schedule), or \"run\" for the run's own length.",
    )
    scale_final_lr_fraction: float = Field(
        0.01, gt=0, le=1, validation_alias=_named("scale_final_lr_fraction", "alpha_final_lr_fraction", "beta_final_lr_fraction"),
    )

    @field_validator("outer_losses")
    @classmethod
    def _known_losses(cls, specs: list[str]) -> list[str]:
        resolve_outer_losses(specs)  # raises a clear ValueError for unknown names or bad weights
        return specs

    @field_validator("objective")
    @classmethod
    def _known_objective(cls, spec: str) -> str:
        from metaconstraint.objectives import resolve_objective

        resolve_objective(spec)
        return spec

    @model_validator(mode="after")
    def _objective_fits_the_backbone(self):
        from metaconstraint.objectives import objective_backbone

        needed = objective_backbone(self.objective)
        if needed is not None and needed != self.BACKBONE:
            raise ValueError(
                f"objective '{self.objective}' needs the {needed} backbone, and this algorithm runs {self.BACKBONE}'s: "
                f"use `aspc --objective {self.objective}` (ASPC's learned scale on the {needed} backbone)"
            )
        return self


def actor_problem(objective, optimizer, actor, critic, num_members: int, scale) -> BilevelProblem:
    """The actor's step as the engine sees it: ``objective`` over ``actor`` with ``critic`` in the
    outer context, and the scale's outer losses and meta-parameters (none for a fixed scale)."""
    return BilevelProblem(
        inner_objective=objective.inner,
        optimizer=optimizer,
        outer_losses=scale.outer_losses(),
        meta_parameters=MetaParameters(scale.meta_parameter_specs()),
        make_context=context_factory(actor, critic, objective),
        num_members=num_members,
    )


def scale_state(problem: BilevelProblem, scale, member_values: dict[str, list[float]], device) -> dict[str, Any]:
    """The scale's part of an algorithm's state: ``meta`` (the learned meta-parameters and their
    optimizer; empty for a fixed scale) and ``outer`` (the outer losses' own state)."""
    initial = scale.initial_values(member_values)
    return {
        "meta": problem.meta_parameters.init(problem.num_members, device, initial=initial),
        "outer": problem.init_outer_state(device),
    }


def first_order_step(problem, state, batch, frozen, scale: dict[str, Tensor]) -> dict[str, Tensor]:
    """One step of the actor's optimizer on the objective at the scale ``{name: (M,)}``."""
    step = inner_step(problem, state["actor"], state["actor_opt"], scale, batch, frozen)
    state["actor"], state["actor_opt"] = step.params, step.opt_state
    return {"actor_loss": step.loss}


class FixedScale:
    """A scale set by the config: ``read()`` gives its ``(M,)`` values (each member's own, where members differ)."""

    learned = False

    def __init__(self, name: str, read: Callable[[], Tensor]):
        self.name = name
        self.read = read

    def values(self, state) -> dict[str, Tensor]:
        return {self.name: self.read()}

    def is_meta_iteration(self, iteration: int | None) -> bool:
        return False

    def meta_parameter_specs(self) -> list[MetaParameter]:
        return []

    def outer_losses(self) -> list:
        return []

    def initial_values(self, member_values: dict[str, list[float]]) -> dict[str, list[float]]:
        return {}

    def actor_step(self, problem, state, batch, frozen, iteration: int | None) -> dict[str, Tensor]:
        """A first-order step of the actor objective at the scale's value."""
        return first_order_step(problem, state, batch, frozen, self.values(state))


class AdaptiveScale:
    """A scale learned by ASPC's meta-gradient: the meta-parameter, its schedule, the outer losses
    and the bilevel actor step.

    ``name``: the objective's scale (the meta-parameter's name); ``init``: its initial value, read
    from the config field ``init_field`` (varied between members, each member's own start);
    ``actor_interval``: iterations per actor step (TD3: ``policy_freq``; IQL: 1).
    """

    learned = True

    def __init__(self, config: AdaptiveScaleConfig, name: str, *, init_field: str, actor_interval: int, total_steps: int):
        self.config = config
        self.name = name
        self.init_field = init_field
        self.meta_interval = actor_interval * config.scale_interval
        horizon = total_steps if config.scale_lr_decay_steps == "run" else config.scale_lr_decay_steps
        self.parameter = MetaParameter(
            name,
            init=float(getattr(config, init_field)),
            lr=config.scale_lr,
            decay_updates=max(1, horizon // self.meta_interval),
            final_lr_fraction=config.scale_final_lr_fraction,
        )

    def values(self, state) -> dict[str, Tensor]:
        return MetaParameters.values(state["meta"]["raw"])

    def is_meta_iteration(self, iteration: int | None) -> bool:
        """Whether this iteration's actor step is a bilevel step (``None``: a step known to be first-order)."""
        return iteration is not None and iteration % self.meta_interval == 0

    def meta_parameter_specs(self) -> list[MetaParameter]:
        return [self.parameter]

    def outer_losses(self) -> list:
        return resolve_outer_losses(self.config.outer_losses)

    def initial_values(self, member_values: dict[str, list[float]]) -> dict[str, list[float]]:
        """The scale's initial value per member where members start from different values."""
        values = member_values.get(self.init_field)
        return {} if values is None else {self.name: values}

    def actor_step(self, problem, state, batch, frozen, iteration: int | None) -> dict[str, Tensor]:
        """On a meta-iteration the bilevel step, else a first-order step at the scale's current value.
        ``iteration`` is ``None`` where the step is known to be first-order (a compiled phase must not
        depend on the iteration number)."""
        if not self.is_meta_iteration(iteration):
            return first_order_step(problem, state, batch, frozen, self.values(state))
        return self.meta_step(problem, state, batch, frozen)

    def meta_step(self, problem, state, batch, frozen) -> dict[str, Tensor]:
        """The bilevel actor step (:func:`metaconstraint.engine.bilevel_step`, eager or traced whole by
        ``torch.compile``): virtual step, meta-update of the scale, commit. Returns metrics."""
        step = bilevel_step(problem, state["actor"], state["actor_opt"], state["meta"], batch, frozen, state["outer"])
        state["actor"], state["actor_opt"], state["meta"], state["outer"] = step.params, step.opt_state, step.meta_state, step.outer_state
        return {"actor_loss": step.info.pop("inner_loss"), **step.info}


def make_scale(algorithm, config, objective, *, init_field: str, actor_interval: int):
    """The algorithm's scale: learned where ``config`` is an :class:`AdaptiveScaleConfig`, else the
    config field ``init_field`` per member."""
    if isinstance(config, AdaptiveScaleConfig):
        return AdaptiveScale(
            config, objective.scale_name, init_field=init_field, actor_interval=actor_interval,
            total_steps=algorithm.spec.total_steps,
        )
    return FixedScale(objective.scale_name, lambda: algorithm.member_scalar(init_field))
