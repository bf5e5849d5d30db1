"""Shared fixtures: the real datasets' root, and a small local ``D4RL/pen/human-v2``."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"

# The default suite reads the real datasets from MINARI_DATASETS_PATH, default ../shared/datasets.
if not os.environ.get("MINARI_DATASETS_PATH") and SHARED_DATASETS.is_dir():
    os.environ["MINARI_DATASETS_PATH"] = str(SHARED_DATASETS)

PEN_REF_MIN = 96.262799
PEN_REF_MAX = 3076.8331017826877


def build_pen_human(root: Path, episodes: int = 5, horizon: int = 100, seed: int = 0) -> Path:
    """Write a small ``D4RL/pen/human-v2`` under ``root``: real AdroitHandPen-v1 steps, random actions.

    Its metadata matches the real set's where it matters: an ``eval_env_spec`` with D4RL's pen
    horizon (100 steps) and the D4RL pen reference scores.
    """
    import gymnasium as gym
    import gymnasium_robotics
    import minari
    import numpy as np
    from minari.data_collector import EpisodeBuffer

    gym.register_envs(gymnasium_robotics)
    spec = dataclasses.replace(gym.spec("AdroitHandPen-v1"), max_episode_steps=horizon)
    env = gym.make(spec)
    env.action_space.seed(seed)
    buffers = []
    for episode in range(episodes):
        observation, _ = env.reset(seed=seed + episode)
        steps = {"observations": [observation], "actions": [], "rewards": [], "terminations": [], "truncations": []}
        done = False
        while not done:
            action = env.action_space.sample()
            observation, reward, terminated, truncated, _ = env.step(action)
            for key, value in zip(steps, (observation, action, reward, terminated, truncated)):
                steps[key].append(value)
            done = terminated or truncated
        buffers.append(EpisodeBuffer(id=episode, seed=seed + episode, **{k: np.asarray(v) for k, v in steps.items()}))
    env.close()
    # DataCollector would need jax (minari's "create" extra); writing the buffers does not.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(root))
        minari.create_dataset_from_buffers(
            dataset_id="D4RL/pen/human-v2",
            buffer=buffers,
            env=spec,
            eval_env=spec,
            algorithm_name="random actions (metaconstraint test fixture)",
            author="metaconstraint tests",
            author_email="tests@metaconstraint.invalid",
            code_permalink="https://example.invalid/metaconstraint",
            description=f"{episodes} random-action episodes of {horizon} steps in AdroitHandPen-v1, for tests.",
            ref_min_score=PEN_REF_MIN,
            ref_max_score=PEN_REF_MAX,
        )
    return root


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The Minari root with the real datasets: ``MINARI_DATASETS_PATH`` (default ``../shared/datasets``)."""
    return Path(os.environ.get("MINARI_DATASETS_PATH") or SHARED_DATASETS)


@pytest.fixture(scope="session")
def pen_human_root(tmp_path_factory) -> Path:
    """A temporary Minari root holding a small ``D4RL/pen/human-v2`` (5 episodes x 100 steps)."""
    return build_pen_human(tmp_path_factory.mktemp("pen_human_root"))


@pytest.fixture
def float64():
    """torch's default dtype float64 for the test (equality checks to 1e-9 over many iterations)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
