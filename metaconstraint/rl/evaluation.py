"""Policy evaluation in a vectorised copy of the dataset's evaluation environment.

All members' episodes run side by side (``M * E`` environments) with one batched policy call per
environment step. Episode ``e`` of the member with seed ``k`` always starts from the reset seed
``EVAL_SEED_BASE + 1000 * k + e``: every evaluation of a run sees the same start states.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

EVAL_SEED_BASE = 1_000_000


def episode_seeds(seeds: list[int], episodes: int) -> list[int]:
    return [EVAL_SEED_BASE + 1000 * int(seed) + e for seed in seeds for e in range(episodes)]


@torch.no_grad()
def evaluate_returns(
    act: Callable[[Tensor], Tensor],
    vector_env,
    seeds: list[int],
    episodes: int,
    device="cpu",
) -> np.ndarray:
    """Undiscounted returns ``(M, E)`` of the deterministic policy ``act``.

    ``act`` maps raw observations ``(M, E, obs_dim)`` to actions ``(M, E, act_dim)``;
    ``vector_env`` holds ``M * E`` environments. Each episode ends at its first termination or
    truncation (the evaluation spec's horizon).
    """
    members = len(seeds)
    n = members * episodes
    if vector_env.num_envs != n:
        raise ValueError(f"expected {n} environments, got {vector_env.num_envs}")
    observations, _ = vector_env.reset(seed=episode_seeds(seeds, episodes))
    returns = np.zeros(n)
    running = np.ones(n, dtype=bool)
    while running.any():
        obs = torch.as_tensor(np.asarray(observations, dtype=np.float32), device=device).reshape(members, episodes, -1)
        actions = act(obs).reshape(n, -1).cpu().numpy()
        observations, rewards, terminated, truncated, _ = vector_env.step(actions)
        returns += np.where(running, rewards, 0.0)
        running &= ~(np.asarray(terminated) | np.asarray(truncated))
    return returns.reshape(members, episodes)
