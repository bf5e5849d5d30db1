"""The interface an inner objective offers to the bilevel engine and to the outer losses."""

from __future__ import annotations

from typing import Any, Protocol

from torch import Tensor


class PolicyObjective(Protocol):
    """An actor objective with a constraint scale that meta-learning may adapt.

    ``scale_name``: the meta-parameter it reads (``"alpha"`` for TD3+BC, ``"beta"`` for AWR).
    ``inner``: ``f(params, meta, batch, frozen) -> scalar`` for one member (the engine's inner
    objective). ``at_updated``: the same objective evaluated at the updated policy with the
    scale held constant, read from the shared outer context (the outer loss L1).
    """

    scale_name: str

    def inner(self, params, meta: dict[str, Tensor], batch: dict[str, Tensor], frozen: dict[str, Any]) -> Tensor: ...

    def at_updated(self, context) -> Tensor: ...
