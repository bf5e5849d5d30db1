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
from pydantic import Field
from torch import Tensor

from metaconstraint.algorithms.base import Algorithm, AlgorithmConfig, register_algorithm
from metaconstraint.engine import adam, detach_tree, inner_step, per_member, value_and_grad
from metaconstraint.engine.compiled import compiled_or_eager
from metaconstraint.objectives.td3bc import TD3BCObjective
from metaconstraint.rl.networks import deterministic_actor, init_members, twin_critic


class TD3Config(AlgorithmConfig):
    """The TD3 parts every TD3-backbone method (TD3+BC, ASPC, wPC, A2PR, ReBRAC) shares."""

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


class TD3BCConfig(TD3Config):
    alpha: float = Field(2.5, gt=0, description="Q-term scale of the actor objective (fixed).")


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


@register_algorithm
class TD3BC(Algorithm):
    name = "td3bc"
    Config = TD3BCConfig
    member_fields = ("alpha",)

    def __init__(self, config, spec, num_members, device):
        super().__init__(config, spec, num_members, device)
        self.actor = deterministic_actor(spec.observation_dim, spec.action_dim, spec.max_action, **self._actor_shape())
        self.critic = twin_critic(spec.observation_dim, spec.action_dim, **self._critic_shape())
        self.objective = self.build_objective()
        self.actor_optimizer = adam(config.actor_lr)
        self.critic_optimizer = adam(config.critic_lr)
        self.problem = self.actor_problem(self.actor_optimizer)
        self._bootstrap = per_member(self._member_bootstrap, num_members)
        self._critic_phase = self.critic_phase  # compile() replaces these by their compiled forms
        self._actor_phase = self.actor_phase
        self._meta_phase = None  # compiled meta-iterations (adaptive methods); None: eager actor_phase

    def compile(self) -> bool:
        """Compile an iteration's first-order work with ``torch.compile`` as two graphs: the critic
        phase (target bootstrap, twin-critic step with its backward and Adam, the auxiliary networks)
        and the actor phase (first-order actor step, target updates). Gradients are then taken by
        ``torch.func.grad`` and Adam is written out of place, so forward, backward and optimizer fuse
        into one graph each. Adaptive methods add a third graph, the whole meta-iteration's actor
        phase (virtual step, meta-gradient, meta-update, commit, target updates), written with
        nested ``torch.func.grad`` (:meth:`compiled_meta_phase`).

        The first step compiles with static step counts, the second recompiles with the optimizers'
        step counts symbolic (so bias corrections are graph inputs); shapes stay static. Where
        compiling fails (no C++ compiler, say), a warning and the eager phases.
        """
        self._critic_phase = compiled_or_eager(self.critic_phase)
        self._actor_phase = compiled_or_eager(self.actor_phase)
        self._meta_phase = self.compiled_meta_phase()
        return True

    def compiled_meta_phase(self):
        """The compiled meta-iteration actor phase ``(state, batch) -> metrics``, or ``None``
        where there is none (fixed-scale methods)."""
        return None

    # Hooks of the TD3-backbone methods (wPC, A2PR, ReBRAC override them).
    def build_objective(self):
        return TD3BCObjective(self.actor, self.critic)

    def _actor_shape(self) -> dict[str, Any]:
        return {"hidden": (256, 256)}

    def _critic_shape(self) -> dict[str, Any]:
        if self.config.critic == "classic":
            return {"hidden": (256, 256), "robust": False}
        return {"hidden": (256, 256, 256), "robust": True}

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
            "meta": self.problem.meta_parameters.init(self.num_members, self.device, initial=self.initial_meta_values()),
            "outer": self.problem.init_outer_state(self.device),
        }

    def next_penalty(self, batch, next_actions):
        """What the critic target subtracts from ``min_j Q_target_j(s', a~')`` (TD3: nothing)."""
        return None

    def _member_bootstrap(self, target_critic, target_actor, batch, noise):
        next_actions = smoothed_next_actions(
            self.actor, target_actor, batch["next_observations"], noise, self.config, self.spec.max_action
        )
        target = td3_target(self.critic, target_critic, batch, next_actions, self.config.discount, self.next_penalty(batch, next_actions))
        return {"target": target, "next_actions": next_actions}

    @torch.no_grad()
    def bootstrap(self, state, batch, noise) -> dict[str, Tensor]:
        """The critic target ``y`` ``(M, B)`` and the smoothed next actions ``a~'`` ``(M, B, A)``."""
        return self._bootstrap(state["target_critic"], state["target_actor"], batch, noise)

    def _member_critic_loss(self, critic_params, batch, target):
        return critic_loss(self.critic, critic_params, batch, target)

    def update_critic(self, state, batch, target):
        state["critic"], state["critic_opt"], loss, q_mean = gradient_step(
            self._member_critic_loss, self.critic_optimizer, state["critic"], state["critic_opt"], batch, target,
            num_members=self.num_members,
        )
        return {"critic_loss": loss, "q_mean": q_mean}

    def update_auxiliary(self, state, batch, bootstrap) -> dict[str, Tensor]:
        """Networks trained beside the critic every iteration (wPC's and A2PR's V, A2PR's VAE)."""
        return {}

    def draw_noise(self, sampler, batch) -> dict[str, Tensor]:
        """Random draws besides the minibatch and the smoothing noise, made before the iteration's
        computation (so that it is one compilable function of its inputs); they join the batch."""
        return {}

    def scale_values(self, state) -> dict[str, Tensor]:
        """The constraint scale the actor objective reads this iteration, ``{name: (M,)}``."""
        return {"alpha": self.member_scalar("alpha")}

    def initial_meta_values(self) -> dict[str, list[float]]:
        """Per-member initial values of the learned meta-parameters where members differ (none here)."""
        return {}

    def frozen_inputs(self, state) -> dict[str, Any]:
        """What the actor objective reads besides the actor (``frozen`` of the inner objective)."""
        return {"critic": state["critic"]}

    def is_meta_iteration(self, iteration: int | None) -> bool:
        """Whether this iteration's actor step is a bilevel step (never, for fixed-scale methods;
        ``None``: a step known to be first-order)."""
        return False

    def update_actor(self, state, batch, iteration):
        """The actor step; ``iteration`` is ``None`` where the step is known to be first-order (the
        compiled actor phase, which must not depend on the iteration number)."""
        frozen = self.frozen_inputs(state)
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

    def critic_phase(self, state, batch, noise):
        """Target bootstrap, the critic step and the auxiliary networks' steps (every iteration)."""
        bootstrap = self.bootstrap(state, batch, noise)
        metrics = self.update_critic(state, batch, bootstrap["target"])
        metrics.update(self.update_auxiliary(state, batch, bootstrap))
        return metrics

    def actor_phase(self, state, batch, iteration):
        """The actor step and the target updates (every ``policy_freq`` iterations)."""
        metrics = self.update_actor(state, batch, iteration)
        self.update_targets(state)
        return metrics

    def update(self, state, sampler, iteration):
        batch = sampler.sample()
        noise = sampler.normal(*batch["actions"].shape[1:])
        batch.update(self.draw_noise(sampler, batch))
        metrics = self._critic_phase(state, batch, noise)
        if iteration % self.config.policy_freq == 0:
            if self.is_meta_iteration(iteration) and self._meta_phase is not None:
                metrics.update(self._meta_phase(state, batch))
            elif self.is_meta_iteration(iteration):
                metrics.update(self.actor_phase(state, batch, iteration))
            else:
                # first-order: the iteration number is not an input of the (compiled) actor phase
                metrics.update(self._actor_phase(state, batch, None))
        return state, metrics

    @torch.no_grad()
    def act(self, state, observations):
        return self.actor.apply(state["actor"], observations)
