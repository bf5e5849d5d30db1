r"""A2PR: Adaptive Advantage-guided Policy Regularization (Liu et al., ICML 2024), as its public code.

TD3+BC backbone with the classic twin critic, plus, every iteration after the critic step:

- a state value :math:`V(s)` regressed by MSE onto
  :math:`\min\big(y,\; r + \gamma(1-d)\min_j Q_j(s', \tilde a')\big)` (``y`` the TD3 target from the
  target networks, the second term from the online critic at the same smoothed next action);
- a VAE (BCQ's: encoder and decoder 750-750 ReLU, latent ``2A``, log-std clamped to [-4, 15]) fit to
  the dataset actions the critic rates above the state's value:
  :math:`L_{VAE} = \frac{1}{BA}\sum_i \beta_{vae}\mathbb 1[Q_1(s_i,a_i) > V(s_i)]\lVert u_i - a_i\rVert^2 + \tfrac12 KL`.

Every ``policy_freq`` iterations the actor minimises

.. math::
    -\frac{\alpha}{\mathrm{sg}\,\overline{|Q_1(s,\pi)|}}\,\overline{Q_1(s,\pi)}
    + \frac{1}{BA}\sum_i m_i \lVert \pi(s_i) - \hat a_i\rVert^2,\qquad
    r_i = \mathrm{VAE}(s_i, \pi(s_i)),

    \hat a_i = r_i \text{ if } Q_1(s_i,r_i) - V(s_i) \ge Q_1(s_i,a_i) - V(s_i) \text{ else } a_i,\qquad
    m_i = \mathrm{mask}\,\big(\mathbb 1[Q_1(s_i,r_i) \ge V(s_i)] + \mathbb 1[Q_1(s_i,a_i) > V(s_i)]\big).

As in the released code, the gradient of the BC term also flows through :math:`r_i = \mathrm{VAE}(s_i,
\pi(s_i))` (the VAE itself is not updated by the actor step).

Networks (``preset``, one setting for every dataset): ``public-code`` (the default) is the released
code's, a 4 x 256 twin critic and value net and a 3 x 256 actor (ReLU, no LayerNorm);
``reference-2x256`` is TD3's 2 x 256 everywhere, what the 20k grid of docs/results.md ran before
presets existed (its runs carry no ``preset`` key and the report labels them plain ``a2pr``).
``critic = "robust"`` replaces the critic by the paper's robust 3 x 256 LayerNorm critic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from metaconstraint.algorithms.base import register_algorithm
from metaconstraint.algorithms.presets import Preset, PresetConfig
from metaconstraint.algorithms.td3bc import TD3BC, TD3BCConfig, gradient_step
from metaconstraint.algorithms.wpc import value_regression_loss
from metaconstraint.engine import adam
from metaconstraint.rl.networks import Network, init_members, mlp, q1, value_network


# ----------------------------------------------------------------------------- the VAE
def vae_network(obs_dim: int, action_dim: int, max_action: float, hidden: int = 750, latent_dim: int | None = None) -> Network:
    r"""BCQ's VAE. ``apply(params, s (B, obs), a (B, A), eps (B, L)) -> (u (B, A), mean (B, L), log_std (B, L))``:

    .. math:: (\mu, \log\sigma) = E(s, a),\ \log\sigma \in [-4, 15],\quad z = \mu + \sigma\epsilon,\quad
        u = a_{max}\tanh D(s, z)
    """
    latent = latent_dim or 2 * action_dim
    encoder = mlp((obs_dim + action_dim, hidden, hidden, 2 * latent))  # one head for mean and log-std
    decoder = mlp((obs_dim + latent, hidden, hidden, action_dim))

    def init(generator):
        return {
            **{f"encoder.{k}": v for k, v in encoder.init(generator).items()},
            **{f"decoder.{k}": v for k, v in decoder.init(generator).items()},
        }

    def part(params, prefix):
        return {k[len(prefix) + 1 :]: v for k, v in params.items() if k.startswith(prefix + ".")}

    def apply(params, states, actions, noise):
        mean, log_std = encoder.apply(part(params, "encoder"), torch.cat([states, actions], dim=-1)).chunk(2, dim=-1)
        log_std = log_std.clamp(-4.0, 15.0)
        z = mean + log_std.exp() * noise
        decoded = decoder.apply(part(params, "decoder"), torch.cat([states, z], dim=-1))
        return max_action * torch.tanh(decoded), mean, log_std

    return Network(init, apply)


def vae_loss(reconstruction: Tensor, mean: Tensor, log_std: Tensor, actions: Tensor, weights: Tensor) -> Tensor:
    """``mean_{B,A}(w (u - a)^2) + 0.5 KL``, ``KL = -0.5 mean_{B,L}(1 + 2 log sigma - mu^2 - sigma^2)``."""
    reconstruction_loss = (weights.unsqueeze(-1) * (reconstruction - actions).pow(2)).mean()
    kl = -0.5 * (1.0 + 2.0 * log_std - mean.pow(2) - (2.0 * log_std).exp()).mean()
    return reconstruction_loss + 0.5 * kl


# ----------------------------------------------------------------------------- the actor objective
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


# ----------------------------------------------------------------------------- the algorithm
A2PR_PRESETS = {
    "public-code": Preset(
        "public-code", "The released code's networks: 4 x 256 critic and value, 3 x 256 actor.",
        {"critic_hidden": (256,) * 4, "value_hidden": (256,) * 4, "actor_hidden": (256,) * 3},
    ),
    "reference-2x256": Preset(
        "reference-2x256", "TD3's 2 x 256 networks (the 20k grid's a2pr).",
        {"critic_hidden": (256,) * 2, "value_hidden": (256,) * 2, "actor_hidden": (256,) * 2},
    ),
}


class A2PRConfig(PresetConfig, TD3BCConfig):
    PRESETS = A2PR_PRESETS
    preset: str = Field("public-code", description="Networks: public-code (4x256 critic/value, 3x256 actor) or reference-2x256.")
    critic_hidden: tuple[int, ...] = Field((256,) * 4, min_length=1, description="Hidden widths of each classic critic.")
    value_hidden: tuple[int, ...] = Field((256,) * 4, min_length=1, description="Hidden widths of V(s).")
    actor_hidden: tuple[int, ...] = Field((256,) * 3, min_length=1, description="Hidden widths of the actor.")
    critic: Literal["robust", "classic"] = Field(
        "classic", description="classic: TD3's 2x256 (A2PR's own); robust: 3x256 + LayerNorm."
    )
    mask: float = Field(1.0, ge=0, description="Weight of the advantage-gated BC term.")
    vae_weight: float = Field(1.0, ge=0, description="Weight of the VAE's advantage-gated reconstruction loss.")
    value_lr: float = Field(3e-4, gt=0)
    vae_lr: float = Field(1e-3, gt=0)
    vae_hidden: int = Field(750, gt=0)

    @classmethod
    def auto_preset(cls, dataset: str) -> str:
        return "public-code"


@register_algorithm
class A2PR(TD3BC):
    name = "a2pr"
    Config = A2PRConfig

    def __init__(self, config, spec, num_members, device):
        self.value = value_network(spec.observation_dim, config.value_hidden)
        self.vae = vae_network(spec.observation_dim, spec.action_dim, spec.max_action, config.vae_hidden)
        self.latent_dim = 2 * spec.action_dim
        super().__init__(config, spec, num_members, device)
        self.value_optimizer = adam(config.value_lr)
        self.vae_optimizer = adam(config.vae_lr)

    def _actor_shape(self):
        return {"hidden": self.config.actor_hidden}

    def _critic_shape(self):
        if self.config.critic == "classic":
            return {"hidden": self.config.critic_hidden, "robust": False}
        return super()._critic_shape()

    def build_objective(self):
        return A2PRObjective(self.actor, self.critic, self.value, self.vae, self.config.mask)

    def init_state(self, seeds):
        state = super().init_state(seeds)
        state["value"] = init_members(self.value, seeds, self.device, salt=3)
        state["value_opt"] = self.value_optimizer.init(state["value"])
        state["vae"] = init_members(self.vae, seeds, self.device, salt=4)
        state["vae_opt"] = self.vae_optimizer.init(state["vae"])
        return state

    def frozen_inputs(self, state):
        return {"critic": state["critic"], "value": state["value"], "vae": state["vae"]}

    def _member_value_loss(self, params, critic_params, batch, bootstrap):
        with torch.no_grad():
            online = self.critic.apply(critic_params, batch["next_observations"], bootstrap["next_actions"]).min(dim=-2).values
            online_target = batch["rewards"] + self.config.discount * (1.0 - batch["terminals"]) * online
            target = torch.minimum(bootstrap["target"], online_target)
        return value_regression_loss(self.value, params, batch["observations"], target)

    def _member_vae_loss(self, params, critic_params, value_params, batch, noise):
        states, actions = batch["observations"], batch["actions"]
        with torch.no_grad():
            gate = q1(self.critic, critic_params, states, actions) > self.value.apply(value_params, states)
        reconstruction, mean, log_std = self.vae.apply(params, states, actions, noise)
        loss = vae_loss(reconstruction, mean, log_std, actions, self.config.vae_weight * gate.to(actions.dtype))
        return loss, gate.to(actions.dtype).mean()

    def draw_noise(self, sampler, batch):
        """The VAE's latent draws ``(M, B, L)``: one for its training step, one for the actor's
        reconstruction ``VAE(s, pi(s))``, which travels with the batch."""
        batch_size = batch["actions"].shape[1]
        return {"vae_train_noise": sampler.normal(batch_size, self.latent_dim), "vae_noise": sampler.normal(batch_size, self.latent_dim)}

    def update_auxiliary(self, state, batch, bootstrap):
        state["value"], state["value_opt"], value_loss, v_mean = gradient_step(
            self._member_value_loss, self.value_optimizer, state["value"], state["value_opt"],
            state["critic"], batch, bootstrap, num_members=self.num_members,
        )
        state["vae"], state["vae_opt"], loss, gated = gradient_step(
            self._member_vae_loss, self.vae_optimizer, state["vae"], state["vae_opt"],
            state["critic"], state["value"], batch, batch["vae_train_noise"], num_members=self.num_members,
        )
        return {"value_loss": value_loss, "v_mean": v_mean, "vae_loss": loss, "positive_advantage": gated}
