r"""The advantage-weighted regression actor objective (IQL, Kostrikov et al. 2021, eq. 7).

.. math::
    L(\theta; \beta) = -\frac{1}{B}\sum_i \min\big(e^{\beta A_i}, w_{max}\big)\,\log\pi_\theta(a_i \mid s_i),
    \qquad A_i = \mathrm{sg}\big(\min_{j} Q_{\bar\phi_j}(s_i, a_i) - V_\psi(s_i)\big)

with :math:`w_{max} = 100`. The inverse temperature :math:`\beta` is the constraint scale: as
:math:`\beta \to 0` every weight is 1 and the step is plain maximum likelihood on the dataset
actions (behaviour cloning); a large :math:`\beta` clones only the actions the critic rates above
the state's value. ASPC-IQL learns :math:`\beta = \mathrm{softplus}(\rho)` by the meta-gradient.

What the objective reads (``frozen``, one member): ``advantages`` ``(B,)``, the detached
:math:`A_i` the algorithm computed once per batch, and ``dropout``, the actor's dropout masks
(``None`` without dropout). The outer context's actions (``policy_actions``,
``updated_policy_actions``, and so ``q_policy``, ``q_updated``, ``bc_error``) are the Gaussian
policy's *mean* actions without dropout: the policy as it is evaluated. For a Gaussian with a
state-independent standard deviation, ``bc_error`` is its negative log-likelihood of the dataset
action up to a positive factor and a constant, so L3 keeps its meaning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from metaconstraint.objectives.registry import ObjectiveError
from metaconstraint.rl.networks import GaussianActor, Network

MAX_WEIGHT = 100.0


def awr_weights(beta: Tensor, advantages: Tensor, max_weight: float = MAX_WEIGHT) -> Tensor:
    """``min(exp(beta * A), max_weight)`` ``(B,)``, differentiable in ``beta``.

    Clipped in the exponent: ``exp`` of a large ``beta * A`` would overflow to ``inf``, and a clamp
    after it would turn the zero gradient of a clipped weight into ``0 * inf = NaN``."""
    return torch.exp(torch.clamp(beta * advantages, max=math.log(max_weight)))


def awr_loss(beta: Tensor, log_probs: Tensor, advantages: Tensor, max_weight: float = MAX_WEIGHT) -> Tensor:
    """``-mean_B(min(exp(beta * A), max_weight) * log pi(a|s))`` for ``(B,)`` log-probabilities and advantages."""
    return -(awr_weights(beta, advantages, max_weight) * log_probs).mean()


@dataclass(frozen=True)
class AWRObjective:
    """IQL's policy extraction with the inverse temperature ``beta`` as its scale.

    ``actor``: a :class:`~metaconstraint.rl.networks.GaussianActor`. ``critic`` is accepted so every
    objective is built the same way (``factory(actor=..., critic=...)``); AWR reads only the
    advantages in ``frozen``.
    """

    actor: GaussianActor
    critic: Network | None = None
    scale_name: str = "beta"
    max_weight: float = MAX_WEIGHT

    def __post_init__(self):
        if not isinstance(self.actor, GaussianActor):
            raise ObjectiveError(
                "the awr objective needs a stochastic actor with log_prob (the IQL backbone: aspc-iql); "
                f"this algorithm's actor is a {type(self.actor).__name__}."
            )

    def loss(self, params, beta: Tensor, batch, frozen) -> Tensor:
        log_probs = self.actor.log_prob(params, batch["observations"], batch["actions"], frozen.get("dropout"))
        return awr_loss(beta, log_probs, frozen["advantages"], self.max_weight)

    def inner(self, params, meta, batch, frozen) -> Tensor:
        return self.loss(params, meta[self.scale_name], batch, frozen)

    def at_updated(self, context) -> Tensor:
        return self.loss(context.updated_params, context.meta[self.scale_name], context.batch, context.frozen)
