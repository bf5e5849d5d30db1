r"""wPC: Weighted Policy Constraints (Peng et al., AAAI 2023), on the TD3+BC backbone.

A state-value net :math:`V_\psi(s)` (2 x 256) is regressed by MSE onto the TD3 target of the
dataset transition (the critic's own target :math:`y`, same smoothed next action):

.. math:: L_V(\psi) = \tfrac{1}{B}\textstyle\sum_i (V_\psi(s_i) - y_i)^2

and the behaviour-cloning term keeps only the dataset actions the critic rates above the state's
value:

.. math::
    w_i = \mathbb 1[Q_1(s_i, a_i) > V(s_i)],\qquad
    L_\pi(\theta) = -\frac{\alpha}{\mathrm{sg}(\frac1B\sum_i |Q_1(s_i, \pi(s_i))|)}\,\frac1B\sum_i Q_1(s_i, \pi(s_i))
        + \frac{1}{B}\sum_i \frac{w_i}{A}\lVert \pi(s_i) - a_i \rVert^2

with :math:`\alpha = 2.5` and, by default, the robust critic (the ASPC paper's wPC*).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field
from torch import Tensor

from metaconstraint.algorithms.base import register_algorithm
from metaconstraint.algorithms.td3bc import TD3BC, TD3BCConfig, gradient_step
from metaconstraint.engine import adam
from metaconstraint.rl.networks import Network, init_members, q1, value_network


def wpc_weights(q_data: Tensor, values: Tensor) -> Tensor:
    """``w = 1[Q1(s, a) > V(s)]``: ``(B,)`` ones and zeros."""
    return (q_data > values).to(q_data.dtype)


def weighted_td3bc_loss(alpha: Tensor, policy_actions: Tensor, q_values: Tensor, dataset_actions: Tensor, weights: Tensor) -> Tensor:
    """``-alpha * mean Q / sg(mean |Q|) + mean_{B,A}(w * (pi(s) - a)^2)`` for ``(B, A)`` actions, ``(B,)`` Q and w."""
    lam = alpha / q_values.abs().mean().detach()
    return -lam * q_values.mean() + (weights.unsqueeze(-1) * (policy_actions - dataset_actions).pow(2)).mean()


def value_regression_loss(value: Network, params, states: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """``mean (V(s) - y)^2`` and ``mean V(s)`` for ``(B, obs_dim)`` states and ``(B,)`` targets (one member)."""
    values = value.apply(params, states)
    return (values - targets).pow(2).mean(), values.mean()


@dataclass(frozen=True)
class WPCObjective:
    """TD3+BC with the BC term weighted by ``1[Q1(s, a) > V(s)]``; critic and value in ``frozen``."""

    actor: Network
    critic: Network
    value: Network
    scale_name: str = "alpha"

    def weights(self, frozen, batch) -> Tensor:
        states = batch["observations"]
        with torch.no_grad():
            return wpc_weights(q1(self.critic, frozen["critic"], states, batch["actions"]), self.value.apply(frozen["value"], states))

    def inner(self, params, meta, batch, frozen) -> Tensor:
        states = batch["observations"]
        actions = self.actor.apply(params, states)
        q_values = q1(self.critic, frozen["critic"], states, actions)
        return weighted_td3bc_loss(meta[self.scale_name], actions, q_values, batch["actions"], self.weights(frozen, batch))

    def at_updated(self, context) -> Tensor:
        return weighted_td3bc_loss(
            context.meta[self.scale_name],
            context.updated_policy_actions,
            context.q_updated,
            context.batch["actions"],
            self.weights(context.frozen, context.batch),
        )


class WPCConfig(TD3BCConfig):
    value_lr: float = Field(3e-4, gt=0, description="Adam learning rate of V(s).")


@register_algorithm
class WPC(TD3BC):
    name = "wpc"
    Config = WPCConfig

    def __init__(self, config, spec, num_members, device):
        self.value = value_network(spec.observation_dim)
        super().__init__(config, spec, num_members, device)
        self.value_optimizer = adam(config.value_lr)

    def build_objective(self):
        return WPCObjective(self.actor, self.critic, self.value)

    def init_state(self, seeds):
        state = super().init_state(seeds)
        state["value"] = init_members(self.value, seeds, self.device, salt=3)
        state["value_opt"] = self.value_optimizer.init(state["value"])
        return state

    def frozen_inputs(self, state):
        return {"critic": state["critic"], "value": state["value"]}

    def _member_value_loss(self, params, states, targets):
        return value_regression_loss(self.value, params, states, targets)

    def update_auxiliary(self, state, batch, bootstrap):
        state["value"], state["value_opt"], loss, v_mean = gradient_step(
            self._member_value_loss, self.value_optimizer, state["value"], state["value_opt"],
            batch["observations"], bootstrap["target"], num_members=self.num_members,
        )
        return {"value_loss": loss, "v_mean": v_mean}
