"""Helpers of the stacked-members tests: synthetic data, and one algorithm trained with its seeds as
members of one computation and each seed alone, on the same data streams (``MemberSampler`` per seed)."""

from __future__ import annotations

import numpy as np
import torch
from types import SimpleNamespace

from metaconstraint.rl.buffer import MemberSampler, OfflineBuffer, StateNormalizer


def synthetic_buffer(n: int = 1000, obs_dim: int = 11, action_dim: int = 3) -> OfflineBuffer:
    """Random transitions (seeded) in torch's default dtype, states not normalised."""
    rng = np.random.default_rng(0)
    data = SimpleNamespace(
        observations=rng.standard_normal((n, obs_dim), dtype=np.float32),
        actions=rng.uniform(-1, 1, (n, action_dim)).astype(np.float32),
        rewards=rng.standard_normal(n, dtype=np.float32),
        next_observations=rng.standard_normal((n, obs_dim), dtype=np.float32),
        next_actions=rng.uniform(-1, 1, (n, action_dim)).astype(np.float32),
        terminals=(rng.random(n) < 0.1).astype(np.float32),
    )
    buffer = OfflineBuffer(data, StateNormalizer.identity(obs_dim))
    buffer.data = {k: v.to(torch.get_default_dtype()) for k, v in buffer.data.items()}
    return buffer


def train_stacked_and_alone(cls, config, buffer, spec, seeds, iterations, device, batch_size=64):
    """Returns ``(stacked_state, [state of each seed trained alone])`` after ``iterations`` updates."""

    def train(members):
        algorithm = cls(config, spec, len(members), device)
        state = algorithm.init_state(members)
        sampler = MemberSampler(buffer, batch_size, members)
        for iteration in range(1, iterations + 1):
            state, _ = algorithm.update(state, sampler, iteration)
        return state

    return train(list(seeds)), [train([seed]) for seed in seeds]
