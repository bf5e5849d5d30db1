"""What training and evaluation need to know about a dataset (spaces, horizon, size, reward offset)
and the D4RL normalised score ``100 * (R - ref_min) / (ref_max - ref_min)``."""

from __future__ import annotations

import dataclasses
import json

import gymnasium as gym
import numpy as np

from metaconstraint.rl.data.errors import DatasetError
from metaconstraint.rl.data.loading import CombinedDataset, as_dataset


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What training and evaluation need to know about a dataset (spaces, scores, horizon, size)."""

    dataset_id: str
    env_id: str
    observation_dim: int
    action_dim: int
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    max_action: float
    ref_min_score: float | None
    ref_max_score: float | None
    eval_horizon: int | None
    total_episodes: int
    total_steps: int
    observation_keys: tuple[str, ...] = ()  # Dict observations: keys in flattening order
    reward_offset: float = 0.0  # added to rewards for training by default (AntMaze: -1)


def _spec_dict(metadata: dict, key: str) -> dict | None:
    raw = metadata.get(key)
    if not raw:
        return None
    try:
        return json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return None


def dataset_spaces(dataset) -> tuple[gym.Space, gym.spaces.Box]:
    """The observation space (a Box, or a Dict of Boxes that is flattened) and the Box action space."""
    from metaconstraint.rl.observations import FlatteningError, observation_keys

    obs_space, act_space = dataset.observation_space, dataset.action_space
    if not isinstance(act_space, gym.spaces.Box):
        raise DatasetError(
            f"Dataset {dataset.id} has a {type(act_space).__name__} action space ({act_space}); only continuous "
            f"(Box) action spaces are supported."
        )
    try:
        observation_keys(obs_space)
    except FlatteningError as error:
        raise DatasetError(f"Dataset {dataset.id} has an observation space that is not supported: {error}") from None
    return obs_space, act_space


ANTMAZE_REWARD_OFFSET = -1.0
"""Added to AntMaze rewards for training (IQL's convention, used by the offline-RL literature since)."""


def default_reward_offset(env_id: str) -> float:
    """The reward offset training applies by default: ``ANTMAZE_REWARD_OFFSET`` for AntMaze, else 0."""
    return ANTMAZE_REWARD_OFFSET if env_id.startswith("AntMaze") else 0.0


def dataset_info(dataset) -> DatasetInfo:
    """Spaces, D4RL reference scores, evaluation env id and horizon, and size of ``dataset``."""
    from metaconstraint.rl.observations import flat_dim, observation_keys

    dataset = as_dataset(dataset)
    if isinstance(dataset, CombinedDataset):
        return _combined_info(dataset)
    obs_space, act_space = dataset_spaces(dataset)
    metadata = dataset.storage.metadata
    eval_spec = _spec_dict(metadata, "eval_env_spec")
    env_spec = _spec_dict(metadata, "env_spec")
    spec = eval_spec or env_spec or {}
    horizon = spec.get("max_episode_steps")
    low = np.asarray(act_space.low, dtype=np.float64).reshape(-1)
    high = np.asarray(act_space.high, dtype=np.float64).reshape(-1)
    ref_min, ref_max = metadata.get("ref_min_score"), metadata.get("ref_max_score")
    env_id = str(spec.get("id") or "")
    return DatasetInfo(
        dataset_id=dataset.id,
        env_id=env_id,
        observation_dim=flat_dim(obs_space),
        action_dim=int(np.prod(act_space.shape)),
        action_low=tuple(float(x) for x in low),
        action_high=tuple(float(x) for x in high),
        max_action=float(np.max(np.abs(high))) if high.size else 0.0,
        ref_min_score=None if ref_min is None else float(ref_min),
        ref_max_score=None if ref_max is None else float(ref_max),
        eval_horizon=None if horizon is None else int(horizon),
        total_episodes=int(dataset.total_episodes),
        total_steps=int(dataset.total_steps),
        observation_keys=observation_keys(obs_space),
        reward_offset=default_reward_offset(env_id),
    )


def _combined_info(dataset: CombinedDataset) -> DatasetInfo:
    infos = [dataset_info(part) for part in dataset.parts]
    first = infos[0]
    for info in infos[1:]:
        differ = [
            f"{what} ({getattr(first, key)} vs {getattr(info, key)})"
            for key, what in (
                ("env_id", "evaluation environment"),
                ("observation_dim", "observation size"),
                ("observation_keys", "observation keys"),
                ("action_dim", "action size"),
                ("action_low", "action bounds"),
                ("action_high", "action bounds"),
            )
            if getattr(first, key) != getattr(info, key)
        ]
        if differ:
            raise DatasetError(
                f"Datasets {first.dataset_id} and {info.dataset_id} cannot be combined: they differ in "
                f"{', '.join(differ)}. Only datasets of the same environment can be pooled with '+'."
            )
    return dataclasses.replace(
        first,
        dataset_id=dataset.id,
        total_episodes=sum(i.total_episodes for i in infos),
        total_steps=sum(i.total_steps for i in infos),
    )


def normalized_score(info: DatasetInfo, returns) -> np.ndarray:
    """D4RL score ``100 * (R - ref_min) / (ref_max - ref_min)`` of undiscounted returns ``R`` (any shape)."""
    lo, hi = info.ref_min_score, info.ref_max_score
    if lo is None or hi is None or hi == lo:
        raise DatasetError(
            f"Dataset {info.dataset_id} has no usable D4RL reference scores (ref_min_score={lo}, "
            f"ref_max_score={hi} in its metadata), so returns cannot be normalised."
        )
    return 100.0 * (np.asarray(returns, dtype=np.float64) - lo) / (hi - lo)
