r"""ASPC-IQL: IQL whose inverse temperature is learned by ASPC's bilevel update.

The backbone is :mod:`metaconstraint.algorithms.iql` unchanged (its ``update`` as it is, with an
adaptive config: :mod:`metaconstraint.algorithms.adaptive`); the actor objective is AWR
(:mod:`metaconstraint.objectives.awr`) with :math:`\beta = \mathrm{softplus}(\rho)`. Every
``scale_interval`` iterations (20, as ASPC's ``2 x 10``: IQL steps its actor every iteration) the
actor step is a virtual step :math:`\tilde\theta(\beta)` with the actor's own Adam and learning rate,

.. math:: \rho \leftarrow \rho - \eta_\rho\,\partial_\rho \textstyle\sum_j w_j \ell_j(\tilde\theta(\beta)),

then committed. The default outer criterion is ``gain-rel``
(:mod:`metaconstraint.outer_losses.direction`): the step's relative gain in :math:`Q_1` minus its
loss of fit to the dataset actions relative to their spread, per unit of the step's length. It has
no units and reads neither the reward scale nor :math:`\beta`, so only the step's direction is
judged. How far that makes the learned beta sound is measured, on one dataset and one seed, in
docs/results/aspc-iql-beta.md: read it before relying on aspc-iql.

ASPC's own losses (``outer_losses = ["l1", "l2", "l3"]``, the default before) remain available, but
with them beta only rises: L1 is the AWR objective at :math:`\tilde\theta` with :math:`\beta` held
constant; its weights :math:`e^{\beta A}` grow with :math:`\beta`, so through Adam's live moments a
larger :math:`\beta` takes a larger look-ahead step, which lowers L1 on the same batch whatever the
data (on pen the unnormalised L1, ~300, has ~100x L2's gradient). ``tests/test_gain_rel.py`` shows
both on a small problem: with ``l1`` beta rises from 0.05 and from 1.0; with ``gain-rel`` it rises
from 0.05, falls from 1.0, and both end near 0.2.

Adam on :math:`\rho` with lr 2e-3 (``scale_lr``) decays to 1% over
``scale_lr_decay_steps`` iterations (default 1,000,000, as ASPC's alpha; the same settings and flags as
every learned scale, e.g. ``--scale-lr-decay-steps``; config files with the older ``beta_lr``,
``beta_interval``, ... still read). As for ASPC, the decay bounds how far :math:`\rho` can
travel: with the decay tied to a 30,000-iteration run's length (``"run"``) the learning rates sum to
0.65 (Adam's steps exceed their learning rate a little while the meta-gradient keeps growing).
"""

from __future__ import annotations

from pydantic import Field

from metaconstraint.algorithms.adaptive import AdaptiveScaleConfig
from metaconstraint.algorithms.base import register_algorithm
from metaconstraint.algorithms.iql import IQL, IQLConfig


class ASPCIQLConfig(AdaptiveScaleConfig, IQLConfig):
    BACKBONE = "iql"
    outer_losses: list[str] = Field(
        default_factory=lambda: ["gain-rel"], min_length=1,
        description="Outer losses of beta's update (default gain-rel: unit-free; ASPC's l1 l2 l3 only raise beta).",
    )
    beta: float = Field(3.0, gt=0, description="Initial value of the learned beta.")
    scale_interval: int = Field(
        20, ge=1, validation_alias=AdaptiveScaleConfig.model_fields["scale_interval"].validation_alias,
        description="beta is updated every this many iterations (IQL steps its actor every iteration).",
    )
    objective: str = Field("awr", description="Inner objective: a registered name or module:factory.")


@register_algorithm
class ASPCIQL(IQL):
    """IQL with an adaptive config: the same update, beta learned."""

    name = "aspc-iql"
    Config = ASPCIQLConfig
