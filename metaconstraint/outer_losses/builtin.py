r"""ASPC's outer losses (arXiv 2508.19900, Sec. 4), written on the shared outer context.

- L1, the inner objective at the updated policy, scale held constant: ``objective.at_updated``.
- L2, Q-value damping: :math:`(\overline{Q}_1(s, \tilde\pi(s)) - \overline{Q}_1(s, \pi(s)))^2`.
- L2-EMA (the released code's form): an EMA :math:`e` (0.995, from 0) of
  :math:`\overline{Q}_1(s, \tilde\pi(s))`, loss :math:`(e_{new} - e_{old})^2`.
- L3, BC-loss damping: :math:`\mathrm{sg}(L_2)\,\mathrm{sg}(\max_i bc_i(\pi))\,
  \max_i |\mathrm{sg}(bc_i(\pi)) - bc_i(\tilde\pi)|`.
- L2-rel and L3-rel, unit-free: the change of the mean Q relative to the current
  :math:`\mathrm{sg}(\overline{|Q_1(s, \pi(s))|})`, squared, and L3 with that in place of L2. L2 and
  L3 grow with :math:`Q^2`, so multiplying the rewards by :math:`c` multiplies their meta-gradients by
  :math:`c^2` while L1's stays the same (the TD3+BC objective divides by
  :math:`\overline{|Q|}`): the balance, and so the direction alpha moves, depends on the reward
  scale. The relative forms make every term invariant to it.
"""

from __future__ import annotations

from torch import Tensor

from metaconstraint.outer_losses.registry import outer_loss

EMA_DECAY = 0.995


@outer_loss("l1")
def policy_objective_at_update(ctx) -> Tensor:
    return ctx.objective.at_updated(ctx)


@outer_loss("l2")
def q_value_damping(ctx) -> Tensor:
    return ctx.q_change.pow(2)


def q_ema(ctx) -> Tensor:
    """The EMA after this step: ``0.995 e + 0.005 mean Q(s, pi~(s))``, scalar."""
    return EMA_DECAY * ctx.state["ema"] + (1.0 - EMA_DECAY) * ctx.q_updated.mean()


def next_q_ema(ctx) -> dict[str, Tensor]:
    return {"ema": q_ema(ctx).detach()}


@outer_loss("l2-ema", init_state={"ema": 0.0}, next_state=next_q_ema)
def q_value_damping_ema(ctx) -> Tensor:
    return (q_ema(ctx) - ctx.state["ema"]).pow(2)


def relative_q_change(ctx) -> Tensor:
    """``(mean Q(s, pi~(s)) - mean Q(s, pi(s))) / sg(mean |Q(s, pi(s))|)``: no units of reward."""
    return ctx.q_change / ctx.q_policy.abs().mean().detach()


def bc_damping(ctx, q_damping: Tensor) -> Tensor:
    """``sg(q_damping) * sg(max_i bc_i(pi)) * max_i |sg(bc_i(pi)) - bc_i(pi~)|``."""
    before = ctx.bc_error.detach()
    return q_damping.detach() * before.max() * (before - ctx.updated_bc_error).abs().max()


@outer_loss("l3")
def bc_loss_damping(ctx) -> Tensor:
    return bc_damping(ctx, ctx.q_change.pow(2))


@outer_loss("l2-rel")
def relative_q_value_damping(ctx) -> Tensor:
    return relative_q_change(ctx).pow(2)


@outer_loss("l3-rel")
def relative_bc_loss_damping(ctx) -> Tensor:
    return bc_damping(ctx, relative_q_change(ctx).pow(2))
