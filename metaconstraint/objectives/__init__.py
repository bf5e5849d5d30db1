"""Inner (policy) objectives: what the actor minimises, with its constraint scale as a meta-parameter."""

from metaconstraint.objectives.awr import AWRObjective
from metaconstraint.objectives.base import PolicyObjective
from metaconstraint.objectives.registry import (
    ObjectiveError,
    build_objective,
    inner_objective,
    registered_objectives,
    resolve_objective,
)
from metaconstraint.objectives.td3bc import TD3BCObjective

inner_objective("td3bc")(TD3BCObjective)
inner_objective("awr")(AWRObjective)

__all__ = [
    "AWRObjective",
    "ObjectiveError",
    "PolicyObjective",
    "TD3BCObjective",
    "build_objective",
    "inner_objective",
    "registered_objectives",
    "resolve_objective",
]
