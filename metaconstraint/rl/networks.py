"""Networks as pairs of pure functions over parameter dicts (``init`` and ``apply``).

Every ``apply`` accepts any number of leading dimensions on both the parameters and the inputs, so
the same function serves one member, a stack of members (``(M, ...)`` parameters), a single
state and a batch ``(B, obs_dim)``. Weights are stored ``(in, out)`` and applied as ``x @ W + b``.
The twin critic keeps both Q-networks in one set of tensors with a leading ``2``: one batched
matmul per layer instead of two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from metaconstraint.engine.gemm import matmul

Params = dict[str, Tensor]


@dataclass(frozen=True)
class Network:
    """``init(generator) -> params`` (CPU, float32) and ``apply(params, *inputs) -> output``."""

    init: Callable[[torch.Generator], Params]
    apply: Callable[..., Tensor]


def _uniform(generator: torch.Generator, shape: tuple[int, ...], bound: float) -> Tensor:
    return (torch.rand(shape, generator=generator) * 2.0 - 1.0) * bound


def _linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``x @ W + b`` for ``x (..., B, in)``, ``W (..., in, out)``, ``b (..., out)``.

    A one-unit output layer (a Q or V head) is written as a multiply and a row sum: on CPU a
    batched matmul with ``out = 1`` runs at ~2 GFLOP/s and, forward and backward, costs 4x the
    same product written elementwise (benchmarks, docs/performance.md). The product itself runs on
    the process's GEMM kernel (:mod:`metaconstraint.engine.gemm`)."""
    if weight.shape[-1] == 1:
        return (x * weight.transpose(-1, -2)).sum(-1, keepdim=True) + bias.unsqueeze(-2)
    return matmul(x, weight) + bias.unsqueeze(-2)


def _init_layers(generator, sizes, ensemble=(), robust=False):
    """Weights ``U(+-1/sqrt(fan_in))`` (PyTorch's default); ``robust``: hidden biases 0.1 and
    output layer ``U(+-3e-3)`` (the paper's critic initialisation)."""
    params: Params = {}
    last = len(sizes) - 2
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        bound = 1.0 / math.sqrt(fan_in)
        if robust and i == last:
            params[f"w{i}"] = _uniform(generator, (*ensemble, fan_in, fan_out), 3e-3)
            params[f"b{i}"] = _uniform(generator, (*ensemble, fan_out), 3e-3)
        else:
            params[f"w{i}"] = _uniform(generator, (*ensemble, fan_in, fan_out), bound)
            params[f"b{i}"] = (
                torch.full((*ensemble, fan_out), 0.1) if robust else _uniform(generator, (*ensemble, fan_out), bound)
            )
    return params


