"""Hyperparameter members: values of a scalar config field trained beside the seeds as one
computation equal the separate runs with those values, seed for seed (same data streams).

The algorithm-level checks run in float64 over a few hundred iterations (metrics and final
parameters to 1e-9); the end-to-end checks train through the Trainer on a small local pen dataset and
compare run folders (config.toml, metrics, summaries, final checkpoints) with separate runs'.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from metaconstraint.algorithms import ALGORITHMS
from metaconstraint.algorithms.base import ProblemSpec
from metaconstraint.cli import app
from metaconstraint.config import ConfigError
from metaconstraint.members import expand_members, parse_member_sweep
from metaconstraint.rl.buffer import MemberSampler

from member_checks import synthetic_buffer

runner = CliRunner()
CPU = torch.device("cpu")
SPEC = ProblemSpec(11, 3, 1.0, 1000)
PEN = "D4RL/pen/human-v2"


def train(name: str, members, iterations: int, buffer, config: dict | None = None):
    """``iterations`` updates of ``members`` (a list of :class:`Member`) as one computation; returns the
    final state and the metrics of every iteration ``{name: (iterations, M)}``."""
    cls = ALGORITHMS[name]
    algorithm = cls(cls.Config(batch_size=64, **(config or {})), SPEC, len(members), CPU)
    varied = sorted({k for m in members for k in m.values})
    if varied:
        algorithm.set_member_values({k: [m.values[k] for m in members] for k in varied})
    seeds = [m.seed for m in members]
    sampler = MemberSampler(buffer, algorithm.batch_size, seeds)
    state = algorithm.init_state(seeds)
    history: dict[str, list] = {}
    for iteration in range(1, iterations + 1):
        state, metrics = algorithm.update(state, sampler, iteration)
        for key, value in metrics.items():
            history.setdefault(key, []).append(value.clone())
    return state, {k: torch.stack(v) for k, v in history.items()}


def assert_member_equals_alone(stacked, alone, k: int, rtol: float, atol: float) -> None:
    (state, metrics), (own_state, own_metrics) = stacked, alone
    assert set(metrics) == set(own_metrics)
    for key, values in own_metrics.items():
        torch.testing.assert_close(metrics[key][:, k], values[:, 0], rtol=rtol, atol=atol, msg=f"metric {key}")
    for network in [n for n, v in own_state.items() if isinstance(v, dict) and n not in ("meta", "outer") and not n.endswith("_opt")]:
        for key, value in own_state[network].items():
            torch.testing.assert_close(state[network][key][k], value[0], rtol=rtol, atol=atol, msg=f"{network} {key}")
    for key, value in own_state["meta"]["raw"].items():
        torch.testing.assert_close(state["meta"]["raw"][key][k], value[0], rtol=rtol, atol=atol, msg=f"meta {key}")


SHORT = [
    ("td3bc", "alpha", [0.3, 10.0], 60), ("aspc", "alpha", [1.0, 4.0], 40), ("rebrac", "actor_bc_coef", [0.1, 1.0], 20),
    ("aspc-iql", "beta", [1.0, 5.0], 40),
]
LONG = [("td3bc", "alpha", [0.3, 10.0], 300), ("aspc", "alpha", [1.0, 4.0], 200), ("iql", "beta", [1.0, 10.0], 100)]


@pytest.mark.parametrize(
    ("name", "field", "values", "iterations"), SHORT + [pytest.param(*case, marks=pytest.mark.slow) for case in LONG]
)
def test_members_equal_separate_runs_seed_for_seed(float64, name, field, values, iterations):
    """Members values x seeds (2 x 2) trained as one computation equal the (value, seed) pairs
    (0.3, seed 1) and (10, seed 0) trained alone with that value in their config: every iteration's
    metrics and the final networks (and ASPC's learned alpha, started from each member's value: 2
    alpha steps in 40 iterations, 10 in the slow version's 200)."""
    buffer = synthetic_buffer()
    members = expand_members({field: values}, [0, 1])
    assert [(m.seed, m.values[field], m.tag) for m in members] == [
        (0, values[0], f"{field}={values[0]!r}"), (1, values[0], f"{field}={values[0]!r}"),
        (0, values[1], f"{field}={values[1]!r}"), (1, values[1], f"{field}={values[1]!r}"),
    ]
    stacked = train(name, members, iterations, buffer)
    for k in (1, 2):  # both seeds, both values
        member = members[k]
        alone = train(name, [type(member)(member.seed)], iterations, buffer, config={field: member.values[field]})
        assert_member_equals_alone(stacked, alone, k, rtol=1e-9, atol=1e-11)
    # the members differ: the value matters (same seed, different values)
    assert not torch.allclose(stacked[0]["actor"]["w0"][0], stacked[0]["actor"]["w0"][2])
    if name.startswith("aspc"):
        assert stacked[0]["meta"]["updates"] == iterations // 20


def test_a_field_that_cannot_vary_between_members_is_a_clear_error():
    cls = ALGORITHMS["td3bc"]
    algorithm = cls(cls.Config(), SPEC, 2, CPU)
    with pytest.raises(ValueError, match="td3bc cannot vary critic_lr.*supported: alpha"):
        algorithm.set_member_values({"critic_lr": [1e-4, 3e-4]})
    with pytest.raises(ValueError, match="bc cannot vary alpha.*supported: none"):
        ALGORITHMS["bc"](ALGORITHMS["bc"].Config(), SPEC, 2, CPU).set_member_values({"alpha": [1.0, 2.0]})


@pytest.mark.parametrize(
    ("spec", "message"),
    [(["alpha"], "FIELD=V1,V2"), (["alpha=1,x"], "must be numbers"), (["alpha=1,1.0"], "listed twice"), (["alpha=1", "alpha=2"], "given twice")],
)
def test_bad_member_sweeps_are_clear_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_member_sweep(spec)


def test_member_sweep_values_read_as_a_sweep_spec_reads_them():
    assert parse_member_sweep(["alpha=0.3,1,2.5,10"]) == {"alpha": [0.3, 1, 2.5, 10]}
    assert [m.tag for m in expand_members({"alpha": [0.3, 1]}, [5], "x")] == ["x+alpha=0.3", "x+alpha=1"]


# ----------------------------------------------------------------------------- end to end
@pytest.fixture
def pen(pen_human_root, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(pen_human_root))
    monkeypatch.setenv("METACONSTRAINT_OFFLINE", "1")
    return pen_human_root


OPTIONS = ["--steps", "60", "--eval-every", "30", "--eval-episodes", "1"]


def run_cli(*args: str) -> None:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


def folder(out: Path, name: str, algorithm: str = "td3bc") -> Path:
    return out / algorithm / PEN.replace("/", "__") / name


def records(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(directory: Path, separate: Path, rtol: float = 1e-4) -> None:
    """Config (but ``out``), metrics, scores and final parameters of two run folders agree."""
    config, own = ((d / "config.toml").read_text().splitlines() for d in (directory, separate))
    assert [line for line in config if not line.startswith("out =")] == [line for line in own if not line.startswith("out =")]
    for row, own_row in zip(records(directory), records(separate), strict=True):
        assert row.keys() == own_row.keys() and row["step"] == own_row["step"]
        for key in row:
            assert row[key] == pytest.approx(own_row[key], rel=rtol, abs=1e-6), key
    final = [torch.load(sorted((d / "checkpoints").glob("*.pt"))[-1], weights_only=True)["state"] for d in (directory, separate)]
    for key, value in final[1]["actor"].items():
        torch.testing.assert_close(final[0]["actor"][key], value, rtol=rtol, atol=1e-6)
    summary, own_summary = (json.loads((d / "summary.json").read_text()) for d in (directory, separate))
    assert summary["final_score"] == pytest.approx(own_summary["final_score"], rel=rtol, abs=1e-6)


def test_a_member_sweep_writes_the_run_folders_of_the_separate_runs(pen, tmp_path):
    """`run td3bc --seeds 2 --member-sweep alpha=1,10`: four folders seed<K>-alpha=<v>, each equal
    to the separate run with that seed and alpha (config.toml, metrics, scores, final parameters)."""
    out = tmp_path / "members"
    run_cli("run", "td3bc", "--dataset", PEN, *OPTIONS, "--seeds", "2", "--member-sweep", "alpha=1,10", "--out", str(out))
    names = sorted(p.name for p in folder(out, "").iterdir())
    assert names == ["seed0-alpha=1", "seed0-alpha=10", "seed1-alpha=1", "seed1-alpha=10"]
    (tmp_path / "c.toml").write_text('alpha = 10\ntag = "alpha=10"\n')
    separate = tmp_path / "separate"
    run_cli("run", "td3bc", "--dataset", PEN, *OPTIONS, "--seed", "1", "--config", str(tmp_path / "c.toml"), "--out", str(separate))
    assert_same_run(folder(out, "seed1-alpha=10"), folder(separate, "seed1-alpha=10"))
    assert json.loads((folder(out, "seed1-alpha=10") / "summary.json").read_text())["seed"] == 1


def test_members_resume_together_bit_for_bit(pen, tmp_path):
    """An aspc member sweep stopped after its first checkpoint and resumed from one member's folder
    continues every member and ends bit-identical to the uninterrupted run."""
    options = [*OPTIONS, "--member-sweep", "alpha=1,4", "--seeds", "1"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    run_cli("run", "aspc", "--dataset", PEN, *options, "--out", str(whole))
    shutil.copytree(whole, cut)
    for name in ("seed0-alpha=1", "seed0-alpha=4"):
        directory = folder(cut, name, "aspc")
        (directory / "checkpoints" / "step00000060.pt").unlink()
        (directory / "summary.json").unlink()
    run_cli("resume", str(folder(cut, "seed0-alpha=4", "aspc")))
    for name in ("seed0-alpha=1", "seed0-alpha=4"):
        final = [torch.load(folder(o, name, "aspc") / "checkpoints" / "step00000060.pt", weights_only=True) for o in (whole, cut)]
        assert final[0]["member_records"] == final[1]["member_records"]
        for part in ("actor", "critic"):
            for key, value in final[0]["state"][part].items():
                assert torch.equal(final[1]["state"][part][key], value), (name, part, key)
        assert torch.equal(final[1]["state"]["meta"]["raw"]["alpha"], final[0]["state"]["meta"]["raw"]["alpha"])
        assert records(folder(cut, name, "aspc")) == records(folder(whole, name, "aspc"))
    alphas = [records(folder(whole, n, "aspc"))[-1]["scale/alpha"] for n in ("seed0-alpha=1", "seed0-alpha=4")]
    assert alphas[0] == pytest.approx(1.0, abs=0.05) and alphas[1] == pytest.approx(4.0, abs=0.05)


def test_an_unsupported_member_field_fails_before_training(pen, tmp_path):
    result = runner.invoke(app, ["run", "td3bc", "--dataset", PEN, *OPTIONS, "--member-sweep", "critic_lr=1e-4,3e-4", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "td3bc cannot train members that differ in critic_lr" in " ".join(result.output.split())
    assert not (tmp_path / "td3bc").exists()
