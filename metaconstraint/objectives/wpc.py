r"""The wPC actor objective (Peng et al., AAAI 2023): TD3+BC with the BC term weighted by the advantage's sign.

.. math::
    w_i = \mathbb 1[Q_1(s_i, a_i) > V(s_i)],\qquad
    L(\theta; \alpha) = -\frac{\alpha}{\mathrm{sg}(\frac1B\sum_i |Q_1(s_i, \pi(s_i))|)}\,\frac1B\sum_i Q_1(s_i, \pi(s_i))
        + \frac{1}{B}\sum_i \frac{w_i}{A}\lVert \pi(s_i) - a_i \rVert^2

It runs on the wPC backbone (:mod:`metaconstraint.algorithms.wpc`), which trains :math:`V` and
puts ``critic`` and ``value`` in ``frozen``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from metaconstraint.rl.networks import Network, q1


def wpc_weights(q_data: Tensor, values: Tensor) -> Tensor:
    """``w = 1[Q1(s, a) > V(s)]``: ``(B,)`` ones and zeros."""
    return (q_data > values).to(q_data.dtype)


def weighted_td3bc_loss(alpha: Tensor, policy_actions: Tensor, q_values: Tensor, dataset_actions: Tensor, weights: Tensor) -> Tensor:
    """``-alpha * mean Q / sg(mean |Q|) + mean_{B,A}(w * (pi(s) - a)^2)`` for ``(B, A)`` actions, ``(B,)`` Q and w."""
    lam = alpha / q_values.abs().mean().detach()
    return -lam * q_values.mean() + (weights.unsqueeze(-1) * (policy_actions - dataset_actions).pow(2)).mean()


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
