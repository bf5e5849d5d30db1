"""The outer context of policy-learning problems: every outer loss reads what it needs from it.

Quantities are computed on first use and cached, so several losses share one critic pass. Public
names (documented in docs/extending.md): ``batch``, ``params``, ``updated_params``, ``meta``,
``state``, ``frozen``, ``policy_actions`` (pi(s), ``(B, A)``), ``updated_policy_actions``
(pi~(s)), ``q_policy`` and ``q_updated`` (Q1 at those actions, ``(B,)``), ``bc_error`` and
``updated_bc_error`` (per-sample squared error to the dataset action, averaged over action
dimensions, ``(B,)``), ``q_change`` (mean q_updated - mean q_policy), ``objective`` (the inner
objective, whose ``at_updated(ctx)`` is L1).
"""

from __future__ import annotations

from torch import Tensor

from metaconstraint.engine import OuterContext, cached_value
from metaconstraint.rl.networks import Network, q1


class PolicyContext(OuterContext):
    """One member's outer context for an actor ``pi`` with critic ``frozen["critic"]``."""

    def __init__(self, params, updated_params, meta, batch, frozen, *, actor: Network, critic: Network, objective):
        super().__init__(params, updated_params, meta, batch, frozen)
        self.actor = actor
        self.critic = critic
        self.objective = objective

    @cached_value
    def policy_actions(self) -> Tensor:
        return self.actor.apply(self.params, self.batch["observations"])

    @cached_value
    def updated_policy_actions(self) -> Tensor:
        return self.actor.apply(self.updated_params, self.batch["observations"])

    @cached_value
    def q_policy(self) -> Tensor:
        return q1(self.critic, self.frozen["critic"], self.batch["observations"], self.policy_actions)

    @cached_value
    def q_updated(self) -> Tensor:
        return q1(self.critic, self.frozen["critic"], self.batch["observations"], self.updated_policy_actions)

    @cached_value
    def q_change(self) -> Tensor:
        return self.q_updated.mean() - self.q_policy.mean()

    @cached_value
    def bc_error(self) -> Tensor:
        return (self.policy_actions - self.batch["actions"]).pow(2).mean(-1)

    @cached_value
    def updated_bc_error(self) -> Tensor:
        return (self.updated_policy_actions - self.batch["actions"]).pow(2).mean(-1)


def context_factory(actor: Network, critic: Network, objective):
    """``make_context`` for :class:`metaconstraint.engine.BilevelProblem`."""

    def make(params, updated_params, meta, batch, frozen):
        return PolicyContext(params, updated_params, meta, batch, frozen, actor=actor, critic=critic, objective=objective)

    return make
