r"""ASPC's adaptive constraint scale, shared by every backbone that learns one (``aspc``, ``aspc-iql``).

The backbone's actor objective reads a scale :math:`c = \mathrm{softplus}(\rho)` (alpha for
TD3+BC, beta for AWR). Every ``meta_interval`` iterations its actor step is the virtual step
:math:`\tilde\theta(c)` of :func:`metaconstraint.engine.bilevel_step`, and

.. math:: \rho \leftarrow \rho - \eta_\rho\,\partial_\rho \textstyle\sum_j w_j \ell_j(\tilde\theta(c))

with the configured outer losses; Adam on :math:`\rho` decays exponentially to
``final_lr_fraction`` of its rate over the decay horizon (default 1,000,000 iterations, the
released code's schedule, whatever the run's length; ``"run"``: the run's length).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from metaconstraint.algorithms.base import AlgorithmConfig
from metaconstraint.engine import MetaParameter, MetaParameters, bilevel_step
from metaconstraint.objectives import resolve_objective
from metaconstraint.outer_losses import resolve_outer_losses


RELEASED_DECAY_STEPS = 1_000_000  # the released ASPC code decays alpha's lr over 1M iterations in every run
DecayHorizon = Annotated[int, Field(gt=0)] | Literal["run"]  # iterations, or "run": the run's own length


class AdaptiveScaleConfig(AlgorithmConfig):
    """The keys every adaptive algorithm shares: its outer losses and its inner objective."""

    outer_losses: list[str] = Field(default_factory=lambda: ["l1", "l2", "l3"], min_length=1)
    objective: str = Field(..., description="Inner objective: a registered name or module:factory.")

    @field_validator("outer_losses")
    @classmethod
    def _known_losses(cls, specs: list[str]) -> list[str]:
        resolve_outer_losses(specs)  # raises a clear ValueError for unknown names or bad weights
        return specs

    @field_validator("objective")
    @classmethod
    def _known_objective(cls, spec: str) -> str:
        resolve_objective(spec)
        return spec


@dataclass(frozen=True)
class ScaleSchedule:
    """How the learned scale starts and how fast it moves, in the algorithm's own config names."""

    init: float
    lr: float
    decay_steps: DecayHorizon
    final_lr_fraction: float


class AdaptiveScale:
    """Mixin placed before a backbone algorithm: its actor objective's scale becomes a learned
    meta-parameter. The algorithm says when (``meta_interval``) and how (``scale_schedule``)."""

    meta_interval: int
    scale_init_field: str  # the config field holding the scale's initial value (aspc: alpha, aspc-iql: beta)

    def initial_meta_values(self) -> dict[str, list[float]]:
        """The scale's initial value per member when members start from different values."""
        values = self.member_values.get(self.scale_init_field)
        return {} if values is None else {self.objective.scale_name: values}

    def scale_schedule(self) -> ScaleSchedule:
        raise NotImplementedError

    def meta_parameter_specs(self) -> list[MetaParameter]:
        schedule = self.scale_schedule()
        horizon = self.spec.total_steps if schedule.decay_steps == "run" else schedule.decay_steps
        return [
            MetaParameter(
                self.objective.scale_name,
                init=schedule.init,
                lr=schedule.lr,
                decay_updates=max(1, horizon // self.meta_interval),
                final_lr_fraction=schedule.final_lr_fraction,
            )
        ]

    def outer_losses(self):
        return resolve_outer_losses(self.config.outer_losses)

    def scale_values(self, state):
        return MetaParameters.values(state["meta"]["raw"])

    def is_meta_iteration(self, iteration: int | None) -> bool:
        return iteration is not None and iteration % self.meta_interval == 0

    def meta_actor_step(self, state, batch, frozen: dict[str, Any]):
        """The bilevel actor step: virtual step, meta-update of the scale, commit. Returns metrics."""
        step = bilevel_step(self.problem, state["actor"], state["actor_opt"], state["meta"], batch, frozen, state["outer"])
        state["actor"], state["actor_opt"], state["meta"], state["outer"] = step.params, step.opt_state, step.meta_state, step.outer_state
        return {"actor_loss": step.info.pop("inner_loss"), **step.info}

    def constraint_scale(self, state):
        return self.scale_values(state)[self.objective.scale_name]

    def meta_parameters(self, state):
        return self.scale_values(state)
