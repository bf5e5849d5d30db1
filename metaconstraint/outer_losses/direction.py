r"""``gain-rel``: a unit-free outer criterion that rates the *direction* of the policy's step.

Why not L1 for a learned inverse temperature: the AWR objective's weights :math:`e^{\beta A}` grow
with :math:`\beta`, so a larger :math:`\beta` scales the loss, and through the optimizer's live
(stale) Adam moments it enlarges the look-ahead step. Any criterion that improves when the step is
larger (L1 itself on the same batch) then rewards a larger :math:`\beta`, whatever the data: the
learned :math:`\beta` only rises. The criterion below is invariant to the step's length, to the
reward scale and to the learned scale, so the only thing left for the meta-gradient to judge is
where the step points.

With :math:`\mu` and :math:`\tilde\mu` the policy's (mean) actions before and after the step,
``(B, A)``, dataset actions :math:`a`, per-sample errors :math:`bc_i(\mu) = \frac1A\lVert\mu_i - a_i\rVert^2`
and the batch's action spread :math:`\sigma^2_a = \frac{1}{BA}\sum_i\lVert a_i - \bar a\rVert^2`:

.. math::
    g = \frac{\overline{Q_1(s,\tilde\mu)} - \overline{Q_1(s,\mu)}}{\mathrm{sg}\big(\overline{|Q_1(s,\mu)|}\big)}
      - \frac{\overline{bc(\tilde\mu)} - \overline{bc(\mu)}}{\mathrm{sg}(\sigma^2_a)},
    \qquad
    \ell_{gain} = -\frac{g}{\sqrt{\frac{1}{BA}\sum_i\lVert\tilde\mu_i - \mu_i\rVert^2}}

:math:`g` is the step's relative gain in value minus its loss of fit to the data relative to the
data's own spread (both without units: the reward scale cancels in the first, the action scale in
the second); dividing by the step's RMS length (not stopped) makes :math:`\ell_{gain}` a directional
derivative to first order, the same for a step twice as long. Lowering :math:`\ell_{gain}` turns the
step toward the direction of steepest relative gain; :math:`\beta` moves up when tilting the step
toward high-advantage actions gains more value than it costs fit, and down otherwise.

Why the data's spread and not the policy's own error :math:`\overline{bc(\mu)}`: normalised by the
policy's error, the fit term grows as the policy fits the data (small :math:`\beta`) and shrinks as
it leaves it (large :math:`\beta`), a positive feedback. Measured on ``dapg/pen/expert-v0`` (4,000
iterations, beta's lr 0.02), that form took beta from 0.3 down to 0.06 and from 10 up to 11.2: two
basins, whatever the best fixed beta. The spread of the dataset actions does not move with the
policy (docs/results/aspc-iql-beta.md).
"""

from __future__ import annotations

from torch import Tensor

from metaconstraint.outer_losses.registry import outer_loss

TINY = 1e-12  # guards the divisions when the data has one action or the step is zero


def action_spread(actions: Tensor) -> Tensor:
    """``sigma_a^2``: mean squared deviation of the dataset actions ``(B, A)`` from their batch mean, detached."""
    return (actions - actions.mean(0)).pow(2).mean().detach()


def relative_gain(q_policy: Tensor, q_updated: Tensor, bc_error: Tensor, updated_bc_error: Tensor, spread: Tensor) -> Tensor:
    """``g``: relative change of mean Q minus the change of mean BC error over the data's spread;
    ``(B,)`` inputs and a scalar spread -> scalar."""
    q_gain = (q_updated.mean() - q_policy.mean()) / q_policy.abs().mean().detach().clamp_min(TINY)
    fit_loss = (updated_bc_error.mean() - bc_error.mean()) / spread.clamp_min(TINY)
    return q_gain - fit_loss


def step_length(policy_actions: Tensor, updated_policy_actions: Tensor) -> Tensor:
    """RMS change of the policy's actions ``(B, A) -> scalar``, differentiable."""
    return ((updated_policy_actions - policy_actions).pow(2).mean() + TINY**2).sqrt()


@outer_loss("gain-rel")
def relative_gain_per_step(ctx) -> Tensor:
    gain = relative_gain(ctx.q_policy, ctx.q_updated, ctx.bc_error, ctx.updated_bc_error, action_spread(ctx.batch["actions"]))
    return -gain / step_length(ctx.policy_actions, ctx.updated_policy_actions)