def _layer_norm(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    return F.layer_norm(x, x.shape[-1:]) * weight.unsqueeze(-2) + bias.unsqueeze(-2)


def mlp_apply(params: Params, x: Tensor, num_layers: int, layer_norm: bool = False) -> Tensor:
    """``Linear -> ReLU [-> LayerNorm]`` hidden layers and a linear output."""
    for i in range(num_layers - 1):
        x = F.relu(_linear(x, params[f"w{i}"], params[f"b{i}"]))
        if layer_norm:
            x = _layer_norm(x, params[f"ln{i}.weight"], params[f"ln{i}.bias"])
    last = num_layers - 1
    return _linear(x, params[f"w{last}"], params[f"b{last}"])


def deterministic_actor(obs_dim: int, action_dim: int, max_action: float, hidden=(256, 256)) -> Network:
    """``pi(s) = max_action * tanh(MLP(s))``: ``(..., B, obs_dim) -> (..., B, action_dim)``."""
    sizes = (obs_dim, *hidden, action_dim)

    def init(generator):
        return _init_layers(generator, sizes)

    def apply(params, states):
        return max_action * torch.tanh(mlp_apply(params, states, len(sizes) - 1))

    return Network(init, apply)


LOG_STD_MIN, LOG_STD_MAX = -10.0, 2.0  # IQL's clip of the state-independent log std


@dataclass(frozen=True)
class GaussianActor(Network):
    """A Gaussian policy ``N(mu(s), diag(sigma^2))`` with ``mu(s) = max_action * tanh(MLP(s))`` and a
    state-independent ``log sigma`` (IQL's actor).

    ``apply(params, states)`` is the mean action ``(..., B, A)``: what the policy does when evaluated
    and what outer losses read as its action. ``log_prob(params, states, actions, dropout=None)`` is
    ``log pi(a|s)`` ``(..., B)``; ``dropout`` holds one inverted-dropout mask per hidden layer
    (``(..., B, width)``, entries 0 or ``1/(1-p)``, from :func:`dropout_masks`), applied after each ReLU.
    """

    log_prob: Callable[..., Tensor] = None
    hidden: tuple[int, ...] = ()


def dropout_masks(uniform: list[Tensor], rate: float) -> list[Tensor]:
    """Inverted-dropout masks ``1[u >= rate] / (1 - rate)`` from uniform draws ``u`` (one per layer)."""
    return [(u >= rate).to(u.dtype) / (1.0 - rate) for u in uniform]


def gaussian_actor(obs_dim: int, action_dim: int, max_action: float, hidden=(256, 256)) -> GaussianActor:
    """:class:`GaussianActor`: ``(..., B, obs_dim) -> (..., B, action_dim)`` means; ``log_std`` starts at 0."""
    sizes = (obs_dim, *hidden, action_dim)
    layers = len(sizes) - 1

    def init(generator):
        params = _init_layers(generator, sizes)
        params["log_std"] = torch.zeros(action_dim)
        return params

    def mean(params, states, dropout=None):
        x = states
        for i in range(layers - 1):
            x = F.relu(_linear(x, params[f"w{i}"], params[f"b{i}"]))
            if dropout is not None:
                x = x * dropout[i]
        return max_action * torch.tanh(_linear(x, params[f"w{layers - 1}"], params[f"b{layers - 1}"]))

    def apply(params, states):
        return mean(params, states)

    def log_prob(params, states, actions, dropout=None):
        log_std = params["log_std"].clamp(LOG_STD_MIN, LOG_STD_MAX).unsqueeze(-2)
        z = (actions - mean(params, states, dropout)) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    return GaussianActor(init, apply, log_prob, tuple(hidden))


def twin_critic(obs_dim: int, action_dim: int, hidden=(256, 256, 256), robust: bool = True) -> Network:
    """Two Q-networks in one: ``(s (..., B, obs), a (..., B, act)) -> (..., 2, B)``.

    ``robust``: the paper's critic, ``Linear -> ReLU -> LayerNorm`` per hidden layer with its
    initialisation; otherwise the classic TD3 critic (plain ReLU MLP, default initialisation).
    """
    sizes = (obs_dim + action_dim, *hidden, 1)

    def init(generator):
        params = _init_layers(generator, sizes, ensemble=(2,), robust=robust)
        if robust:
            for i, width in enumerate(hidden):
                params[f"ln{i}.weight"] = torch.ones(2, width)
                params[f"ln{i}.bias"] = torch.zeros(2, width)
        return params

    def apply(params, states, actions):
        x = torch.cat([states, actions], dim=-1).unsqueeze(-3)
        return mlp_apply(params, x, len(sizes) - 1, layer_norm=robust).squeeze(-1)

    return Network(init, apply)


def value_network(obs_dim: int, hidden=(256, 256)) -> Network:
    """``V(s)``: ``(..., B, obs_dim) -> (..., B)``."""
    sizes = (obs_dim, *hidden, 1)

    def init(generator):
        return _init_layers(generator, sizes)

    def apply(params, states):
        return mlp_apply(params, states, len(sizes) - 1).squeeze(-1)

    return Network(init, apply)


def mlp(sizes: tuple[int, ...]) -> Network:
    """A plain ReLU MLP with PyTorch's default initialisation: ``(..., B, sizes[0]) -> (..., B, sizes[-1])``."""

    def init(generator):
        return _init_layers(generator, tuple(sizes))

    def apply(params, x):
        return mlp_apply(params, x, len(sizes) - 1)

    return Network(init, apply)


def init_members(network: Network, seeds: list[int], device, salt: int = 0) -> Params:
    """Initial parameters of one network per seed, stacked ``(M, ...)`` on ``device``."""
    per_seed = [network.init(torch.Generator().manual_seed(seed * 1009 + salt)) for seed in seeds]
    return {k: torch.stack([p[k] for p in per_seed]).to(device) for k in per_seed[0]}


def first_of_twins(params: Params) -> Params:
    """The first Q-network's parameters (twin dimension sliced away), for ``Q1``-only passes."""
    return {k: v.select(-3 if k.startswith("w") else -2, 0) for k, v in params.items()}


def q1(critic: Network, params: Params, states: Tensor, actions: Tensor) -> Tensor:
    """``Q1(s, a)``: ``(..., B)``; only the first twin is computed."""
    return critic.apply(first_of_twins(params), states, actions).squeeze(-2)
