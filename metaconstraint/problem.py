"""What a run trains on and is scored in: the device, the dataset and its evaluation environment.

:func:`open_dataset` makes every check that needs no transitions (the dataset exists, is not empty
and matches its evaluation environment), so a bad setting fails before any training;
:func:`score_policy` plays members' deterministic policies on the shared seeded episodes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from metaconstraint.algorithms import Algorithm
from metaconstraint.rl import data as data_module
from metaconstraint.rl.buffer import StateNormalizer
from metaconstraint.rl.evaluation import evaluate_returns

__all__ = ["DeviceError", "check_environment_spaces", "open_dataset", "resolve_device", "score_policy"]


class DeviceError(ValueError):
    """A device this machine cannot train on; the message names what it has."""


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise DeviceError(f"unknown device '{name}' (use cpu, cuda or cuda:N).") from None
    if device.type not in ("cpu", "cuda"):
        raise DeviceError(f"--device {name}: only cpu and cuda devices are supported.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {name}: this machine has no CUDA device (torch {torch.__version__}).")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s).")
    return device


def check_environment_spaces(info, env) -> None:
    """Raise :class:`~metaconstraint.rl.data.DatasetError` unless the dataset's observation and action
    spaces are those of its evaluation environment (else training would end in a crash at the first
    evaluation)."""
    import gymnasium as gym

    obs_space, act_space = env.single_observation_space, env.single_action_space
    problems = []
    for kind, space, dim in (("observation", obs_space, info.observation_dim), ("action", act_space, info.action_dim)):
        if not isinstance(space, gym.spaces.Box):
            problems.append(f"the environment's {kind} space is {type(space).__name__}, not Box")
        elif int(np.prod(space.shape)) != dim:
            problems.append(f"{kind}s have {dim} dimensions in the dataset but {int(np.prod(space.shape))} in the environment")
    if not problems and (
        not np.allclose(np.asarray(act_space.low, dtype=np.float64).reshape(-1), info.action_low)
        or not np.allclose(np.asarray(act_space.high, dtype=np.float64).reshape(-1), info.action_high)
    ):
        problems.append("the action bounds differ between the dataset and the environment")
    if problems:
        raise data_module.DatasetError(
            f"Dataset {info.dataset_id} does not match its evaluation environment {info.env_id or '(unnamed)'}: "
            f"{'; '.join(problems)}. A policy trained on it could not be evaluated. Check the env_spec and "
            f"eval_env_spec in the dataset's metadata, or recreate the dataset."
        )


def open_dataset(name: str, eval_envs: int = 1):
    """``(dataset, info, eval_env)`` after every check that needs no transitions: the dataset
    exists, is readable, is not empty, and matches its evaluation environment."""
    dataset = data_module.load_dataset(name)
    info = data_module.dataset_info(dataset)
    if info.total_steps == 0 or info.total_episodes == 0:
        raise data_module.DatasetError(
            f"Dataset {info.dataset_id} is empty ({info.total_episodes} episodes, {info.total_steps} steps): "
            f"there is nothing to train on. Download or collect it again."
        )
    env = data_module.make_eval_env(dataset, eval_envs)
    check_environment_spaces(info, env)
    return dataset, info, env


def score_policy(algorithm: Algorithm, state, normalizer: StateNormalizer, info, env, members: int, episodes: int, device) -> np.ndarray:
    """D4RL-normalised scores ``(M, E)`` of the members' deterministic policies on the shared seeded
    episodes ``0..E-1`` (:mod:`metaconstraint.rl.evaluation`)."""

    def act(observations: Tensor) -> Tensor:
        return algorithm.act(state, normalizer(observations))

    returns = evaluate_returns(act, env, members, episodes, device)
    return data_module.normalized_score(info, returns)
