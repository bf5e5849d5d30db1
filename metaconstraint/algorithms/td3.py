r"""The TD3 family's shared pieces (Fujimoto et al., 2018), called by TD3+BC, ASPC, wPC, A2PR and ReBRAC.

Target bootstrap with smoothing noise and the twin-critic step (TD3, eq. 1-2):

.. math::
    \tilde a' = \mathrm{clip}\big(\pi_{\bar\theta}(s') + \mathrm{clip}(\sigma\epsilon, -c, c)\,a_{max}, -a_{max}, a_{max}\big),
    \quad \epsilon \sim \mathcal N(0, I),\qquad
    y = r + \gamma (1 - d) \big(\min_{j=1,2} Q_{\bar\phi_j}(s', \tilde a') - p(\tilde a')\big),

.. math:: L_Q = \textstyle\sum_j \tfrac{1}{B}\sum (Q_{\phi_j}(s, a) - y)^2

(:math:`p` a penalty of the next action, ReBRAC's; zero otherwise), and Polyak averaging of the
targets, :math:`\bar\phi \leftarrow (1-\tau)\bar\phi + \tau\phi`. :class:`TD3Backbone` holds the
networks and optimizers and offers these as steps on the state; each algorithm's ``update`` calls
them in its paper's order.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import torch
from pydantic import Field
from torch import Tensor

from metaconstraint.algorithms.base import AlgorithmConfig, ProblemSpec
from metaconstraint.engine import adam, detach_tree, per_member, value_and_grad
from metaconstraint.engine.compiled import compiled_or_eager
from metaconstraint.rl.networks import deterministic_actor, init_members, twin_critic


class TD3Config(AlgorithmConfig):
    """The TD3 settings every TD3-backbone method (TD3+BC, ASPC, wPC, A2PR, ReBRAC) shares."""

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


def critic_shape(config: TD3Config, classic_hidden: tuple[int, ...] = (256, 256)) -> dict[str, Any]:
    """The twin critic's widths: robust 3 x 256 with LayerNorm, or classic (TD3's 2 x 256 by default)."""
    if config.critic == "classic":
        return {"hidden": classic_hidden, "robust": False}
    return {"hidden": (256, 256, 256), "robust": True}


def smoothed_next_actions(actor, target_actor, next_observations, noise, config, max_action):
    """``a~' = clip(pi_target(s') + clip(sigma * eps, -c, c) * a_max, +-a_max)``, ``(B, A)``;
    ``noise`` is the standard normal draw ``eps`` ``(B, A)``."""
    smoothing = (noise * config.policy_noise).clamp(-config.noise_clip, config.noise_clip) * max_action
    return (actor.apply(target_actor, next_observations) + smoothing).clamp(-max_action, max_action)


def td3_target(critic, target_critic, batch, next_actions, discount, next_penalty=None):
    """``y = r + gamma (1 - d) (min_j Q_target_j(s', a~') - penalty)``, ``(B,)`` (penalty: ReBRAC's BC term)."""
    target_q = critic.apply(target_critic, batch["next_observations"], next_actions).min(dim=-2).values
    if next_penalty is not None:
        target_q = target_q - next_penalty
    return batch["rewards"] + discount * (1.0 - batch["terminals"]) * target_q


def critic_loss(critic, critic_params, batch, target):
    """One member's twin-critic loss ``sum_j mean_B (Q_j(s, a) - y)^2`` and ``mean Q``."""
    q = critic.apply(critic_params, batch["observations"], batch["actions"])
    return (q - target.unsqueeze(-2)).pow(2).mean(-1).sum(), q.mean()


def gradient_step(member_loss, optimizer, params, opt_state, *inputs, num_members):
    """One real optimizer step on ``sum_M member_loss(params, *inputs)``; ``member_loss`` returns
    ``(loss, aux)`` for one member. Returns ``(params, opt_state, loss (M,), aux)``."""

    def summed(p):
        loss, aux = per_member(member_loss, num_members)(p, *inputs)
        return loss.sum(), (loss, aux)

    grads, _, (loss, aux) = value_and_grad(summed, params)
    with torch.no_grad():
        params, opt_state = optimizer.step(grads, opt_state, params)
    return params, opt_state, loss, aux


@torch.no_grad()
def polyak_update(state: dict[str, Any], pairs: tuple[tuple[str, str], ...], tau: float) -> None:
    """``target <- (1 - tau) target + tau online`` in place, for each ``(online, target)`` key pair."""
    for online, target in pairs:
        keys = list(state[target])
        torch._foreach_lerp_([state[target][k] for k in keys], [state[online][k] for k in keys], tau)


NextPenalty = Callable[[dict[str, Tensor], Tensor], Tensor]
"""``(batch, next_actions) -> (B,)``: what the critic target subtracts (ReBRAC's BC penalty)."""


class TD3Backbone:
    """A deterministic actor, a twin critic, their targets and Adam optimizers, and the TD3 steps on them.

    ``actor_hidden``: the actor's widths; ``critic_shape``: :func:`critic_shape`'s form;
    ``next_penalty``: subtracted from the target Q (one member's tensors).
    """

    def __init__(
        self,
        config: TD3Config,
        spec: ProblemSpec,
        num_members: int,
        *,
        actor_hidden: tuple[int, ...] = (256, 256),
        critic_shape: dict[str, Any],
        next_penalty: NextPenalty | None = None,
    ):
        self.config = config
        self.max_action = spec.max_action
        self.num_members = num_members
        self.actor = deterministic_actor(spec.observation_dim, spec.action_dim, spec.max_action, hidden=actor_hidden)
        self.critic = twin_critic(spec.observation_dim, spec.action_dim, **critic_shape)
        self.actor_optimizer = adam(config.actor_lr)
        self.critic_optimizer = adam(config.critic_lr)
        self.next_penalty = next_penalty
        self._bootstrap = per_member(self._member_bootstrap, num_members)

    def init_state(self, seeds: list[int], device: torch.device) -> dict[str, Any]:
        """Actor (salt 1), critic (salt 2), their target copies and optimizer states."""
        actor = init_members(self.actor, seeds, device, salt=1)
        critic = init_members(self.critic, seeds, device, salt=2)
        return {
            "actor": actor,
            "critic": critic,
            "target_actor": detach_tree({k: v.clone() for k, v in actor.items()}),
            "target_critic": detach_tree({k: v.clone() for k, v in critic.items()}),
            "actor_opt": self.actor_optimizer.init(actor),
            "critic_opt": self.critic_optimizer.init(critic),
        }

    def _member_bootstrap(self, target_critic, target_actor, batch, noise):
        next_actions = smoothed_next_actions(
            self.actor, target_actor, batch["next_observations"], noise, self.config, self.max_action
        )
        penalty = None if self.next_penalty is None else self.next_penalty(batch, next_actions)
        target = td3_target(self.critic, target_critic, batch, next_actions, self.config.discount, penalty)
        return {"target": target, "next_actions": next_actions}

    @torch.no_grad()
    def bootstrap(self, state, batch, noise) -> dict[str, Tensor]:
        """The critic target ``y`` ``(M, B)`` and the smoothed next actions ``a~'`` ``(M, B, A)``."""
        return self._bootstrap(state["target_critic"], state["target_actor"], batch, noise)

    def _member_critic_loss(self, critic_params, batch, target):
        return critic_loss(self.critic, critic_params, batch, target)

    def critic_step(self, state, batch, target) -> dict[str, Tensor]:
        """One Adam step of the twin critic towards ``target`` ``(M, B)``."""
        state["critic"], state["critic_opt"], loss, q_mean = gradient_step(
            self._member_critic_loss, self.critic_optimizer, state["critic"], state["critic_opt"], batch, target,
            num_members=self.num_members,
        )
        return {"critic_loss": loss, "q_mean": q_mean}

    def update_targets(self, state) -> None:
        polyak_update(state, (("actor", "target_actor"), ("critic", "target_critic")), self.config.tau)


class TD3Phases:
    """A TD3-backbone iteration as phases that are pure functions of the state and the iteration's
    draws, eager or compiled (:meth:`compile`): ``critic(state, batch, noise)`` every iteration;
    every ``policy_freq``-th, ``first_order_actor(state, batch)``, or on the scale's meta-iterations
    ``meta(state, batch)`` (the bilevel actor step; compiled as a graph of its own). Both actor
    phases step ``algorithm.problem`` (read at each call) on what ``algorithm.frozen_inputs(state)``
    gives the objective, then update the targets."""

    def __init__(self, algorithm, critic_phase):
        self.algorithm = algorithm
        self.scale = algorithm.scale
        self.critic = critic_phase

    def first_order_actor(self, state, batch) -> dict[str, Tensor]:
        """The first-order actor step at the scale's current value, and the target updates."""
        algorithm = self.algorithm
        metrics = self.scale.actor_step(algorithm.problem, state, batch, algorithm.frozen_inputs(state), None)
        algorithm.td3.update_targets(state)
        return metrics

    def meta(self, state, batch) -> dict[str, Tensor]:
        """A meta-iteration's actor phase as one compilable graph: the bilevel actor step (nested
        ``torch.func.grad``), the meta-update and the target updates."""
        algorithm = self.algorithm
        metrics = self.scale.meta_step(algorithm.problem, state, batch, algorithm.frozen_inputs(state))
        algorithm.td3.update_targets(state)
        return metrics

    def actor(self, state, batch, iteration: int) -> dict[str, Tensor]:
        if self.scale.is_meta_iteration(iteration):
            return self.meta(state, batch)
        return self.first_order_actor(state, batch)

    def compile(self) -> bool:
        """Compile the critic phase and the first-order actor phase with ``torch.compile`` (and the
        meta phase, where the scale is learned). Gradients are then taken by ``torch.func.grad`` and
        Adam is written out of place, so forward, backward and optimizer fuse into one graph each.
        The first step compiles with static step counts, the second recompiles with the optimizers'
        step counts symbolic; shapes stay static. Where compiling fails (no C++ compiler, say), a
        warning and the eager phases."""
        self.critic = compiled_or_eager(self.critic)
        self.first_order_actor = compiled_or_eager(self.first_order_actor)
        if self.scale.learned:
            self.meta = compiled_or_eager(self.meta)
        return True
