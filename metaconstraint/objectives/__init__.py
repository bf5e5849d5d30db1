"""Inner (policy) objectives: what the actor minimises, with its constraint scale as a meta-parameter."""

from metaconstraint.objectives.base import PolicyObjective
from metaconstraint.objectives.td3bc import TD3BCObjective

__all__ = ["PolicyObjective", "TD3BCObjective"]
