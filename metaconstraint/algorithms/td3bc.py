r"""TD3+BC (Fujimoto & Gu, 2021) with the robust critic (the ASPC paper's TD3+BC*).

One iteration (:meth:`TD3BC.update`):

1. Critic, every iteration: the TD3 target with smoothing noise and the twin-critic step
   (:mod:`metaconstraint.algorithms.td3`).
2. Every ``policy_freq`` iterations: the actor step on the TD3+BC objective
   (:mod:`metaconstraint.objectives.td3bc`) at the scale ``alpha``, then Polyak averaging of both
   targets with ``tau``:

.. math::
    L(\theta; \alpha) = -\frac{\alpha}{\mathrm{sg}\big(\frac1B\sum_i |Q_1(s_i, \pi_\theta(s_i))|\big)}
        \frac{1}{B}\sum_i Q_1(s_i, \pi_\theta(s_i)) + \frac{1}{B}\sum_i \frac{1}{A}\lVert \pi_\theta(s_i) - a_i \rVert^2

``alpha`` is a config value here; ASPC (:mod:`metaconstraint.algorithms.aspc`) is this algorithm with
an adaptive config, which makes alpha a learned meta-parameter (:mod:`metaconstraint.algorithms.adaptive`).
"""

from __future__ import annotations

import torch
from pydantic import Field

from metaconstraint.algorithms.adaptive import actor_problem, make_scale, scale_state
from metaconstraint.algorithms.base import Algorithm, register_algorithm
from metaconstraint.algorithms.td3 import TD3Backbone, TD3Config, TD3Phases, critic_shape
from metaconstraint.objectives import build_objective


class TD3BCConfig(TD3Config):
    alpha: float = Field(2.5, gt=0, description="Q-term scale of the actor objective (fixed).")


@register_algorithm
class TD3BC(Algorithm):
    name = "td3bc"
    Config = TD3BCConfig
    member_fields = ("alpha",)

    def __init__(self, config, spec, num_members, device):
        super().__init__(config, spec, num_members, device)
        self.td3 = TD3Backbone(config, spec, num_members, critic_shape=critic_shape(config))
        self.actor, self.critic = self.td3.actor, self.td3.critic
        self.objective = build_objective(getattr(config, "objective", "td3bc"), "td3bc", self.actor, self.critic)
        self.scale = make_scale(self, config, self.objective, init_field="alpha", actor_interval=config.policy_freq)
        self.problem = actor_problem(self.objective, self.td3.actor_optimizer, self.actor, self.critic, num_members, self.scale)
        self.phases = TD3Phases(self, self.critic_phase)

    def init_state(self, seeds):
        return {**self.td3.init_state(seeds, self.device), **scale_state(self.problem, self.scale, self.member_values, self.device)}

    def update(self, state, sampler, iteration):
        batch = sampler.sample()
        noise = sampler.normal(*batch["actions"].shape[1:])
        metrics = self.phases.critic(state, batch, noise)
        if iteration % self.config.policy_freq == 0:
            metrics.update(self.phases.actor(state, batch, iteration))
        return state, metrics

    def critic_phase(self, state, batch, noise):
        """Target bootstrap and the critic step."""
        bootstrap = self.td3.bootstrap(state, batch, noise)
        return self.td3.critic_step(state, batch, bootstrap["target"])

    def frozen_inputs(self, state):
        """What the actor objective reads besides the actor."""
        return {"critic": state["critic"]}

    def update_actor(self, state, batch, frozen, iteration):
        return self.scale.actor_step(self.problem, state, batch, frozen, iteration)

    def compile(self):
        return self.phases.compile()

    @torch.no_grad()
    def act(self, state, observations):
        return self.actor.apply(state["actor"], observations)
