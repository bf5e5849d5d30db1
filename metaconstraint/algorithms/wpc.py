r"""wPC: Weighted Policy Constraints (Peng et al., AAAI 2023), on the TD3+BC backbone.

One iteration (:meth:`WPC.update`):

1. The TD3 target :math:`y` and the twin-critic step (:mod:`metaconstraint.algorithms.td3`).
2. A state-value net :math:`V_\psi(s)` (2 x 256) regressed by MSE onto the same target:
   :math:`L_V(\psi) = \tfrac{1}{B}\textstyle\sum_i (V_\psi(s_i) - y_i)^2`.
3. Every ``policy_freq`` iterations, the actor step on the wPC objective
   (:mod:`metaconstraint.objectives.wpc`: TD3+BC whose BC term keeps only the dataset actions with
   :math:`Q_1(s, a) > V(s)`), with :math:`\alpha = 2.5`, then the target updates.

By default with the robust critic (the ASPC paper's wPC*). With an adaptive config
(``aspc --objective wpc``, the algorithm ``aspc-wpc``) alpha is learned.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from metaconstraint.algorithms.adaptive import AdaptiveScaleConfig, actor_problem, make_scale, scale_state
from metaconstraint.algorithms.base import register_algorithm, Algorithm
from metaconstraint.algorithms.td3 import TD3Backbone, TD3Phases, critic_shape, gradient_step
from metaconstraint.algorithms.td3bc import TD3BCConfig
from metaconstraint.engine import adam
from metaconstraint.objectives import build_objective
from metaconstraint.rl.networks import Network, init_members, value_network


def value_regression_loss(value: Network, params, states: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """``mean (V(s) - y)^2`` and ``mean V(s)`` for ``(B, obs_dim)`` states and ``(B,)`` targets (one member)."""
    values = value.apply(params, states)
    return (values - targets).pow(2).mean(), values.mean()


class WPCConfig(TD3BCConfig):
    value_lr: float = Field(3e-4, gt=0, description="Adam learning rate of V(s).")


@register_algorithm
class WPC(Algorithm):
    name = "wpc"
    Config = WPCConfig
    member_fields = ("alpha",)

    def __init__(self, config, spec, num_members, device):
        super().__init__(config, spec, num_members, device)
        self.td3 = TD3Backbone(config, spec, num_members, critic_shape=critic_shape(config))
        self.actor, self.critic = self.td3.actor, self.td3.critic
        self.value = value_network(spec.observation_dim)
        self.value_optimizer = adam(config.value_lr)
        self.objective = build_objective(getattr(config, "objective", "wpc"), "wpc", self.actor, self.critic, value=self.value)
        self.scale = make_scale(self, config, self.objective, init_field="alpha", actor_interval=config.policy_freq)
        self.problem = actor_problem(self.objective, self.td3.actor_optimizer, self.actor, self.critic, num_members, self.scale)
        self.phases = TD3Phases(self, self.critic_phase)

    def init_state(self, seeds):
        state = {**self.td3.init_state(seeds, self.device), **scale_state(self.problem, self.scale, self.member_values, self.device)}
        state["value"] = init_members(self.value, seeds, self.device, salt=3)
        state["value_opt"] = self.value_optimizer.init(state["value"])
        return state

    def update(self, state, sampler, iteration):
        batch = sampler.sample()
        noise = sampler.normal(*batch["actions"].shape[1:])
        metrics = self.phases.critic(state, batch, noise)
        if iteration % self.config.policy_freq == 0:
            metrics.update(self.phases.actor(state, batch, iteration))
        return state, metrics

    def critic_phase(self, state, batch, noise):
        """Target bootstrap, the critic step, and V's step onto the same target."""
        bootstrap = self.td3.bootstrap(state, batch, noise)
        metrics = self.td3.critic_step(state, batch, bootstrap["target"])
        metrics.update(self.update_value(state, batch, bootstrap))
        return metrics

    def _member_value_loss(self, params, states, targets):
        return value_regression_loss(self.value, params, states, targets)

    def update_value(self, state, batch, bootstrap):
        state["value"], state["value_opt"], loss, v_mean = gradient_step(
            self._member_value_loss, self.value_optimizer, state["value"], state["value_opt"],
            batch["observations"], bootstrap["target"], num_members=self.num_members,
        )
        return {"value_loss": loss, "v_mean": v_mean}

    def frozen_inputs(self, state):
        return {"critic": state["critic"], "value": state["value"]}

    def update_actor(self, state, batch, frozen, iteration):
        return self.scale.actor_step(self.problem, state, batch, frozen, iteration)

    def compile(self):
        return self.phases.compile()

    @torch.no_grad()
    def act(self, state, observations):
        return self.actor.apply(state["actor"], observations)


class ASPCWPCConfig(AdaptiveScaleConfig, WPCConfig):
    BACKBONE = "wpc"
    alpha: float = Field(2.5, gt=0, description="Initial value of the learned alpha.")
    objective: str = Field("wpc", description="Inner objective on the wPC backbone.")


@register_algorithm
class ASPCWPC(WPC):
    """wPC with an adaptive config: the same update, alpha learned (``aspc --objective wpc``)."""

    name = "aspc-wpc"
    Config = ASPCWPCConfig
