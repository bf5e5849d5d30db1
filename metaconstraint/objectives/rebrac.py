r"""The ReBRAC actor objective (Tarasov et al., NeurIPS 2023), its BC coefficient as the scale.

.. math::
    L(\theta; \beta) = \frac{1}{B}\sum_i \Big(\beta\lVert \pi(s_i) - a_i\rVert^2
        - \frac{\min_j Q_j(s_i, \pi(s_i))}{\mathrm{sg}\big(\frac1B\sum_k |\min_j Q_j(s_k, \pi(s_k))|\big)}\Big)

(squared norms summed over action dimensions). The scale is the BC coefficient :math:`\beta`
(``actor_bc_coef``), where TD3+BC's alpha scales the Q term. It runs on the ReBRAC backbone
(:mod:`metaconstraint.algorithms.rebrac`: LayerNorm critics with the BC penalty in their target,
a 3 x 256 actor); ``frozen`` holds the critic.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from metaconstraint.rl.networks import Network


def rebrac_actor_loss(beta: Tensor, policy_actions: Tensor, q_values: Tensor, dataset_actions: Tensor) -> Tensor:
    """``mean_B(beta * ||pi(s) - a||^2 - Q / sg(mean |Q|))`` for ``(B, A)`` actions and ``(B,)`` values."""
    bc = (policy_actions - dataset_actions).pow(2).sum(-1)
    return (beta * bc - q_values / q_values.abs().mean().detach()).mean()


@dataclass(frozen=True)
class ReBRACObjective:
    """ReBRAC's actor loss with the BC coefficient ``beta`` as its scale; the critic in ``frozen``."""

    actor: Network
    critic: Network
    scale_name: str = "beta"

    def loss(self, beta, critic_params, states, policy_actions, dataset_actions) -> Tensor:
        q_values = self.critic.apply(critic_params, states, policy_actions).min(dim=-2).values
        return rebrac_actor_loss(beta, policy_actions, q_values, dataset_actions)

    def inner(self, params, meta, batch, frozen) -> Tensor:
        states = batch["observations"]
        return self.loss(meta[self.scale_name], frozen["critic"], states, self.actor.apply(params, states), batch["actions"])

    def at_updated(self, context) -> Tensor:
        return self.loss(
            context.meta[self.scale_name], context.frozen["critic"], context.batch["observations"],
            context.updated_policy_actions, context.batch["actions"],
        )
