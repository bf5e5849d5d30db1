"""Generic bilevel machinery on torch.func: functional optimizers, meta-parameters, the bilevel
step. Imports nothing of reinforcement learning."""

from metaconstraint.engine.bilevel import (
    BilevelProblem,
    InnerObjective,
    OuterContext,
    OuterLoss,
    OuterLossError,
    bilevel_step,
    cached_value,
    functional_bilevel_step,
    inner_step,
)
from metaconstraint.engine.members import member, per_member, stack_members
from metaconstraint.engine.meta import MetaParameter, MetaParameters, inverse_softplus
from metaconstraint.engine.optim import Optimizer, adam, detach_tree, sgd, value_and_grad

__all__ = [
    "BilevelProblem",
    "InnerObjective",
    "MetaParameter",
    "MetaParameters",
    "Optimizer",
    "OuterContext",
    "OuterLoss",
    "OuterLossError",
    "adam",
    "bilevel_step",
    "cached_value",
    "detach_tree",
    "functional_bilevel_step",
    "inner_step",
    "inverse_softplus",
    "member",
    "per_member",
    "sgd",
    "stack_members",
    "value_and_grad",
]
