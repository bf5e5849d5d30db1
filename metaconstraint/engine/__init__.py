"""Generic bilevel machinery on torch.func: functional optimizers (with their learning-rate
schedules and gradient transformations), meta-parameters, the bilevel step and its hypergradient
methods. Imports nothing of reinforcement learning."""

from metaconstraint.engine.bilevel import (
    BilevelProblem,
    BilevelStep,
    Hypergradient,
    HypergradientMethod,
    InnerObjective,
    InnerStep,
    OuterContext,
    OuterLoss,
    OuterLossError,
    Unroll,
    bilevel_step,
    cached_value,
    inner_step,
)
from metaconstraint.engine.members import member, per_member, stack_members
from metaconstraint.engine.meta import MetaParameter, MetaParameters, inverse_softplus
from metaconstraint.engine.optim import (
    GradientTransformation,
    Optimizer,
    Schedule,
    adam,
    adamw,
    chain,
    clip_by_global_norm,
    cosine_decay,
    detach_tree,
    exponential_decay,
    sgd,
    value_and_grad,
)

__all__ = [
    "BilevelProblem",
    "BilevelStep",
    "GradientTransformation",
    "Hypergradient",
    "HypergradientMethod",
    "InnerObjective",
    "InnerStep",
    "MetaParameter",
    "MetaParameters",
    "Optimizer",
    "OuterContext",
    "OuterLoss",
    "OuterLossError",
    "Schedule",
    "Unroll",
    "adam",
    "adamw",
    "bilevel_step",
    "cached_value",
    "chain",
    "clip_by_global_norm",
    "cosine_decay",
    "detach_tree",
    "exponential_decay",
    "inner_step",
    "inverse_softplus",
    "member",
    "per_member",
    "sgd",
    "stack_members",
    "value_and_grad",
]
