"""Policy evaluation in a vectorised copy of the dataset's evaluation environment.

Episode ``e`` always starts from the reset seed ``EVAL_SEED_BASE + e``, for every member, seed and
method: on a dataset, every evaluation plays the same episodes (pen draws its goal at reset, so
before this, a seed's own goals moved one policy from 15 to 99), and differences between runs are
paired episode by episode. Members play side by side in ``M * W`` environments with one batched
policy call per step; more episodes than the ``W`` environments per member run in rounds.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

EVAL_SEED_BASE = 1_000_000


def episode_seeds(members: int, episodes: range) -> list[int]:
    """Reset seeds of ``episodes`` for each of ``members`` members (the same for all), member-major."""
    return [EVAL_SEED_BASE + e for _ in range(members) for e in episodes]


@torch.no_grad()
def _play(act, vector_env, members: int, episodes: range, device) -> np.ndarray:
    """Returns ``(M, W)`` of one round: episodes ``episodes`` (``W`` of them, one per environment)."""
    n = vector_env.num_envs
    observations, _ = vector_env.reset(seed=episode_seeds(members, episodes))
    returns = np.zeros(n)
    running = np.ones(n, dtype=bool)
    while running.any():
        obs = torch.as_tensor(np.asarray(observations, dtype=np.float32), device=device).reshape(members, len(episodes), -1)
        actions = act(obs).reshape(n, -1).cpu().numpy()
        observations, rewards, terminated, truncated, _ = vector_env.step(actions)
        returns += np.where(running, rewards, 0.0)
        running &= ~(np.asarray(terminated) | np.asarray(truncated))
    return returns.reshape(members, len(episodes))


def evaluate_returns(
    act: Callable[[Tensor], Tensor],
    vector_env,
    members: int,
    episodes: int,
    device="cpu",
) -> np.ndarray:
    """Undiscounted returns ``(M, E)`` of the deterministic policy ``act`` on episodes ``0..E-1``.

    ``act`` maps raw observations ``(M, W, obs_dim)`` to actions ``(M, W, act_dim)``;
    ``vector_env`` holds ``M * W`` environments (``W`` need not divide ``E``: the last round plays
    the next episodes too and drops them). Each episode ends at its first termination or truncation
    (the evaluation spec's horizon).
    """
    if vector_env.num_envs % members:
        raise ValueError(f"{vector_env.num_envs} environments cannot be split among {members} members")
    width = vector_env.num_envs // members
    rounds = [_play(act, vector_env, members, range(first, first + width), device) for first in range(0, episodes, width)]
    return np.concatenate(rounds, axis=1)[:, :episodes]
