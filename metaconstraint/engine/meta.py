"""Meta-parameters: positive scalars learned by meta-gradients.

A meta-parameter ``alpha = softplus(rho)`` is stored as its raw value ``rho`` (one per member),
optimised by its own Adam whose learning rate decays exponentially,

.. math:: \\eta_k = \\eta_0 \\cdot f^{\\,k / K},

so that after ``K`` meta-updates it has reached the fraction ``f`` of its start (ASPC: ``f = 0.01``
over the whole run, i.e. ``ExponentialLR`` with ``gamma = f^{1/K}`` stepped once per meta-update).
The decay is a schedule inside that Adam (:func:`metaconstraint.engine.exponential_decay` of its
step count ``k``, which equals the state's ``updates``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from metaconstraint.engine.optim import adam, exponential_decay


def inverse_softplus(value: float) -> float:
    """``rho`` with ``softplus(rho) = value`` (``value > 0``)."""
    if value <= 0:
        raise ValueError(f"a softplus-parametrised meta-parameter must be positive, got {value}")
    return value + math.log(-math.expm1(-value))


@dataclass(frozen=True)
class MetaParameter:
    """A positive scalar ``softplus(rho)`` with its own Adam and exponential lr decay.

    ``decay_updates``: number of meta-updates over which the lr falls to ``final_lr_fraction`` of
    ``lr`` (``None``: constant lr).
    """

    name: str
    init: float
    lr: float
    decay_updates: int | None = None
    final_lr_fraction: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def lr_at(self, update: int) -> float:
        """Learning rate of the ``update``-th meta-update (0-based)."""
        return self.schedule()(update)

    def schedule(self):
        """``update -> learning rate``, the schedule inside this parameter's Adam."""
        return exponential_decay(self.lr, self.final_lr_fraction, self.decay_updates)


class MetaParameters:
    """A registry of meta-parameters owned by one algorithm.

    State (a plain tree, checkpointable): ``{"raw": {name: (M,)}, "opt": {name: adam state},
    "updates": int}``.
    """

    def __init__(self, parameters: Sequence[MetaParameter]):
        names = [p.name for p in parameters]
        if len(set(names)) != len(names):
            raise ValueError(f"meta-parameter names must be unique, got {names}")
        self.parameters = {p.name: p for p in parameters}
        self._optimizers = {p.name: adam(p.schedule(), p.betas, p.eps) for p in parameters}

    def __len__(self) -> int:
        return len(self.parameters)

    def init(
        self,
        num_members: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        initial: dict[str, Sequence[float]] | None = None,
    ):
        """``dtype``: default ``torch.get_default_dtype()``; ``initial``: per-member initial values
        (``name -> M values``) instead of the parameters' common ``init``."""
        initial = initial or {}
        raw = {
            name: (
                torch.tensor([inverse_softplus(v) for v in initial[name]], device=device, dtype=dtype or torch.get_default_dtype())
                if name in initial
                else torch.full((num_members,), inverse_softplus(p.init), device=device, dtype=dtype)
            )
            for name, p in self.parameters.items()
        }
        opt = {name: self._optimizers[name].init({"rho": raw[name]}) for name in raw}
        return {"raw": raw, "opt": opt, "updates": 0}

    @staticmethod
    def values(raw: dict[str, Tensor]) -> dict[str, Tensor]:
        """``{name: softplus(rho)}``; differentiable in ``raw``."""
        return {name: F.softplus(rho) for name, rho in raw.items()}

    def step(self, state: dict[str, Any], grads: dict[str, Tensor]) -> dict[str, Any]:
        """One Adam step on every raw value, at the rate its schedule gives for its step count."""
        raw, opt = {}, {}
        with torch.no_grad():
            for name in self.parameters:
                new, opt[name] = self._optimizers[name].step({"rho": grads[name]}, state["opt"][name], {"rho": state["raw"][name]})
                raw[name] = new["rho"]
        return {"raw": raw, "opt": opt, "updates": state["updates"] + 1}
