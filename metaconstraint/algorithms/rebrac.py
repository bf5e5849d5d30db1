r"""ReBRAC: Revisited Behavior-Regularized Actor-Critic (Tarasov et al., NeurIPS 2023).

TD3+BC with LayerNorm critics (3 x 256, the robust critic), a 3 x 256 actor without LayerNorm, no
state normalisation, large batches, and a behaviour-cloning penalty in both losses:

.. math::
    y = r + \gamma(1-d)\Big(\min_{j} Q_{\bar\phi_j}(s', \tilde a') - \beta_{critic}\lVert \tilde a' - a' \rVert^2\Big)

(:math:`\tilde a'` the smoothed target action, :math:`a'` the dataset's next action), and

.. math::
    L_\pi(\theta) = \frac{1}{B}\sum_i \Big(\beta_{actor}\lVert \pi(s_i) - a_i\rVert^2
        - \frac{\min_j Q_j(s_i, \pi(s_i))}{\mathrm{sg}\big(\frac1B\sum_k |\min_j Q_j(s_k, \pi(s_k))|\big)}\Big)

Squared norms are summed over action dimensions; the actor loss is the ReBRAC objective
(:mod:`metaconstraint.objectives.rebrac`), whose scale is :math:`\beta_{actor}` (``actor_bc_coef``).
With an adaptive config (``aspc --objective rebrac``, the algorithm ``aspc-rebrac``) that coefficient
is learned from ``actor_bc_coef`` as its start; the critic's :math:`\beta_{critic}` stays fixed. Settings come as presets
(:mod:`metaconstraint.algorithms.presets`), chosen by the dataset's family with ``preset = "auto"``
(the default):

- ``corl-adroit`` (Adroit: pen, door, hammer, relocate): CORL's Adroit configs, batch 256, lr 3e-4
  for actor and critic, per-dataset (actor, critic) coefficients pen-human (0.1, 0.5), pen-expert
  (0.01, 0.01), door-human (0.1, 0.1), door-expert (0.05, 0.01), hammer-expert (0.01, 0.01). An
  Adroit set outside this table takes its task's expert entry (``dapg/pen/mixed-v0``: pen-expert's);
  a task without one (relocate) needs both coefficients given.
- ``corl-locomotion`` (every other dataset): CORL's one setting, lr 1e-3, batch 1024, both
  coefficients 1.0 (the field defaults).

Keys a run gives itself win over the preset; ``config.toml`` records the preset's name and every
value. The 20k grid of docs/results.md ran before presets existed, with the locomotion setting on
Adroit; its runs carry no ``preset`` key and the report labels them plain ``rebrac``.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from metaconstraint.algorithms.adaptive import AdaptiveScaleConfig, actor_problem, make_scale, scale_state
from metaconstraint.algorithms.base import Algorithm, register_algorithm
from metaconstraint.algorithms.presets import Preset, PresetConfig, expert_entry_of_task, is_adroit
from metaconstraint.algorithms.td3 import TD3Backbone, TD3Config, TD3Phases, critic_shape
from metaconstraint.objectives import build_objective


def next_action_penalty(beta: float, next_actions: Tensor, dataset_next_actions: Tensor) -> Tensor:
    """``beta * ||a~' - a'||^2``: ``(B,)``, subtracted inside the critic target."""
    return beta * (next_actions - dataset_next_actions).pow(2).sum(-1)


def _coefficients(actor: float, critic: float) -> dict[str, float]:
    return {"actor_bc_coef": actor, "critic_bc_coef": critic}


REBRAC_PRESETS = {
    "corl-locomotion": Preset(
        "corl-locomotion", "CORL's one setting: lr 1e-3, batch 1024, both coefficients 1.0.",
        {"batch_size": 1024, "actor_lr": 1e-3, "critic_lr": 1e-3, **_coefficients(1.0, 1.0)},
    ),
    "corl-adroit": Preset(
        "corl-adroit", "CORL's Adroit configs: lr 3e-4, batch 256, per-dataset coefficients.",
        {"batch_size": 256, "actor_lr": 3e-4, "critic_lr": 3e-4},
        per_dataset={
            "pen-human": _coefficients(0.1, 0.5),
            "pen-expert": _coefficients(0.01, 0.01),
            "door-human": _coefficients(0.1, 0.1),
            "door-expert": _coefficients(0.05, 0.01),
            "hammer-expert": _coefficients(0.01, 0.01),
        },
        fallback=expert_entry_of_task,
    ),
}


class ReBRACConfig(PresetConfig, TD3Config):
    PRESETS = REBRAC_PRESETS
    batch_size: int = Field(1024, gt=0)
    actor_lr: float = Field(1e-3, gt=0)
    critic_lr: float = Field(1e-3, gt=0)
    actor_bc_coef: float = Field(1.0, ge=0, description="beta_actor: BC penalty in the actor loss.")
    critic_bc_coef: float = Field(1.0, ge=0, description="beta_critic: BC penalty inside the critic target.")
    normalize_states: bool = False

    @classmethod
    def auto_preset(cls, dataset: str) -> str:
        return "corl-adroit" if is_adroit(dataset) else "corl-locomotion"


@register_algorithm
class ReBRAC(Algorithm):
    name = "rebrac"
    Config = ReBRACConfig
    member_fields = ("actor_bc_coef",)

    def __init__(self, config, spec, num_members, device):
        super().__init__(config, spec, num_members, device)
        self.td3 = TD3Backbone(
            config, spec, num_members, actor_hidden=(256, 256, 256), critic_shape=critic_shape(config),
            next_penalty=self.critic_penalty,
        )
        self.actor, self.critic = self.td3.actor, self.td3.critic
        self.objective = build_objective(getattr(config, "objective", "rebrac"), "rebrac", self.actor, self.critic)
        self.scale = make_scale(self, config, self.objective, init_field="actor_bc_coef", actor_interval=config.policy_freq)
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

    def critic_penalty(self, batch, next_actions):
        """The critic target's BC penalty ``beta_critic ||a~' - a'||^2`` (one member)."""
        return next_action_penalty(self.config.critic_bc_coef, next_actions, batch["next_actions"])

    def critic_phase(self, state, batch, noise):
        """Target bootstrap (with the BC penalty) and the critic step."""
        bootstrap = self.td3.bootstrap(state, batch, noise)
        return self.td3.critic_step(state, batch, bootstrap["target"])

    def frozen_inputs(self, state):
        return {"critic": state["critic"]}

    def update_actor(self, state, batch, frozen, iteration):
        return self.scale.actor_step(self.problem, state, batch, frozen, iteration)

    def compile(self):
        return self.phases.compile()

    @torch.no_grad()
    def act(self, state, observations):
        return self.actor.apply(state["actor"], observations)


class ASPCReBRACConfig(AdaptiveScaleConfig, ReBRACConfig):
    BACKBONE = "rebrac"
    actor_bc_coef: float = Field(1.0, gt=0, description="Initial value of the learned beta_actor (BC coefficient).")
    objective: str = Field("rebrac", description="Inner objective on the ReBRAC backbone.")


@register_algorithm
class ASPCReBRAC(ReBRAC):
    """ReBRAC with an adaptive config: the same update, the actor's BC coefficient learned
    (``aspc --objective rebrac``)."""

    name = "aspc-rebrac"
    Config = ASPCReBRACConfig
