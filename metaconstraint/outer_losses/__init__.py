"""Outer losses: functions of the shared outer context, registered by name or given by import path."""

from metaconstraint.outer_losses import builtin  # noqa: F401  (registers l1, l2, l2-ema, l2-rel, l3, l3-rel)
from metaconstraint.outer_losses import direction  # noqa: F401  (registers gain-rel)
from metaconstraint.outer_losses.context import PolicyContext, context_factory
from metaconstraint.outer_losses.registry import (
    OuterLossError,
    outer_loss,
    registered_outer_losses,
    resolve_outer_loss,
    resolve_outer_losses,
)

__all__ = [
    "OuterLossError",
    "PolicyContext",
    "context_factory",
    "outer_loss",
    "registered_outer_losses",
    "resolve_outer_loss",
    "resolve_outer_losses",
]
