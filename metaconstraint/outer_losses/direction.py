r"""``gain-rel``: a unit-free outer criterion that rates the *direction* of the policy's step.

Why not L1 for a learned inverse temperature: the AWR objective's weights :math:`e^{\beta A}` grow
with :math:`\beta`, so a larger :math:`\beta` scales the loss, and through the optimizer's live
(stale) Adam moments it enlarges the look-ahead step. Any criterion that improves when the step is
larger (L1 itself on the same batch) then rewards a larger :math:`\beta`, whatever the data: the
learned :math:`\beta` only rises. The criterion below is invariant to the step's length, to the
reward scale and to the learned scale, so the only thing left for the meta-gradient to judge is
where the step points.

With :math:`\mu` and :math:`\tilde\mu` the policy's (mean) actions before and after the step,
``(B, A)``, dataset actions :math:`a`, per-sample errors :math:`bc_i(\mu) = \frac1A\lVert\mu_i - a_i\rVert^2`:

.. math::
    g = \frac{\overline{Q_1(s,\tilde\mu)} - \overline{Q_1(s,\mu)}}{\mathrm{sg}\big(\overline{|Q_1(s,\mu)|}\big)}
      - \frac{\overline{bc(\tilde\mu)} - \overline{bc(\mu)}}{\mathrm{sg}\big(\overline{bc(\mu)}\big)},
    \qquad
    \ell_{gain} = -\frac{g}{\sqrt{\frac{1}{BA}\sum_i\lVert\tilde\mu_i - \mu_i\rVert^2}}

:math:`g` is the step's relative gain in value minus its relative loss of fit to the data (both
without units: the reward scale cancels in the first, the action scale in the second); dividing by
the step's RMS length (not stopped) makes :math:`\ell_{gain}` a directional derivative to first
order, the same for a step twice as long. Lowering :math:`\ell_{gain}` turns the step toward the
direction of steepest relative gain; :math:`\beta` moves up when tilting the step toward
high-advantage actions helps, and down when it costs more fit than it gains value.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metaconstraint.outer_losses.registry import outer_loss

TINY = 1e-12  # guards the divisions when the policy already matches the data or the step is zero


def relative_gain(q_policy: Tensor, q_updated: Tensor, bc_error: Tensor, updated_bc_error: Tensor) -> Tensor:
    """``g``: relative change of mean Q minus relative change of mean BC error; ``(B,)`` inputs -> scalar."""
    q_gain = (q_updated.mean() - q_policy.mean()) / q_policy.abs().mean().detach().clamp_min(TINY)
    fit_loss = (updated_bc_error.mean() - bc_error.mean()) / bc_error.mean().detach().clamp_min(TINY)
    return q_gain - fit_loss


def step_length(policy_actions: Tensor, updated_policy_actions: Tensor) -> Tensor:
    """RMS change of the policy's actions ``(B, A) -> scalar``, differentiable."""
    return ((updated_policy_actions - policy_actions).pow(2).mean() + TINY**2).sqrt()


@outer_loss("gain-rel")
def relative_gain_per_step(ctx) -> Tensor:
    gain = relative_gain(ctx.q_policy, ctx.q_updated, ctx.bc_error, ctx.updated_bc_error)
    return -gain / step_length(ctx.policy_actions, ctx.updated_policy_actions)
