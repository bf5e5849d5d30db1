r"""The TD3+BC actor objective (Fujimoto & Gu 2021, eq. 3; ASPC's inner objective).

.. math::
    L(\theta; \alpha) = -\lambda\,\frac{1}{B}\sum_i Q_1(s_i, \pi_\theta(s_i))
        + \frac{1}{B}\sum_i \frac{1}{A}\lVert \pi_\theta(s_i) - a_i \rVert^2,
    \qquad \lambda = \frac{\alpha}{\mathrm{sg}\big(\frac{1}{B}\sum_i |Q_1(s_i, \pi_\theta(s_i))|\big)}
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from metaconstraint.rl.networks import Network, q1


def td3bc_loss(alpha: Tensor, policy_actions: Tensor, q_values: Tensor, dataset_actions: Tensor) -> Tensor:
    """``-alpha * mean Q / sg(mean |Q|) + MSE(pi(s), a)`` for ``(B, A)`` actions and ``(B,)`` values."""
    lam = alpha / q_values.abs().mean().detach()
    return -lam * q_values.mean() + (policy_actions - dataset_actions).pow(2).mean()


@dataclass(frozen=True)
class TD3BCObjective:
    """TD3+BC with the Q-term scale ``alpha``; the critic comes in ``frozen["critic"]``."""

    actor: Network
    critic: Network
    scale_name: str = "alpha"

    def inner(self, params, meta, batch, frozen) -> Tensor:
        states = batch["observations"]
        actions = self.actor.apply(params, states)
        q_values = q1(self.critic, frozen["critic"], states, actions)
        return td3bc_loss(meta[self.scale_name], actions, q_values, batch["actions"])

    def at_updated(self, context) -> Tensor:
        return td3bc_loss(
            context.meta[self.scale_name], context.updated_policy_actions, context.q_updated, context.batch["actions"]
        )
