r"""Behaviour cloning: the floor every offline method must beat on expert data.

The TD3+BC actor (2 x 256, tanh output) regressed onto the dataset actions, Adam 3e-4, batch 256,
states normalised:

.. math:: L(\theta) = \frac{1}{B}\sum_i \frac{1}{A}\lVert \pi_\theta(s_i) - a_i \rVert^2
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from metaconstraint.algorithms.base import Algorithm, AlgorithmConfig, register_algorithm
from metaconstraint.algorithms.td3 import gradient_step
from metaconstraint.engine import adam
from metaconstraint.rl.networks import deterministic_actor, init_members


def bc_loss(policy_actions: Tensor, dataset_actions: Tensor) -> Tensor:
    """Plain MSE ``mean_{B,A}(pi(s) - a)^2`` for ``(B, A)`` actions."""
    return (policy_actions - dataset_actions).pow(2).mean()


class BCConfig(AlgorithmConfig):
    batch_size: int = Field(256, gt=0)
    actor_lr: float = Field(3e-4, gt=0)
    normalize_states: bool = True


@register_algorithm
class BC(Algorithm):
    name = "bc"
    Config = BCConfig

    def __init__(self, config, spec, num_members, device):
        super().__init__(config, spec, num_members, device)
        self.actor = deterministic_actor(spec.observation_dim, spec.action_dim, spec.max_action)
        self.actor_optimizer = adam(config.actor_lr)

    def init_state(self, seeds):
        actor = init_members(self.actor, seeds, self.device, salt=1)
        return {"actor": actor, "actor_opt": self.actor_optimizer.init(actor)}

    def _member_loss(self, params, batch):
        return bc_loss(self.actor.apply(params, batch["observations"]), batch["actions"]), ()

    def update(self, state, sampler, iteration):
        batch = sampler.sample()
        state["actor"], state["actor_opt"], loss, _ = gradient_step(
            self._member_loss, self.actor_optimizer, state["actor"], state["actor_opt"], batch, num_members=self.num_members
        )
        return state, {"actor_loss": loss}

    @torch.no_grad()
    def act(self, state, observations):
        return self.actor.apply(state["actor"], observations)
