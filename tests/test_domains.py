"""Every domain of the paper trains and evaluates: AntMaze, PointMaze (Dict observations flattened one
way for data and evaluation), MuJoCo locomotion, and a combined (medium-expert style) dataset.

None of the real sets can be downloaded here, so each test writes a small dataset of the real
structure (same Minari id, same environment, Dict observations where the real set has them) by
running the real environment with a simple policy, in a temporary root.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from metaconstraint.cli import app
from metaconstraint.rl import data
from metaconstraint.rl.observations import flatten_observations
from simulated import simulate_dataset

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

runner = CliRunner()
TINY = ["--steps", "40", "--eval-every", "40", "--eval-episodes", "2"]


def train(tmp_path, algorithm, dataset, env):
    result = runner.invoke(app, ["run", algorithm, "--dataset", dataset, *TINY, "--out", str(tmp_path / "runs")], env=env)
    assert result.exit_code == 0, result.output
    resolved = data.resolve_dataset_id(dataset)
    summary = json.loads((tmp_path / "runs" / algorithm / resolved.replace("/", "__") / "seed0" / "summary.json").read_text())
    assert summary["dataset"] == resolved and summary["steps"] == 40
    assert np.isfinite(summary["final_score"])
    return summary


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setenv("METACONSTRAINT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("METACONSTRAINT_OFFLINE", "1")
    return tmp_path / "minari"


def check_eval_layout(dataset_id, buffers, seed=0):
    """The evaluation env, reset with an episode's seed, observes what the dataset stored (flattened)."""
    dataset = data.load_dataset(dataset_id)
    envs = data.make_eval_env(dataset, 1)
    try:
        first, _ = envs.reset(seed=[seed])
    finally:
        envs.close()
    stored = flatten_observations({k: v[0] for k, v in buffers[0].observations.items()}, dataset.observation_space)
    np.testing.assert_allclose(first[0], stored, rtol=1e-6, atol=1e-6)
    transitions = data.load_transitions(dataset)
    np.testing.assert_allclose(transitions.observations[0], stored, rtol=1e-6, atol=1e-6)


def test_antmaze_flattens_dict_observations_and_shifts_rewards(tmp_path, root):
    buffers = simulate_dataset(root, "D4RL/antmaze/umaze-v1", "AntMaze_UMaze-v4", 30, 3, (0.0, 1.0))
    info = data.dataset_info(data.load_dataset("antmaze-umaze"))
    # AntMaze: 27-d robot state + 2-d position (achieved goal) + 2-d goal
    assert info.observation_dim == 31 and info.observation_keys == ("observation", "achieved_goal", "desired_goal")
    assert info.env_id == "AntMaze_UMaze-v4" and info.eval_horizon == 30 and info.reward_offset == -1.0
    shifted = data.load_transitions("antmaze-umaze")
    raw = data.load_transitions("antmaze-umaze", reward_offset=0.0)
    np.testing.assert_allclose(raw.rewards, np.concatenate([b.rewards for b in buffers]))
    np.testing.assert_allclose(shifted.rewards, raw.rewards - 1.0)
    np.testing.assert_allclose(shifted.episode_returns, raw.episode_returns - 30)
    check_eval_layout("D4RL/antmaze/umaze-v1", buffers)
    summary = train(tmp_path, "aspc", "antmaze-umaze", None)
    assert "final_scale" in summary
    # the trainer's buffer holds the shifted rewards by default; reward_offset = 0 in the config keeps them raw
    from metaconstraint.config import build_configs
    from metaconstraint.training import Trainer

    for offset, expected in ((None, shifted.rewards), (0.0, raw.rewards)):
        values = {"algorithm": "td3bc", "dataset": "antmaze-umaze", "out": str(tmp_path / "t"), "eval_episodes": 1}
        trainer = Trainer(*build_configs({**values, **({} if offset is None else {"reward_offset": offset})}))
        np.testing.assert_allclose(trainer.buffer.data["rewards"].numpy(), expected)


def test_pointmaze_flattens_dict_observations_without_reward_shift(tmp_path, root):
    buffers = simulate_dataset(root, "D4RL/pointmaze/umaze-v2", "PointMaze_UMaze-v3", 40, 4, (0.0, 100.0))
    info = data.dataset_info(data.load_dataset("maze2d-umaze"))
    assert info.observation_dim == 8 and info.reward_offset == 0.0 and info.eval_horizon == 40
    raw = data.load_transitions("maze2d-umaze")
    np.testing.assert_allclose(raw.rewards, np.concatenate([b.rewards for b in buffers]))
    check_eval_layout("D4RL/pointmaze/umaze-v2", buffers)
    train(tmp_path, "td3bc", "maze2d-umaze", None)


def test_mujoco_locomotion_and_a_combined_dataset(tmp_path, root):
    refs = (-20.0, 300.0)
    medium = simulate_dataset(root, "mujoco/hopper/medium-v0", "Hopper-v5", 40, 4, refs, seed=0)
    expert = simulate_dataset(root, "mujoco/hopper/expert-v0", "Hopper-v5", 40, 3, refs, seed=100)
    assert data.resolve_dataset_id("hopper-medium") == "mujoco/hopper/medium-v0"
    assert data.resolve_dataset_id("hopper-medium-expert") == "mujoco/hopper/medium-v0+mujoco/hopper/expert-v0"
    with pytest.raises(data.UnknownDatasetError, match="no D4RL locomotion"):
        data.resolve_dataset_id("hopper-medium-v2")
    info = data.dataset_info(data.load_dataset("hopper-medium"))
    assert (info.observation_dim, info.action_dim, info.env_id) == (11, 3, "Hopper-v5")
    train(tmp_path, "aspc", "hopper-medium", None)

    combined = data.load_dataset("hopper-medium-expert")
    info = data.dataset_info(combined)
    steps = sum(len(b.rewards) for b in medium + expert)
    assert (info.total_episodes, info.total_steps) == (7, steps)
    assert (info.ref_min_score, info.ref_max_score) == refs
    pooled = data.load_transitions(combined)
    np.testing.assert_allclose(pooled.rewards, np.concatenate([b.rewards for b in medium + expert]), rtol=1e-6)
    assert pooled.episode_lengths.tolist() == [len(b.rewards) for b in medium + expert]
    summary = train(tmp_path, "td3bc", "hopper-medium+mujoco/hopper/expert-v0", None)
    assert summary["dataset"] == "mujoco/hopper/medium-v0+mujoco/hopper/expert-v0"


def test_datasets_of_different_environments_cannot_be_combined(root):
    simulate_dataset(root, "mujoco/hopper/medium-v0", "Hopper-v5", 10, 1, (0.0, 1.0))
    simulate_dataset(root, "test/pendulum/a-v0", "Pendulum-v1", 10, 1, (0.0, 1.0))
    with pytest.raises(data.DatasetError, match="cannot be combined"):
        data.dataset_info(data.load_dataset("hopper-medium+test/pendulum/a-v0"))
    result = runner.invoke(app, ["run", "aspc", "--dataset", "hopper-medium+test/pendulum/a-v0", "--steps", "2"])
    assert result.exit_code == 2 and "cannot be combined" in " ".join(result.output.split())
    assert "Traceback" not in result.output
