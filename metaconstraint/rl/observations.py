"""Dictionary observations as one flat vector, the same way for training data and evaluation.

Goal-conditioned environments (gymnasium-robotics AntMaze and PointMaze, and Minari's D4RL
``antmaze``/``pointmaze`` sets) observe a ``Dict`` of Boxes: ``observation`` (the robot's state),
``achieved_goal`` (where it is: for AntMaze the x-y position, which ``observation`` leaves out) and
``desired_goal`` (the target). The policy sees their concatenation

    s = [observation, achieved_goal, desired_goal, <other keys, sorted>]      (obs_dim,)

each key flattened in C order and cast to float32. :func:`flatten_observations` does this for the
dataset's stored arrays, :class:`FlattenObservation` for the evaluation environment, both through
:func:`observation_keys`, so a policy trained on a dataset acts on exactly the vector layout it
was trained on.
"""

from __future__ import annotations

from typing import Any, Mapping

import gymnasium as gym
import numpy as np

__all__ = [
    "FlattenObservation",
    "FlatteningError",
    "flat_dim",
    "flatten_observations",
    "observation_keys",
]

LEADING_KEYS = ("observation", "achieved_goal", "desired_goal")
"""Keys that come first, in this order; any other keys follow, sorted."""


class FlatteningError(ValueError):
    """An observation space that cannot be flattened (not a Box, or a Dict of non-Box spaces)."""


def observation_keys(space: gym.Space) -> tuple[str, ...]:
    """The Dict keys in flattening order (``()`` for a Box space)."""
    if isinstance(space, gym.spaces.Box):
        return ()
    if not isinstance(space, gym.spaces.Dict):
        raise FlatteningError(f"a {type(space).__name__} observation space cannot be flattened ({space}); use Box or a Dict of Boxes.")
    bad = [f"{key}: {type(sub).__name__}" for key, sub in space.spaces.items() if not isinstance(sub, gym.spaces.Box)]
    if bad:
        raise FlatteningError(f"only Dict observation spaces whose entries are Boxes can be flattened, not {', '.join(bad)}.")
    keys = list(space.spaces)
    return tuple([k for k in LEADING_KEYS if k in keys] + sorted(k for k in keys if k not in LEADING_KEYS))


def flat_dim(space: gym.Space) -> int:
    """Length of the flattened observation."""
    keys = observation_keys(space)
    if not keys:
        return int(np.prod(space.shape))
    return int(sum(np.prod(space.spaces[k].shape) for k in keys))


def flatten_observations(observations: Mapping[str, Any] | np.ndarray, space: gym.Space) -> np.ndarray:
    """``(..., obs_dim)`` float32 from observations of ``space``.

    A Dict observation holds an array ``(..., *shape_k)`` per key ``k`` (``...`` is the batch shape
    shared by every key: ``()`` for one observation, ``(T+1,)`` for a stored episode, ``(N,)`` for a
    vector env); the keys are concatenated in :func:`observation_keys` order. A Box observation
    ``(..., *shape)`` is reshaped to ``(..., prod(shape))``.
    """
    keys = observation_keys(space)
    if not keys:
        array = np.asarray(observations, dtype=np.float32)
        return array.reshape(array.shape[: array.ndim - len(space.shape)] + (-1,))
    parts = []
    for key in keys:
        array = np.asarray(observations[key], dtype=np.float32)
        event = len(space.spaces[key].shape)
        parts.append(array.reshape(array.shape[: array.ndim - event] + (-1,)))
    return np.concatenate(parts, axis=-1)


class FlattenObservation(gym.ObservationWrapper):
    """An environment whose Dict observations are flattened by :func:`flatten_observations`."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.dict_space = env.observation_space
        spaces = [env.observation_space.spaces[k] for k in observation_keys(env.observation_space)]
        low = np.concatenate([np.broadcast_to(s.low, s.shape).reshape(-1) for s in spaces]).astype(np.float32)
        high = np.concatenate([np.broadcast_to(s.high, s.shape).reshape(-1) for s in spaces]).astype(np.float32)
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)

    def observation(self, observation: dict[str, Any]) -> np.ndarray:
        return flatten_observations(observation, self.dict_space)
