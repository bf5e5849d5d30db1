r"""ASPC-IQL: IQL whose inverse temperature is learned by ASPC's bilevel update.

The backbone is :mod:`metaconstraint.algorithms.iql` unchanged; the actor objective is AWR
(:mod:`metaconstraint.objectives.awr`) with :math:`\beta = \mathrm{softplus}(\rho)`. Every
``beta_interval`` iterations (20, as ASPC's ``2 x 10``: IQL steps its actor every iteration) the
actor step is a virtual step :math:`\tilde\theta(\beta)` with the actor's own Adam and learning rate,

.. math:: \rho \leftarrow \rho - \eta_\rho\,\partial_\rho\big(L_1 + L_2 + L_3\big)(\tilde\theta(\beta)),

then committed. The outer losses are ASPC's (:mod:`metaconstraint.outer_losses.builtin`), unchanged:
L1 is the AWR objective at :math:`\tilde\theta` with :math:`\beta` held constant; L2 and L3 read the
policy's mean action (the evaluated action) and the online critic's :math:`Q_1`, as documented in
:mod:`metaconstraint.objectives.awr`. Adam on :math:`\rho` with lr 2e-3 decays to 1% over
``beta_lr_decay_steps`` iterations (default: the run's length), as ASPC's alpha; the
``--alpha-lr-decay-steps`` flag is ASPC's own (in a ``compare`` of both it reaches ASPC only), so set
``beta_lr_decay_steps`` in a config file. As for ASPC, the decay bounds how far :math:`\rho` can
travel: the learning rates sum to 0.65 in a 30,000-iteration run whose decay is tied to its length
(Adam's steps exceed their learning rate a little while the meta-gradient keeps growing).
"""

from __future__ import annotations

from pydantic import Field, field_validator

from metaconstraint.algorithms.base import register_algorithm
from metaconstraint.algorithms.iql import IQL, IQLConfig
from metaconstraint.engine import MetaParameter, MetaParameters, bilevel_step
from metaconstraint.objectives import build_objective, resolve_objective
from metaconstraint.outer_losses import resolve_outer_losses


class ASPCIQLConfig(IQLConfig):
    beta: float = Field(3.0, gt=0, description="Initial value of the learned beta.")
    beta_lr: float = Field(2e-3, gt=0, description="Adam learning rate of rho (beta = softplus(rho)).")
    beta_interval: int = Field(20, ge=1, description="beta is updated every this many iterations.")
    beta_lr_decay_steps: int | None = Field(
        None, gt=0, description="Iterations over which beta's lr decays to 1% (default: the run's --steps)."
    )
    beta_final_lr_fraction: float = Field(0.01, gt=0, le=1)
    outer_losses: list[str] = Field(default_factory=lambda: ["l1", "l2", "l3"], min_length=1)
    objective: str = Field("awr", description="Inner objective: a registered name or module:factory.")

    @field_validator("outer_losses")
    @classmethod
    def _known_losses(cls, specs: list[str]) -> list[str]:
        resolve_outer_losses(specs)
        return specs

    @field_validator("objective")
    @classmethod
    def _known_objective(cls, spec: str) -> str:
        resolve_objective(spec)
        return spec


@register_algorithm
class ASPCIQL(IQL):
    name = "aspc-iql"
    Config = ASPCIQLConfig

    def build_objective(self):
        if self.config.objective == "awr":
            return super().build_objective()  # with the configured max_weight
        return build_objective(self.config.objective, actor=self.actor, critic=self.critic)

    def meta_parameter_specs(self):
        horizon = self.config.beta_lr_decay_steps or self.spec.total_steps
        return [
            MetaParameter(
                self.objective.scale_name,
                init=self.config.beta,
                lr=self.config.beta_lr,
                decay_updates=max(1, horizon // self.config.beta_interval),
                final_lr_fraction=self.config.beta_final_lr_fraction,
            )
        ]

    def outer_losses(self):
        return resolve_outer_losses(self.config.outer_losses)

    def scale_values(self, state):
        return MetaParameters.values(state["meta"]["raw"])

    def update_actor(self, state, batch, frozen, iteration):
        if iteration % self.config.beta_interval != 0:
            return super().update_actor(state, batch, frozen, iteration)
        state["actor"], state["actor_opt"], state["meta"], state["outer"], info = bilevel_step(
            self.problem, state["actor"], state["actor_opt"], state["meta"], batch, frozen, state["outer"],
            lr=self.actor_lr(iteration),
        )
        metrics = {"actor_loss": info.pop("inner_loss")}
        metrics.update(info)
        return metrics

    def constraint_scale(self, state):
        return self.scale_values(state)[self.objective.scale_name]

    def meta_parameters(self, state):
        return self.scale_values(state)
