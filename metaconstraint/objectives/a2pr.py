r"""The A2PR actor objective (Liu et al., ICML 2024): TD3+BC whose BC target is the better of the
dataset action and the VAE's reconstruction of the policy's action, by the critic's advantage.

.. math::
    L(\theta; \alpha) = -\frac{\alpha}{\mathrm{sg}\,\overline{|Q_1(s,\pi)|}}\,\overline{Q_1(s,\pi)}
    + \frac{1}{BA}\sum_i m_i \lVert \pi(s_i) - \hat a_i\rVert^2,\qquad
    r_i = \mathrm{VAE}(s_i, \pi(s_i)),

    \hat a_i = r_i \text{ if } Q_1(s_i,r_i) - V(s_i) \ge Q_1(s_i,a_i) - V(s_i) \text{ else } a_i,\qquad
    m_i = \mathrm{mask}\,\big(\mathbb 1[Q_1(s_i,r_i) \ge V(s_i)] + \mathbb 1[Q_1(s_i,a_i) > V(s_i)]\big).

As in the released code, the gradient of the BC term also flows through :math:`r_i`. It runs on
the A2PR backbone (:mod:`metaconstraint.algorithms.a2pr`), which trains :math:`V` and the VAE,
puts ``critic``, ``value`` and ``vae`` in ``frozen`` and the VAE's latent draw in
``batch["vae_noise"]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from metaconstraint.rl.networks import Network, q1


def a2pr_bc_target(
    reconstructed: Tensor, dataset_actions: Tensor, q_reconstructed: Tensor, q_data: Tensor, values: Tensor, mask: float
) -> tuple[Tensor, Tensor]:
    """The BC target ``(B, A)`` and its weight ``(B,)``.

    ``target = r`` where ``Q1(s, r) - V(s) >= Q1(s, a) - V(s)``, else ``a``;
    ``weight = mask * (1[Q1(s, r) >= V(s)] + 1[Q1(s, a) > V(s)])`` (0, mask or 2 mask).
    """
    use_reconstruction = (q_reconstructed - values) >= (q_data - values)
    target = torch.where(use_reconstruction.unsqueeze(-1), reconstructed, dataset_actions)
    weights = mask * ((q_reconstructed >= values).to(values.dtype) + (q_data > values).to(values.dtype))
    return target, weights


@dataclass(frozen=True)
class A2PRObjective:
    """A2PR's actor loss; ``frozen`` holds critic, value and VAE, ``batch["vae_noise"]`` the latent draw ``(B, L)``."""

    actor: Network
    critic: Network
    value: Network
    vae: Network
    mask: float
    scale_name: str = "alpha"

    def loss(self, alpha, frozen, batch, policy_actions, q_policy) -> Tensor:
        states, actions = batch["observations"], batch["actions"]
        reconstructed, _, _ = self.vae.apply(frozen["vae"], states, policy_actions, batch["vae_noise"])
        with torch.no_grad():
            values = self.value.apply(frozen["value"], states)
            q_data = q1(self.critic, frozen["critic"], states, actions)
            q_reconstructed = q1(self.critic, frozen["critic"], states, reconstructed)
        target, weights = a2pr_bc_target(reconstructed, actions, q_reconstructed, q_data, values, self.mask)
        lam = alpha / q_policy.abs().mean().detach()
        return -lam * q_policy.mean() + (weights.unsqueeze(-1) * (policy_actions - target).pow(2)).mean()

    def inner(self, params, meta, batch, frozen) -> Tensor:
        policy_actions = self.actor.apply(params, batch["observations"])
        q_policy = q1(self.critic, frozen["critic"], batch["observations"], policy_actions)
        return self.loss(meta[self.scale_name], frozen, batch, policy_actions, q_policy)

    def at_updated(self, context) -> Tensor:
        return self.loss(
            context.meta[self.scale_name], context.frozen, context.batch, context.updated_policy_actions, context.q_updated
        )
