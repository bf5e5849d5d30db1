r"""A2PR: Adaptive Advantage-guided Policy Regularization (Liu et al., ICML 2024), as its public code.

TD3+BC backbone with the classic twin critic, plus, every iteration after the critic step:

- a state value :math:`V(s)` regressed by MSE onto
  :math:`\min\big(y,\; r + \gamma(1-d)\min_j Q_j(s', \tilde a')\big)` (``y`` the TD3 target from the
  target networks, the second term from the online critic at the same smoothed next action);
- a VAE (BCQ's: encoder and decoder 750-750 ReLU, latent ``2A``, log-std clamped to [-4, 15]) fit to
  the dataset actions the critic rates above the state's value:
  :math:`L_{VAE} = \frac{1}{BA}\sum_i \beta_{vae}\mathbb 1[Q_1(s_i,a_i) > V(s_i)]\lVert u_i - a_i\rVert^2 + \tfrac12 KL`.

Every ``policy_freq`` iterations the actor step on the A2PR objective
(:mod:`metaconstraint.objectives.a2pr`: TD3+BC whose BC target is the better, by the critic's
advantage, of the dataset action and the VAE's reconstruction of the policy's action), then the
target updates. The VAE is not updated by the actor step. With an adaptive config
(``aspc --objective a2pr``, the algorithm ``aspc-a2pr``) alpha is learned.

Networks (``preset``, one setting for every dataset): ``public-code`` (the default) is the released
code's, a 4 x 256 twin critic and value net and a 3 x 256 actor (ReLU, no LayerNorm);
``reference-2x256`` is TD3's 2 x 256 everywhere, what the 20k grid of docs/results.md ran before
presets existed (its runs carry no ``preset`` key and the report labels them plain ``a2pr``).
``critic = "robust"`` replaces the critic by the paper's robust 3 x 256 LayerNorm critic.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from metaconstraint.algorithms.adaptive import AdaptiveScaleConfig, actor_problem, make_scale, scale_state
from metaconstraint.algorithms.base import Algorithm, register_algorithm
from metaconstraint.algorithms.presets import Preset, PresetConfig
from metaconstraint.algorithms.td3 import TD3Backbone, TD3Phases, critic_shape, gradient_step
from metaconstraint.algorithms.td3bc import TD3BCConfig
from metaconstraint.algorithms.wpc import value_regression_loss
from metaconstraint.engine import adam
from metaconstraint.objectives import build_objective
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
class A2PR(Algorithm):
    name = "a2pr"
    Config = A2PRConfig
    member_fields = ("alpha",)

    def __init__(self, config, spec, num_members, device):
        super().__init__(config, spec, num_members, device)
        self.td3 = TD3Backbone(
            config, spec, num_members, actor_hidden=config.actor_hidden,
            critic_shape=critic_shape(config, classic_hidden=config.critic_hidden),
        )
        self.actor, self.critic = self.td3.actor, self.td3.critic
        self.value = value_network(spec.observation_dim, config.value_hidden)
        self.vae = vae_network(spec.observation_dim, spec.action_dim, spec.max_action, config.vae_hidden)
        self.latent_dim = 2 * spec.action_dim
        self.value_optimizer = adam(config.value_lr)
        self.vae_optimizer = adam(config.vae_lr)
        self.objective = build_objective(
            getattr(config, "objective", "a2pr"), "a2pr", self.actor, self.critic, value=self.value, vae=self.vae,
            mask=config.mask,
        )
        self.scale = make_scale(self, config, self.objective, init_field="alpha", actor_interval=config.policy_freq)
        self.problem = actor_problem(self.objective, self.td3.actor_optimizer, self.actor, self.critic, num_members, self.scale)
        self.phases = TD3Phases(self, self.critic_phase)

    def init_state(self, seeds):
        state = {**self.td3.init_state(seeds, self.device), **scale_state(self.problem, self.scale, self.member_values, self.device)}
        state["value"] = init_members(self.value, seeds, self.device, salt=3)
        state["value_opt"] = self.value_optimizer.init(state["value"])
        state["vae"] = init_members(self.vae, seeds, self.device, salt=4)
        state["vae_opt"] = self.vae_optimizer.init(state["vae"])
        return state

    def update(self, state, sampler, iteration):
        batch = sampler.sample()
        noise = sampler.normal(*batch["actions"].shape[1:])
        batch.update(self.draw_vae_noise(sampler, batch))
        metrics = self.phases.critic(state, batch, noise)
        if iteration % self.config.policy_freq == 0:
            metrics.update(self.phases.actor(state, batch, iteration))
        return state, metrics

    def draw_vae_noise(self, sampler, batch):
        """The VAE's latent draws ``(M, B, L)``, made before the iteration's computation (so that it
        is one compilable function of its inputs): one for its training step, one for the actor's
        reconstruction ``VAE(s, pi(s))``; both travel with the batch."""
        batch_size = batch["actions"].shape[1]
        return {"vae_train_noise": sampler.normal(batch_size, self.latent_dim), "vae_noise": sampler.normal(batch_size, self.latent_dim)}

    def critic_phase(self, state, batch, noise):
        """Target bootstrap, the critic step, then V's and the VAE's steps."""
        bootstrap = self.td3.bootstrap(state, batch, noise)
        metrics = self.td3.critic_step(state, batch, bootstrap["target"])
        state["value"], state["value_opt"], value_loss, v_mean = gradient_step(
            self._member_value_loss, self.value_optimizer, state["value"], state["value_opt"],
            state["critic"], batch, bootstrap, num_members=self.num_members,
        )
        state["vae"], state["vae_opt"], loss, gated = gradient_step(
            self._member_vae_loss, self.vae_optimizer, state["vae"], state["vae_opt"],
            state["critic"], state["value"], batch, batch["vae_train_noise"], num_members=self.num_members,
        )
        metrics.update(value_loss=value_loss, v_mean=v_mean, vae_loss=loss, positive_advantage=gated)
        return metrics

    def _member_value_loss(self, params, critic_params, batch, bootstrap):
        """V onto ``min(y, r + gamma (1 - d) min_j Q_j(s', a~'))`` (online critic at the same next action)."""
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

    def frozen_inputs(self, state):
        return {"critic": state["critic"], "value": state["value"], "vae": state["vae"]}

    def update_actor(self, state, batch, frozen, iteration):
        return self.scale.actor_step(self.problem, state, batch, frozen, iteration)

    def compile(self):
        return self.phases.compile()

    @torch.no_grad()
    def act(self, state, observations):
        return self.actor.apply(state["actor"], observations)


class ASPCA2PRConfig(AdaptiveScaleConfig, A2PRConfig):
    BACKBONE = "a2pr"
    alpha: float = Field(2.5, gt=0, description="Initial value of the learned alpha.")
    objective: str = Field("a2pr", description="Inner objective on the A2PR backbone.")


@register_algorithm
class ASPCA2PR(A2PR):
    """A2PR with an adaptive config: the same update, alpha learned (``aspc --objective a2pr``)."""

    name = "aspc-a2pr"
    Config = ASPCA2PRConfig
