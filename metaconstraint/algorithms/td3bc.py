r"""TD3+BC (Fujimoto & Gu, 2021) with the robust critic (the ASPC paper's TD3+BC*).

Critic, every iteration (TD3, eq. 1-2):

.. math::
    \tilde a' = \mathrm{clip}\big(\pi_{\bar\theta}(s') + \mathrm{clip}(\epsilon, -c, c), -a_{max}, a_{max}\big),
    \quad \epsilon \sim \mathcal N(0, \sigma^2),\qquad
    y = r + \gamma (1 - d) \min_{j=1,2} Q_{\bar\phi_j}(s', \tilde a'),\qquad
    L_Q = \sum_j \tfrac{1}{B}\textstyle\sum (Q_{\phi_j}(s, a) - y)^2

Actor, every ``policy_freq`` iterations: the TD3+BC objective with fixed ``alpha``
(:mod:`metaconstraint.objectives.td3bc`), then Polyak averaging of both targets with ``tau``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from metaconstraint.algorithms.base import Algorithm, AlgorithmConfig, register_algorithm
from metaconstraint.engine import BilevelProblem, MetaParameters, adam, detach_tree, inner_step, per_member
from metaconstraint.objectives.td3bc import TD3BCObjective
from metaconstraint.outer_losses import context_factory
from metaconstraint.rl.networks import deterministic_actor, init_members, twin_critic


class TD3BCConfig(AlgorithmConfig):
    alpha: float = Field(2.5, gt=0, description="Q-term scale of the actor objective (fixed).")
    batch_size: int = Field(256, gt=0)
    discount: float = Field(0.99, gt=0, le=1)
    tau: float = Field(0.005, gt=0, le=1, description="Polyak rate of the target networks.")
    policy_noise: float = Field(0.2, ge=0, description="Target policy smoothing noise (x max_action).")
    noise_clip: float = Field(0.5, ge=0, description="Clip of the smoothing noise (x max_action).")
    policy_freq: int = Field(2, ge=1, description="Actor and target update every this many iterations.")
    actor_lr: float = Field(3e-4, gt=0)
    critic_lr: float = Field(3e-4, gt=0)
    critic: Literal["robust", "classic"] = Field(
        "robust", description="robust: 3x256 + LayerNorm (the paper's *); classic: TD3's 2x256."
    )
    normalize_states: bool = True


def critic_loss(critic, actor, critic_params, target_critic, target_actor, batch, noise, config, max_action):
    """One member's TD3 critic loss; ``noise`` is a standard normal ``(B, A)`` draw."""
    with torch.no_grad():
        smoothing = (noise * config.policy_noise).clamp(-config.noise_clip, config.noise_clip) * max_action
        next_actions = (actor.apply(target_actor, batch["next_observations"]) + smoothing).clamp(-max_action, max_action)
        target_q = critic.apply(target_critic, batch["next_observations"], next_actions).min(dim=-2).values
        target = batch["rewards"] + config.discount * (1.0 - batch["terminals"]) * target_q
    q = critic.apply(critic_params, batch["observations"], batch["actions"])
    return (q - target.unsqueeze(-2)).pow(2).mean(-1).sum(), q.mean()


@register_algorithm
class TD3BC(Algorithm):
    name = "td3bc"
    Config = TD3BCConfig

    def __init__(self, config, spec, num_members, device):
        super().__init__(config, spec, num_members, device)
        self.actor = deterministic_actor(spec.observation_dim, spec.action_dim, spec.max_action)
        self.critic = twin_critic(spec.observation_dim, spec.action_dim, **self._critic_shape())
        self.objective = TD3BCObjective(self.actor, self.critic)
        self.actor_optimizer = adam(config.actor_lr)
        self.critic_optimizer = adam(config.critic_lr)
        self.problem = BilevelProblem(
            inner_objective=self.objective.inner,
            optimizer=self.actor_optimizer,
            outer_losses=self.outer_losses(),
            meta_parameters=MetaParameters(self.meta_parameter_specs()),
            make_context=context_factory(self.actor, self.critic, self.objective),
            num_members=num_members,
        )
        self._critic_loss = per_member(self._member_critic_loss, num_members)

    def _critic_shape(self) -> dict[str, Any]:
        if self.config.critic == "classic":
            return {"hidden": (256, 256), "robust": False}
        return {"hidden": (256, 256, 256), "robust": True}

    # Overridden by ASPC: TD3+BC has no meta-parameters and no outer losses.
    def meta_parameter_specs(self) -> list:
        return []

    def outer_losses(self) -> list:
        return []

    def init_state(self, seeds):
        actor = init_members(self.actor, seeds, self.device, salt=1)
        critic = init_members(self.critic, seeds, self.device, salt=2)
        return {
            "actor": actor,
            "critic": critic,
            "target_actor": detach_tree({k: v.clone() for k, v in actor.items()}),
            "target_critic": detach_tree({k: v.clone() for k, v in critic.items()}),
            "actor_opt": self.actor_optimizer.init(actor),
            "critic_opt": self.critic_optimizer.init(critic),
            "meta": self.problem.meta_parameters.init(self.num_members, self.device),
            "outer": self.problem.init_outer_state(self.device),
        }

    def _member_critic_loss(self, critic_params, target_critic, target_actor, batch, noise):
        return critic_loss(
            self.critic, self.actor, critic_params, target_critic, target_actor, batch, noise, self.config, self.spec.max_action
        )

    def update_critic(self, state, batch, noise):
        params = {k: v.detach().requires_grad_() for k, v in state["critic"].items()}
        with torch.enable_grad():
            loss, q_mean = self._critic_loss(params, state["target_critic"], state["target_actor"], batch, noise)
            grads = torch.autograd.grad(loss.sum(), list(params.values()))
        with torch.no_grad():
            state["critic"], state["critic_opt"] = self.critic_optimizer.step(
                dict(zip(params, grads)), state["critic_opt"], state["critic"]
            )
        return {"critic_loss": loss.detach(), "q_mean": q_mean.detach()}

    def scale_values(self, state) -> dict[str, Tensor]:
        """The constraint scale the actor objective reads this iteration, ``{name: (M,)}``."""
        return {"alpha": torch.full((self.num_members,), self.config.alpha, device=self.device)}

    def update_actor(self, state, batch, iteration):
        frozen = {"critic": state["critic"]}
        state["actor"], state["actor_opt"], loss = inner_step(
            self.problem, state["actor"], state["actor_opt"], self.scale_values(state), batch, frozen
        )
        return {"actor_loss": loss}

    @torch.no_grad()
    def update_targets(self, state):
        tau = self.config.tau
        for online, target in (("actor", "target_actor"), ("critic", "target_critic")):
            keys = list(state[target])
            torch._foreach_lerp_([state[target][k] for k in keys], [state[online][k] for k in keys], tau)

    def update(self, state, sampler, iteration):
        batch = sampler.sample()
        noise = sampler.normal(*batch["actions"].shape[1:])
        metrics = self.update_critic(state, batch, noise)
        if iteration % self.config.policy_freq == 0:
            metrics.update(self.update_actor(state, batch, iteration))
            self.update_targets(state)
        return state, metrics

    @torch.no_grad()
    def act(self, state, observations):
        return self.actor.apply(state["actor"], observations)
