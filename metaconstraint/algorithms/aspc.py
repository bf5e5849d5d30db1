r"""ASPC: Adaptive Scaling of Policy Constraints (arXiv 2508.19900).

TD3+BC (:mod:`metaconstraint.algorithms.td3bc`, its ``update`` as it is) whose Q-term scale
:math:`\alpha = \mathrm{softplus}(\rho)` is learned by a meta-gradient
(:class:`metaconstraint.algorithms.adaptive.AdaptiveScale`). Every ``policy_freq * scale_interval``
iterations (2 x 10 = 20) the actor step is taken as a *virtual* step :math:`\tilde\theta(\alpha)`
with the actor's own Adam, and

.. math:: \rho \leftarrow \rho - \eta_\rho\, \partial_\rho \big(L_1 + L_2 + L_3\big)(\tilde\theta(\alpha))

(:mod:`metaconstraint.outer_losses.builtin`); the virtual step is then committed. Adam on
:math:`\rho` with lr 2e-3 (``scale_lr``) decays exponentially to 1% over ``scale_lr_decay_steps``
iterations: 1,000,000 whatever the run's length, the released code's schedule (``"run"``: the run's
own length, which in a short run keeps alpha close to its start; ../shared/reference/algorithms.md).

The inner objective is a config value, ``objective`` (default ``"td3bc"``; any registered name or
``module:factory``, built with ``actor`` and ``critic``). An objective that needs another backbone
(``wpc``, ``a2pr``, ``rebrac``, ``awr``) runs on it: ``aspc --objective rebrac`` is the algorithm
``aspc-rebrac``, ReBRAC's backbone with the learned scale (:func:`adaptive_algorithm`).
"""

from __future__ import annotations

from pydantic import Field

from metaconstraint.algorithms.adaptive import AdaptiveScaleConfig
from metaconstraint.algorithms.base import register_algorithm
from metaconstraint.algorithms.td3bc import TD3BC, TD3BCConfig
from metaconstraint.objectives import objective_backbone

ADAPTIVE_ON_BACKBONE = {"td3bc": "aspc", "iql": "aspc-iql", "wpc": "aspc-wpc", "a2pr": "aspc-a2pr", "rebrac": "aspc-rebrac"}
"""The adaptive algorithm of each backbone: the backbone's update with its actor objective's scale learned."""


def adaptive_algorithm(name: str, objective: str | None) -> str:
    """The algorithm a run of ``name`` with ``objective`` is: ``aspc`` with an objective that needs
    another backbone is that backbone's adaptive algorithm (``aspc --objective rebrac`` ->
    ``aspc-rebrac``); any other name stays as it is (an impossible pairing, such as ``aspc-iql``
    with ``td3bc``, fails when the objective is built, with a message naming the backbone it needs)."""
    if name != "aspc" or objective is None:
        return name
    backbone = objective_backbone(str(objective))
    return ADAPTIVE_ON_BACKBONE.get(backbone, name) if backbone is not None else name


class ASPCConfig(AdaptiveScaleConfig, TD3BCConfig):
    alpha: float = Field(2.5, gt=0, description="Initial value of the learned alpha.")
    objective: str = Field("td3bc", description="Inner objective: a registered name or module:factory.")


@register_algorithm
class ASPC(TD3BC):
    """TD3+BC with an adaptive config: the same update, alpha learned."""

    name = "aspc"
    Config = ASPCConfig
