"""`datasets collect` round trip: the collected dataset loads, `info` matches what was collected, and
scores are normalised with the recorded references; trained and imported policies; clear errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from metaconstraint.cli import app
from metaconstraint.rl import data
from metaconstraint.rl.builtin import pendulum_expert
from metaconstraint.rl.collect import collect_dataset, measure_return

runner = CliRunner()


@pytest.fixture
def env(tmp_path):
    return {
        "MINARI_DATASETS_PATH": str(tmp_path / "minari"),
        "METACONSTRAINT_HOME": str(tmp_path / "home"),
        "METACONSTRAINT_OFFLINE": "1",
    }


def invoke(args, env):
    return runner.invoke(app, args, env=env)


def info_json(name, env):
    result = invoke(["datasets", "info", name, "--json"], env)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_collect_round_trip(tmp_path, env, monkeypatch):
    root = tmp_path / "collected"
    args = ["datasets", "collect", "Pendulum-v1", "--id", "mine/pendulum/expert-v0", "--policy",
            "metaconstraint.rl.builtin:pendulum_expert", "--episodes", "6", "--noise", "0.1", "--root", str(root),
            "--seed", "3", "--reference-episodes", "4"]
    result = invoke(args, env)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    found = re.search(r"references random (\S+), expert (\S+)\.", text)
    ref_min, ref_max = float(found.group(1)), float(found.group(2))
    assert "6 episodes, 1,200 steps of Pendulum-v1 (horizon 200)" in text
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no staging folder left behind

    # the references are what collect measured: the random policy and the noise-free behaviour policy
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    dataset = data.load_dataset("mine/pendulum/expert-v0")
    info = data.dataset_info(dataset)
    assert (info.ref_min_score, info.ref_max_score) == pytest.approx((ref_min, ref_max), rel=1e-5)
    spec = data.make_eval_env(dataset, 1).envs[0].spec
    assert spec.id == "Pendulum-v1" and info.eval_horizon == 200
    assert info.ref_max_score == pytest.approx(measure_return(spec, pendulum_expert, 4, seed=3).mean())
    assert info.ref_min_score < -900 < -300 < info.ref_max_score

    # info matches what was collected
    described = info_json("mine/pendulum/expert-v0", {**env, "MINARI_DATASETS_PATH": str(root)})
    assert (described["episodes"], described["steps"], described["eval_horizon"]) == (6, 1200, 200)
    assert described["env_id"] == "Pendulum-v1" and described["observation_dim"] == 3
    assert "Box(-2.0, 2.0, (1,), float32)" == described["action_space"]
    returns = data.load_transitions(dataset).episode_returns
    assert described["returns"]["mean"] == pytest.approx(returns.mean())
    assert sum(described["histogram"]["counts"]) == 6
    # normalised scores use the recorded references
    expected = 100 * (returns - ref_min) / (ref_max - ref_min)
    assert described["normalized_returns"]["mean"] == pytest.approx(expected.mean(), rel=1e-4)
    np.testing.assert_allclose(data.normalized_score(info, [info.ref_min_score, info.ref_max_score]), [0, 100])

    # a trained policy on it, then collecting with that run folder as the behaviour policy
    run = invoke(["run", "td3bc", "--dataset", "mine/pendulum/expert-v0", "--steps", "20", "--eval-every", "20",
                  "--eval-episodes", "1", "--out", str(tmp_path / "runs")], {**env, "MINARI_DATASETS_PATH": str(root)})
    assert run.exit_code == 0, run.output
    run_dir = tmp_path / "runs" / "td3bc" / "mine__pendulum__expert-v0" / "seed0"
    result = invoke(["datasets", "collect", "Pendulum-v1", "--id", "mine/pendulum/td3bc-v0", "--policy", str(run_dir),
                     "--steps", "250", "--expert-score", str(ref_max), "--root", str(root), "--reference-episodes", "2"], env)
    assert result.exit_code == 0, result.output
    t = data.load_transitions("mine/pendulum/td3bc-v0")
    assert t.episode_lengths.tolist() == [200, 50] and t.timeouts[-1] == 1.0  # --steps: exactly 250, last truncated
    assert data.dataset_info("mine/pendulum/td3bc-v0").ref_max_score == pytest.approx(ref_max)


def test_random_policy_and_dict_observations(tmp_path, monkeypatch):
    result = collect_dataset("PointMaze_UMaze-v3", "mine/pointmaze/random-v0", "random", tmp_path, episodes=2,
                             expert_score=50.0, max_episode_steps=20, reference_episodes=2)
    assert (result.episodes, result.steps, result.ref_max_score) == (2, 40, 50.0)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    info = data.dataset_info(data.load_dataset("mine/pointmaze/random-v0"))
    assert info.observation_dim == 8 and info.eval_horizon == 20 and info.ref_min_score == pytest.approx(result.ref_min_score)


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["Pendulum-v1", "--id", "mine/p/a-v0", "--policy", "random", "--episodes", "2"], "--expert-score"),
        (["Pendulm-v1", "--id", "mine/p/a-v0", "--episodes", "2", "--expert-score", "1"], "Did you mean Pendulum-v1"),
        (["Pendulum-v1", "--id", "mine/p/a", "--episodes", "2"], "NAMESPACE/ENV/NAME-vN"),
        (["Pendulum-v1", "--id", "D4RL/p/a-v0", "--episodes", "2"], "reserved"),
        (["Pendulum-v1", "--id", "mine/p/a-v0"], "--episodes N or --steps N"),
        (["Pendulum-v1", "--id", "mine/p/a-v0", "--episodes", "1", "--policy", "nosuchmodule:f"], "cannot import nosuchmodule"),
        (["Pendulum-v1", "--id", "mine/p/a-v0", "--episodes", "1", "--policy", "metaconstraint.rl.builtin:pendulum_controller"], "not an action"),
        (["Pendulum-v1", "--id", "mine/p/a-v0", "--episodes", "1", "--policy", "runs/nothing/here"], "no such run folder"),
        (["Hopper-v5", "--id", "mine/p/a-v0", "--episodes", "1", "--policy", "math:sqrt"], "failed on an observation"),
    ],
)
def test_bad_collections_fail_clearly(tmp_path, env, extra, needle):
    result = invoke(["datasets", "collect", *extra, "--root", str(tmp_path / "root")], env)
    assert result.exit_code == 2, result.output
    assert needle in " ".join(result.output.split())
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "root" / "mine" / "p").exists()


def test_an_existing_dataset_is_not_overwritten(tmp_path, env):
    args = ["datasets", "collect", "Pendulum-v1", "--id", "mine/p/a-v0", "--episodes", "1", "--max-episode-steps", "5",
            "--policy", "metaconstraint.rl.builtin:pendulum_expert", "--reference-episodes", "1", "--root", str(tmp_path)]
    assert invoke(args, env).exit_code == 0
    again = invoke(args, env)
    assert again.exit_code == 2 and "already exists" in again.output


def test_download_offline_is_clear_and_local_sets_are_reported(tmp_path, env):
    result = invoke(["datasets", "download", "hopper-medium"], env)
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "mujoco/hopper/medium-v0" in message and "METACONSTRAINT_OFFLINE" in message and "builtin/pendulum" in message
    result = invoke(["datasets", "download", "pendulum-random"], env)
    assert result.exit_code == 0 and "generated in" in result.output
    result = invoke(["datasets", "download", "pendulum-random"], env)
    assert result.exit_code == 0 and "already local" in result.output
