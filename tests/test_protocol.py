"""The evaluation protocol and the reward options a results grid fixes before it runs.

Pen draws its goal at reset, so these tests use a small local ``D4RL/pen/human-v2`` (real
AdroitHandPen-v1 steps, made by the ``pen_human_root`` fixture): episodes with other reset seeds
have other goals and other returns.
"""

from __future__ import annotations

import json
import tomllib

import numpy as np
import pytest
import torch

from metaconstraint.checkpoint import evaluate_run
from metaconstraint.config import build_configs
from metaconstraint.rl import data
from metaconstraint.rl.evaluation import evaluate_returns
from metaconstraint.training import Trainer

PEN_HUMAN = "D4RL/pen/human-v2"


@pytest.fixture
def pen_human(pen_human_root, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(pen_human_root))
    return PEN_HUMAN


def trainer(tmp_path, **overrides) -> Trainer:
    values = {"algorithm": "td3bc", "dataset": PEN_HUMAN, "steps": 20, "eval_every": 20, "eval_episodes": 2,
              "log_every": 10, "out": tmp_path, **overrides}
    return Trainer(*build_configs(values))


def test_every_seed_plays_the_same_episodes(tmp_path, pen_human):
    run = trainer(tmp_path, seeds=2, eval_episodes=3)
    state = run.algorithm.init_state(run.seeds)
    for name in ("actor", "critic"):  # member 1 takes member 0's networks
        for tensor in state[name].values():
            tensor[1] = tensor[0]
    scores = run.evaluate(state)
    np.testing.assert_array_equal(scores[0], scores[1])
    assert len(set(scores[0].round(6))) == 3, "the three episodes differ (pen's goals)"


@pytest.fixture
def one_thread():
    """One torch thread: with several, a product's blocking (and so its last bits) depends on the batch
    shape, and pen turns a last-bit difference into a different episode within 100 steps."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_more_episodes_than_environments_play_in_rounds(pen_human, one_thread):
    env_of = {width: data.make_eval_env(data.load_dataset(pen_human), 2 * width) for width in (2, 5)}
    weights = torch.randn(45, 24, generator=torch.Generator().manual_seed(0)) * 0.1

    def act(observations):
        return torch.tanh(observations @ weights)

    wide = evaluate_returns(act, env_of[5], 2, 5)
    rounds = evaluate_returns(act, env_of[2], 2, 5)  # rounds of 2, 2 and 1 (+1 dropped)
    assert rounds.shape == (2, 5)
    np.testing.assert_allclose(rounds, wide, rtol=1e-10)


def test_final_evaluation_plays_final_eval_episodes(tmp_path, pen_human):
    run = trainer(tmp_path, eval_every=10, final_eval_episodes=5)
    summary = run.fit()[0]
    records = [json.loads(line) for line in (run.directories[0] / "metrics.jsonl").read_text().splitlines()]
    scored = [r for r in records if "score" in r]
    assert [r["step"] for r in scored] == [10, 20]
    rescored = evaluate_run(run.directories[0], episodes=5)
    assert rescored["step"] == 20
    assert summary["final_score"] == pytest.approx(rescored["mean"], rel=1e-6)
    assert summary["final_score"] != pytest.approx(evaluate_run(run.directories[0], episodes=2)["mean"], rel=1e-3)
    episodes = summary["final_episode_scores"]  # per episode, so runs can be compared episode by episode
    np.testing.assert_allclose(episodes, rescored["scores"], rtol=1e-6, atol=1e-4)
    assert np.mean(episodes) == pytest.approx(summary["final_score"], rel=1e-12)
    # a resume from the final checkpoint (killed before the summary was written) replays the evaluation
    (run.directories[0] / "summary.json").unlink()
    resumed = trainer(tmp_path, eval_every=10, final_eval_episodes=5).fit(resume=True)[0]
    assert resumed["final_episode_scores"] == episodes and resumed["final_score"] == summary["final_score"]
    config = tomllib.loads((run.directories[0] / "config.toml").read_text())
    assert config["final_eval_episodes"] == 5 and config["eval_episodes"] == 2


def test_reward_scale_and_centring_change_training_rewards_only(tmp_path, pen_human):
    plain = data.load_transitions(data.load_dataset(pen_human))
    centred = data.preprocess_rewards(plain, center=True, scale=10.0)
    mean = plain.rewards.astype(np.float64).mean()
    np.testing.assert_allclose(centred.rewards, 10.0 * (plain.rewards - mean), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(centred.episode_returns, 10.0 * (plain.episode_returns - mean * plain.episode_lengths))
    assert abs(centred.rewards.mean()) < 1e-3 * np.abs(centred.rewards).mean()

    run = trainer(tmp_path, reward_scale=10.0, reward_center=True)
    np.testing.assert_allclose(run.buffer.data["rewards"].cpu().numpy().ravel(), centred.rewards, rtol=1e-6)
    run.fit()
    config = tomllib.loads((run.directories[0] / "config.toml").read_text())
    assert config["reward_scale"] == 10.0 and config["reward_center"] is True
    # absent when not asked for: configs written before these options read back as they were
    default = trainer(tmp_path / "default")
    assert "reward_scale" not in default.resolved and "reward_center" not in default.resolved
