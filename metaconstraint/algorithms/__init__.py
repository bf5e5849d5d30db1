"""Algorithm assemblies: each a config plus the update it runs, registered by name."""

from metaconstraint.algorithms.aspc import ASPC, ASPCConfig
from metaconstraint.algorithms.base import ALGORITHMS, Algorithm, AlgorithmConfig, ProblemSpec, register_algorithm
from metaconstraint.algorithms.td3bc import TD3BC, TD3BCConfig

__all__ = [
    "ALGORITHMS",
    "ASPC",
    "ASPCConfig",
    "Algorithm",
    "AlgorithmConfig",
    "ProblemSpec",
    "TD3BC",
    "TD3BCConfig",
    "register_algorithm",
]
