r"""ASPC: Adaptive Scaling of Policy Constraints (arXiv 2508.19900).

TD3+BC whose Q-term scale :math:`\alpha = \mathrm{softplus}(\rho)` is learned by a meta-gradient.
Every ``policy_freq * alpha_interval`` iterations (2 x 10 = 20) the actor step is taken as a
*virtual* step :math:`\tilde\theta(\alpha)` with the actor's own Adam, and

.. math:: \rho \leftarrow \rho - \eta_\rho\, \partial_\rho \big(L_1 + L_2 + L_3\big)(\tilde\theta(\alpha))

(:mod:`metaconstraint.outer_losses.builtin`); the virtual step is then committed. Adam on
:math:`\rho` with lr 2e-3 decays exponentially to 1% over ``alpha_lr_decay_steps`` iterations:
1,000,000 whatever the run's length, the released code's schedule (``"run"``: the run's own length,
which in a short run keeps alpha close to its start; ../shared/reference/algorithms.md).

The inner objective is a config value, ``objective`` (default ``"td3bc"``; any registered name or
``module:factory``, built with ``actor`` and ``critic``): the bilevel machinery is the same for all.
"""

from __future__ import annotations

from pydantic import Field

from metaconstraint.algorithms.adaptive import RELEASED_DECAY_STEPS, AdaptiveScale, AdaptiveScaleConfig, DecayHorizon, ScaleSchedule
from metaconstraint.algorithms.base import register_algorithm
from metaconstraint.algorithms.td3bc import TD3BC, TD3BCConfig
from metaconstraint.engine.compiled import compiled_or_eager
from metaconstraint.objectives import build_objective


class ASPCConfig(AdaptiveScaleConfig, TD3BCConfig):
    alpha: float = Field(2.5, gt=0, description="Initial value of the learned alpha.")
    alpha_lr: float = Field(2e-3, gt=0, description="Adam learning rate of rho (alpha = softplus(rho)).")
    alpha_interval: int = Field(10, ge=1, description="k_alpha: alpha is updated every policy_freq * k_alpha iterations.")
    alpha_lr_decay_steps: DecayHorizon = Field(
        RELEASED_DECAY_STEPS,
        description="Iterations over which alpha's lr decays to 1%: 1,000,000 whatever --steps is (the released "
        "code's schedule), or \"run\" for the run's own length.",
    )
    alpha_final_lr_fraction: float = Field(0.01, gt=0, le=1)
    objective: str = Field("td3bc", description="Inner objective: a registered name or module:factory.")


@register_algorithm
class ASPC(AdaptiveScale, TD3BC):
    name = "aspc"
    Config = ASPCConfig
    scale_init_field = "alpha"  # varied between members, it is each member's initial value

    def build_objective(self):
        return build_objective(self.config.objective, actor=self.actor, critic=self.critic)

    @property
    def meta_interval(self) -> int:
        return self.config.policy_freq * self.config.alpha_interval

    def scale_schedule(self) -> ScaleSchedule:
        c = self.config
        return ScaleSchedule(c.alpha, c.alpha_lr, c.alpha_lr_decay_steps, c.alpha_final_lr_fraction)

    def update_actor(self, state, batch, iteration):
        if not self.is_meta_iteration(iteration):
            return super().update_actor(state, batch, iteration)
        return self.meta_actor_step(state, batch, self.frozen_inputs(state))

    def meta_phase(self, state, batch):
        """A meta-iteration's actor phase for the compiler: the bilevel actor step (nested
        ``torch.func.grad``), the meta-update and the target updates, one graph."""
        metrics = self.meta_actor_step(state, batch, self.frozen_inputs(state))
        self.update_targets(state)
        return metrics

    def compiled_meta_phase(self):
        return compiled_or_eager(self.meta_phase)
