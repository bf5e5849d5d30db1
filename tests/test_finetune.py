"""`metaconstraint finetune`: offline runs continue online with mixed minibatches, resume bit for bit,
and a learned scale keeps following its meta-gradient through the switch."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from metaconstraint.cli import app
from metaconstraint.rl.buffer import OfflineBuffer, StateNormalizer
from metaconstraint.rl.online import MixedSampler, OnlineBuffer, online_episode_seed

runner = CliRunner()
DATASET = "dapg/pen/expert-v0"  # the session's stand-in: pen episodes of 100 steps
FOLDER = DATASET.replace("/", "__")
OFFLINE_STEPS = 40


def offline_run(out: Path, algorithm: str, seeds: int = 1) -> list[Path]:
    result = runner.invoke(app, ["run", algorithm, "--dataset", DATASET, "--steps", str(OFFLINE_STEPS), "--seeds", str(seeds),
                                 "--eval-every", str(OFFLINE_STEPS), "--eval-episodes", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return [out / algorithm / FOLDER / f"seed{k}" for k in range(seeds)]


def finetune(run_dirs: list[Path], *options: str):
    return runner.invoke(app, ["finetune", *map(str, run_dirs), *options])


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def offline_runs(tmp_path_factory, simulated_root) -> dict[str, list[Path]]:
    out = tmp_path_factory.mktemp("offline")
    return {"aspc": offline_run(out, "aspc", seeds=2), "iql": offline_run(out, "iql")}


# ----------------------------------------------------------------------------- the data
def test_minibatches_take_the_offline_share_from_the_dataset_and_the_rest_from_each_members_own_buffer():
    dim = 3
    offline = OfflineBuffer(_transitions(np.full((50, dim), -1.0, dtype=np.float32)), StateNormalizer.identity(dim))
    online = OnlineBuffer(2, 10, dim, 1, StateNormalizer.identity(dim), "cpu")
    observations = np.array([[1.0] * dim, [2.0] * dim])  # member k's are k + 1
    for step in range(4):  # every episode ends, so each transition is sampled at once
        online.add(observations, np.zeros((2, 1)), np.array([100.0 + step, 200.0 + step]), observations, np.zeros(2), np.array([True, True]))
    sampler = MixedSampler(offline, online, batch_size=8, seeds=[3, 4], offline_fraction=0.25)
    batch = sampler.sample()["observations"]
    assert batch.shape == (2, 8, dim)
    assert torch.all(batch[:, :2] == -1.0)  # round(0.25 * 8) offline rows first
    assert torch.all(batch[0, 2:] == 1.0) and torch.all(batch[1, 2:] == 2.0)  # then the member's own online rows

    alone = MixedSampler(offline, _first_member(online), batch_size=8, seeds=[3], offline_fraction=0.25)
    twice = MixedSampler(offline, online, batch_size=8, seeds=[3, 4], offline_fraction=0.25)
    for _ in range(3):  # a member's draws do not depend on the other members
        assert torch.equal(alone.sample()["rewards"][0], twice.sample()["rewards"][0])
    assert len(set(twice.sample()["rewards"][0].tolist())) > 2  # (rows that tell draws apart)


def test_an_online_transition_is_sampled_once_its_next_action_is_known():
    buffer = OnlineBuffer(1, 10, 2, 1, StateNormalizer.identity(2), "cpu")
    obs = np.zeros((1, 2))
    buffer.add(obs, np.array([[0.1]]), np.zeros(1), obs, np.zeros(1), np.array([False]))
    assert buffer.sizes == [0] and buffer.pending == [True]  # its next action is not known yet
    buffer.complete(np.array([[0.2]]))
    buffer.add(obs, np.array([[0.2]]), np.zeros(1), obs, np.zeros(1), np.array([True]))  # the episode ends here
    assert buffer.sizes == [2] and buffer.pending == [False]
    assert buffer.data["next_actions"][0, :2, 0].tolist() == pytest.approx([0.2, 0.2])  # the next step's, then its own


def test_online_episode_seeds_never_meet_the_evaluation_episodes():
    seeds = {online_episode_seed(seed, episode) for seed in range(3) for episode in range(200)}
    assert len(seeds) == 600 and min(seeds) >= 2**32


# ----------------------------------------------------------------------------- runs
def test_the_learned_scale_continues_from_the_offline_run_and_keeps_adapting(offline_runs, tmp_path):
    result = finetune(offline_runs["aspc"], "--online-steps", "130", "--warmup-steps", "30", "--eval-every", "50",
                      "--eval-episodes", "1", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    for offline_dir in offline_runs["aspc"]:
        folder = tmp_path / "aspc" / FOLDER / f"{offline_dir.name}-finetune"
        offline_summary = json.loads((offline_dir / "summary.json").read_text())
        summary = json.loads((folder / "summary.json").read_text())
        records = metrics(folder)
        assert records[0]["step"] == 0 and records[0]["scale/alpha"] == offline_summary["final_scale"]
        assert records[0]["iteration"] == OFFLINE_STEPS  # the offline count goes on
        assert records[-1]["iteration"] == OFFLINE_STEPS + 100  # one update per step after the 30 warm-up steps
        assert summary["final_scale"] != offline_summary["final_scale"]  # the meta-gradient still moves alpha
        assert summary["online_steps"] == 130 and summary["offline"]["steps"] == OFFLINE_STEPS
        assert (folder / summary["offline"]["run"]).resolve() == offline_dir.resolve()
        assert sum(r.get("online_episodes", 0) for r in records) == 1  # pen's 100-step episodes


def test_a_gaussian_actor_explores_by_sampling_its_policy(offline_runs, tmp_path):
    result = finetune(offline_runs["iql"], "--online-steps", "40", "--warmup-steps", "20", "--eval-every", "40",
                      "--eval-episodes", "1", "--out", str(tmp_path), "--exploration-noise", "0")
    assert result.exit_code == 0, result.output
    checkpoint = torch.load(next((tmp_path / "iql" / FOLDER / "seed0-finetune" / "checkpoints").glob("*.pt")), weights_only=True)
    online = checkpoint["online"]["buffer"]["data"]
    from metaconstraint.checkpoint import load_run_policy

    policy, _ = load_run_policy(offline_runs["iql"][0])
    means = policy.algorithm.act(policy.state, online["observations"][:20].unsqueeze(0))[0]
    assert not torch.allclose(online["actions"][:20], means, atol=1e-3)  # with exploration noise 0, only sampling explains this


@pytest.mark.parametrize("resume_from", [50, 100, 150])  # mid-episode, at an episode's end, mid-way through the second
def test_a_resumed_fine_tuning_equals_the_uninterrupted_one_bit_for_bit(offline_runs, tmp_path, resume_from):
    options = ["--online-steps", "160", "--warmup-steps", "20", "--eval-every", "80", "--eval-episodes", "1",
               "--checkpoint-every", "50", "--keep-checkpoints", "4", "--out"]
    assert finetune(offline_runs["aspc"], *options, str(tmp_path / "whole")).exit_code == 0
    interrupted = finetune(offline_runs["aspc"], *options, str(tmp_path / "parts"))
    assert interrupted.exit_code == 0
    folders = {name: [tmp_path / name / "aspc" / FOLDER / f"seed{k}-finetune" for k in (0, 1)] for name in ("whole", "parts")}
    for folder in folders["parts"]:  # as if the run had died right after its checkpoint of `resume_from`
        for checkpoint in (folder / "checkpoints").glob("*.pt"):
            if int(checkpoint.stem.removeprefix("step")) > resume_from:
                checkpoint.unlink()
        (folder / "summary.json").unlink()
    assert {p.name for p in (folders["parts"][0] / "checkpoints").glob("*.pt")} >= {f"step{resume_from:08d}.pt"}
    resumed = runner.invoke(app, ["resume", str(folders["parts"][0])])
    assert resumed.exit_code == 0, resumed.output
    for whole, part in zip(folders["whole"], folders["parts"]):
        assert (whole / "metrics.jsonl").read_bytes() == (part / "metrics.jsonl").read_bytes()
        a = torch.load(whole / "checkpoints" / "step00000160.pt", weights_only=True)
        b = torch.load(part / "checkpoints" / "step00000160.pt", weights_only=True)
        for key in ("state", "online", "sampler"):
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_compare_fine_tunes_every_run_and_reports_offline_and_fine_tuned_side_by_side(tmp_path):
    grid = ["compare", "td3bc", "aspc", "--datasets", DATASET, "--seeds", "2", "--steps", "20", "--eval-every", "20",
            "--eval-episodes", "1", "--workers", "1", "--finetune", "30", "--out", str(tmp_path)]
    result = runner.invoke(app, grid, env={"METACONSTRAINT_OFFLINE": "1"}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for algorithm in ("td3bc", "aspc"):
        for seed in (0, 1):
            summary = json.loads((tmp_path / algorithm / FOLDER / f"seed{seed}-finetune" / "summary.json").read_text())
            assert summary["online_steps"] == 30 and summary["offline"]["run"] == f"../seed{seed}"
    report = (tmp_path / "results.md").read_text()
    assert "## Fine-tuning" in report and "| aspc (finetune) | 2 | 30 |" in report and "| td3bc (finetune) | 2 | 30 |" in report
    assert "![finetune](finetune.png)" in report and (tmp_path / "finetune.png").stat().st_size > 10_000
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("summary.json")}
    again = runner.invoke(app, grid, env={"METACONSTRAINT_OFFLINE": "1"}, catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("summary.json")} == before  # finished runs are skipped, both kinds


def test_the_python_api_fine_tunes_what_it_trained(tmp_path, simulated_root):
    from metaconstraint import Experiment

    experiment = Experiment("td3bc", DATASET, steps=20, eval_every=20, eval_episodes=1, out=str(tmp_path))
    experiment.fit()
    summaries = experiment.finetune(30, eval_every=30, eval_episodes=1)
    assert [s["online_steps"] for s in summaries] == [30]
    assert (tmp_path / "td3bc" / FOLDER / "seed0-finetune" / "summary.json").is_file()


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="pip install -e '.[tensorboard]'")
def test_trackers_get_the_fine_tuning_records_from_step_0(offline_runs, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = finetune(offline_runs["iql"], "--online-steps", "120", "--warmup-steps", "10", "--eval-every", "60",
                      "--eval-episodes", "1", "--out", str(tmp_path), "--logger", "tensorboard")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "iql" / FOLDER / "seed0-finetune"
    events = EventAccumulator(str(folder / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    for name in ("score", "online_score", "critic_loss"):
        written = [(r["step"], r[name]) for r in metrics(folder) if name in r]
        logged = [(e.step, e.value) for e in events.Scalars(name)]
        assert written and [step for step, _ in logged] == [step for step, _ in written], name
        assert [value for _, value in logged] == pytest.approx([value for _, value in written], rel=1e-6), name
    assert metrics(folder)[0]["step"] == 0


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "options, message",
    [
        (["--online-steps", "0"], "--online-steps must be at least 1"),
        (["--online-steps", "100", "--warmup-steps", "100"], "warmup_steps (100) must be below online_steps (100)"),
        (["--online-steps", "100", "--offline-fraction", "1.5"], "offline_fraction"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(offline_runs, options, message):
    result = finetune(offline_runs["aspc"][:1], *options)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_an_unfinished_run_and_a_fine_tuning_run_are_refused(offline_runs, tmp_path):
    unfinished = tmp_path / "copy" / "aspc" / FOLDER / "seed0"
    unfinished.mkdir(parents=True)
    (unfinished / "config.toml").write_bytes((offline_runs["aspc"][0] / "config.toml").read_bytes())
    result = finetune([unfinished], "--online-steps", "10", "--warmup-steps", "5")
    assert result.exit_code == 2 and "has not finished" in " ".join(result.output.split())

    assert finetune(offline_runs["iql"], "--online-steps", "10", "--warmup-steps", "5", "--out", str(tmp_path / "f")).exit_code == 0
    again = finetune([tmp_path / "f" / "iql" / FOLDER / "seed0-finetune"], "--online-steps", "10", "--warmup-steps", "5")
    assert again.exit_code == 2 and "is itself a fine-tuning run" in " ".join(again.output.split())

    mixed = finetune([offline_runs["aspc"][0], offline_runs["iql"][0]], "--online-steps", "10", "--warmup-steps", "5")
    assert mixed.exit_code == 2 and "differ in" in " ".join(mixed.output.split())


# ----------------------------------------------------------------------------- helpers
def _transitions(observations: np.ndarray):
    from metaconstraint.rl.data.transitions import Transitions

    n = len(observations)
    zeros = np.zeros(n, dtype=np.float32)
    actions = np.zeros((n, 1), dtype=np.float32)
    rewards = np.arange(n, dtype=np.float32)
    return Transitions(observations, actions, rewards, observations, actions, zeros, zeros, np.zeros(1), np.array([n]))


def _first_member(online: OnlineBuffer) -> OnlineBuffer:
    single = OnlineBuffer(1, online.capacity, 3, 1, online.normalizer, "cpu")
    single.data = {name: values[:1].clone() for name, values in online.data.items()}
    single.sizes, single.pending = online.sizes[:1], online.pending[:1]
    return single
