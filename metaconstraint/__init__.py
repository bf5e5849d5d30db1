"""metaconstraint: offline RL with adaptive policy constraints learned by meta-gradients."""

__version__ = "0.1.0"
