r"""ASPC: Adaptive Scaling of Policy Constraints (arXiv 2508.19900).

TD3+BC whose Q-term scale :math:`\alpha = \mathrm{softplus}(\rho)` is learned by a meta-gradient.
Every ``policy_freq * alpha_interval`` iterations (2 x 10 = 20) the actor step is taken as a
*virtual* step :math:`\tilde\theta(\alpha)` with the actor's own Adam, and

.. math:: \rho \leftarrow \rho - \eta_\rho\, \partial_\rho \big(L_1 + L_2 + L_3\big)(\tilde\theta(\alpha))

(:mod:`metaconstraint.outer_losses.builtin`); the virtual step is then committed. Adam on
:math:`\rho` with lr 2e-3 decays exponentially to 1% over ``alpha_lr_decay_steps`` iterations
(default: the run's length, as the paper's 1M-iteration schedule).

The inner objective is a config value, ``objective`` (default ``"td3bc"``; any registered name or
``module:factory``, built with ``actor`` and ``critic``): the bilevel machinery is the same for all.
"""

from __future__ import annotations

import torch
from pydantic import Field, field_validator

from metaconstraint.algorithms.base import register_algorithm
from metaconstraint.algorithms.td3bc import TD3BC, TD3BCConfig
from metaconstraint.engine import MetaParameter, MetaParameters, bilevel_step
from metaconstraint.objectives import build_objective, resolve_objective
from metaconstraint.outer_losses import resolve_outer_losses


class ASPCConfig(TD3BCConfig):
    alpha: float = Field(2.5, gt=0, description="Initial value of the learned alpha.")
    alpha_lr: float = Field(2e-3, gt=0, description="Adam learning rate of rho (alpha = softplus(rho)).")
    alpha_interval: int = Field(10, ge=1, description="k_alpha: alpha is updated every policy_freq * k_alpha iterations.")
    alpha_lr_decay_steps: int | None = Field(
        None, gt=0, description="Iterations over which alpha's lr decays to 1% (default: the run's --steps)."
    )
    alpha_final_lr_fraction: float = Field(0.01, gt=0, le=1)
    outer_losses: list[str] = Field(default_factory=lambda: ["l1", "l2", "l3"], min_length=1)
    objective: str = Field("td3bc", description="Inner objective: a registered name or module:factory.")

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


@register_algorithm
class ASPC(TD3BC):
    name = "aspc"
    Config = ASPCConfig

    def build_objective(self):
        return build_objective(self.config.objective, actor=self.actor, critic=self.critic)

    @property
    def meta_interval(self) -> int:
        return self.config.policy_freq * self.config.alpha_interval

    def meta_parameter_specs(self):
        horizon = self.config.alpha_lr_decay_steps or self.spec.total_steps
        return [
            MetaParameter(
                self.objective.scale_name,
                init=self.config.alpha,
                lr=self.config.alpha_lr,
                decay_updates=max(1, horizon // self.meta_interval),
                final_lr_fraction=self.config.alpha_final_lr_fraction,
            )
        ]

    def outer_losses(self):
        return resolve_outer_losses(self.config.outer_losses)

    def scale_values(self, state):
        return MetaParameters.values(state["meta"]["raw"])

    def is_meta_iteration(self, iteration):
        return iteration is not None and iteration % self.meta_interval == 0

    def update_actor(self, state, batch, iteration):
        if not self.is_meta_iteration(iteration):
            return super().update_actor(state, batch, iteration)
        frozen = {"critic": state["critic"]}
        state["actor"], state["actor_opt"], state["meta"], state["outer"], info = bilevel_step(
            self.problem, state["actor"], state["actor_opt"], state["meta"], batch, frozen, state["outer"]
        )
        metrics = {"actor_loss": info.pop("inner_loss")}
        metrics.update(info)
        return metrics

    def constraint_scale(self, state):
        return self.scale_values(state)[self.objective.scale_name]

    def meta_parameters(self, state):
        return {name: value for name, value in self.scale_values(state).items()}
