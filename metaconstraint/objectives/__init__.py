"""Inner (policy) objectives: what the actor minimises, with its constraint scale as a meta-parameter.

Registered here with the backbone each needs (:func:`objective_backbone`): ``td3bc`` (any actor and
critic), ``awr`` (IQL's), ``wpc``, ``a2pr`` and ``rebrac`` (their algorithms').
"""

from metaconstraint.objectives.a2pr import A2PRObjective
from metaconstraint.objectives.awr import AWRObjective
from metaconstraint.objectives.base import PolicyObjective
from metaconstraint.objectives.rebrac import ReBRACObjective
from metaconstraint.objectives.registry import (
    ObjectiveError,
    build_objective,
    inner_objective,
    objective_backbone,
    registered_objectives,
    resolve_objective,
)
from metaconstraint.objectives.td3bc import TD3BCObjective
from metaconstraint.objectives.wpc import WPCObjective

inner_objective("td3bc")(TD3BCObjective)
inner_objective("awr", backbone="iql")(AWRObjective)
inner_objective("wpc", backbone="wpc")(WPCObjective)
inner_objective("a2pr", backbone="a2pr")(A2PRObjective)
inner_objective("rebrac", backbone="rebrac")(ReBRACObjective)

__all__ = [
    "A2PRObjective",
    "AWRObjective",
    "ObjectiveError",
    "PolicyObjective",
    "ReBRACObjective",
    "TD3BCObjective",
    "WPCObjective",
    "build_objective",
    "inner_objective",
    "objective_backbone",
    "registered_objectives",
    "resolve_objective",
]
