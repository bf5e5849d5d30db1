"""Algorithm assemblies: each a config plus the update it runs, registered by name."""

from metaconstraint.algorithms.aspc import ASPC, ASPCConfig, adaptive_algorithm
from metaconstraint.algorithms.base import (
    ALGORITHMS,
    Algorithm,
    AlgorithmConfig,
    ProblemSpec,
    config_keys,
    define_algorithm,
    register_algorithm,
)
from metaconstraint.algorithms.td3bc import TD3BC, TD3BCConfig
from metaconstraint.algorithms.wpc import ASPCWPC, WPC, WPCConfig
from metaconstraint.algorithms.a2pr import A2PR, ASPCA2PR, A2PRConfig
from metaconstraint.algorithms.rebrac import ASPCReBRAC, ReBRAC, ReBRACConfig
from metaconstraint.algorithms.bc import BC, BCConfig
from metaconstraint.algorithms.iql import IQL, IQLConfig
from metaconstraint.algorithms.aspc_iql import ASPCIQL, ASPCIQLConfig

__all__ = [
    "ALGORITHMS",
    "A2PR",
    "A2PRConfig",
    "ASPCA2PR",
    "ASPCReBRAC",
    "ASPCWPC",
    "ASPC",
    "ASPCConfig",
    "ASPCIQL",
    "ASPCIQLConfig",
    "Algorithm",
    "AlgorithmConfig",
    "BC",
    "BCConfig",
    "IQL",
    "IQLConfig",
    "ProblemSpec",
    "ReBRAC",
    "ReBRACConfig",
    "TD3BC",
    "TD3BCConfig",
    "WPC",
    "WPCConfig",
    "adaptive_algorithm",
    "config_keys",
    "define_algorithm",
    "register_algorithm",
]
