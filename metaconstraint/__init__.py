"""metaconstraint: offline RL with adaptive policy constraints learned by meta-gradients."""

__version__ = "0.1.0"

__all__ = ["Experiment"]


def __getattr__(name: str):
    # lazy: `import metaconstraint` (and the CLI's start) does not import torch for the Python API
    if name == "Experiment":
        from metaconstraint.api import Experiment

        return Experiment
    raise AttributeError(f"module 'metaconstraint' has no attribute {name!r}")
