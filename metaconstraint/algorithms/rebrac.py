r"""ReBRAC: Revisited Behavior-Regularized Actor-Critic (Tarasov et al., NeurIPS 2023).

TD3+BC with LayerNorm critics (3 x 256, the robust critic), a 3 x 256 actor without LayerNorm, no
state normalisation, large batches, and a behaviour-cloning penalty in both losses:

.. math::
    y = r + \gamma(1-d)\Big(\min_{j} Q_{\bar\phi_j}(s', \tilde a') - \beta_{critic}\lVert \tilde a' - a' \rVert^2\Big)

(:math:`\tilde a'` the smoothed target action, :math:`a'` the dataset's next action), and

.. math::
    L_\pi(\theta) = \frac{1}{B}\sum_i \Big(\beta_{actor}\lVert \pi(s_i) - a_i\rVert^2
        - \frac{\min_j Q_j(s_i, \pi(s_i))}{\mathrm{sg}\big(\frac1B\sum_k |\min_j Q_j(s_k, \pi(s_k))|\big)}\Big)

Squared norms are summed over action dimensions. Settings come as presets
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

from dataclasses import dataclass

from pydantic import Field
from torch import Tensor

from metaconstraint.algorithms.base import register_algorithm
from metaconstraint.algorithms.presets import Preset, PresetConfig, expert_entry_of_task, is_adroit
from metaconstraint.algorithms.td3bc import TD3BC, TD3Config
from metaconstraint.rl.networks import Network

def rebrac_actor_loss(beta: Tensor, policy_actions: Tensor, q_values: Tensor, dataset_actions: Tensor) -> Tensor:
    """``mean_B(beta * ||pi(s) - a||^2 - Q / sg(mean |Q|))`` for ``(B, A)`` actions and ``(B,)`` values."""
    bc = (policy_actions - dataset_actions).pow(2).sum(-1)
    return (beta * bc - q_values / q_values.abs().mean().detach()).mean()


def next_action_penalty(beta: float, next_actions: Tensor, dataset_next_actions: Tensor) -> Tensor:
    """``beta * ||a~' - a'||^2``: ``(B,)``, subtracted inside the critic target."""
    return beta * (next_actions - dataset_next_actions).pow(2).sum(-1)


@dataclass(frozen=True)
class ReBRACObjective:
    """ReBRAC's actor loss with the BC coefficient ``beta`` as its scale; the critic in ``frozen``."""

    actor: Network
    critic: Network
    scale_name: str = "beta"

    def loss(self, beta, critic_params, states, policy_actions, dataset_actions) -> Tensor:
        q_values = self.critic.apply(critic_params, states, policy_actions).min(dim=-2).values
        return rebrac_actor_loss(beta, policy_actions, q_values, dataset_actions)

    def inner(self, params, meta, batch, frozen) -> Tensor:
        states = batch["observations"]
        return self.loss(meta[self.scale_name], frozen["critic"], states, self.actor.apply(params, states), batch["actions"])

    def at_updated(self, context) -> Tensor:
        return self.loss(
            context.meta[self.scale_name], context.frozen["critic"], context.batch["observations"],
            context.updated_policy_actions, context.batch["actions"],
        )


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
class ReBRAC(TD3BC):
    name = "rebrac"
    Config = ReBRACConfig
    member_fields = ("actor_bc_coef",)

    def build_objective(self):
        return ReBRACObjective(self.actor, self.critic)

    def _actor_shape(self):
        return {"hidden": (256, 256, 256)}

    def next_penalty(self, batch, next_actions):
        return next_action_penalty(self.config.critic_bc_coef, next_actions, batch["next_actions"])

    def scale_values(self, state):
        return {"beta": self.member_scalar("actor_bc_coef")}
