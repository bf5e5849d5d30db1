"""Built-in datasets: generated on first use by real simulation, cached under $METACONSTRAINT_HOME,
listed, and enough for `run aspc --dataset builtin/...` with no network and no Minari data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from metaconstraint.cli import app
from metaconstraint.rl import data
from metaconstraint.rl.builtin import BUILTIN_DATASETS, generate_builtin

runner = CliRunner()
LEVELS = ("random", "medium", "expert")


def test_quickstart_trains_and_evaluates_offline(offline):
    out = offline / "runs"
    args = ["run", "aspc", "--dataset", "builtin/pendulum/medium-v0", "--steps", "60", "--eval-every", "30",
            "--eval-episodes", "2", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "aspc" / "builtin__pendulum__medium-v0" / "seed0" / "summary.json").read_text())
    assert summary["dataset"] == "builtin/pendulum/medium-v0" and [s["step"] for s in summary["scores"]] == [30, 60]
    assert np.isfinite(summary["final_score"]) and "final_scale" in summary
    cached = offline / "home" / "datasets" / "builtin" / "pendulum" / "medium-v0" / "data" / "main_data.hdf5"
    assert cached.is_file() and not any((offline / "empty").iterdir())
    # the short name is the same dataset, read from the cache without generating again
    stamp = cached.stat().st_mtime_ns
    assert data.load_dataset("pendulum-medium").id == "builtin/pendulum/medium-v0"
    assert cached.stat().st_mtime_ns == stamp


def test_levels_differ_in_score_and_match_their_references(offline):
    means = {}
    for level in LEVELS:
        described = data.describe_dataset(f"builtin/pendulum/{level}-v0")
        assert (described["episodes"], described["steps"], described["eval_horizon"]) == (100, 20000, 200)
        assert described["env_id"] == "Pendulum-v1"
        means[level] = described["normalized_returns"]["mean"]
    # references: the random policy scores ~0 and the expert controller ~100 by construction
    assert -10 < means["random"] < 10
    assert 35 < means["medium"] < 75
    assert 90 < means["expert"] < 110
    infos = [data.dataset_info(f"builtin/pendulum/{level}-v0") for level in LEVELS]
    assert len({(i.ref_min_score, i.ref_max_score) for i in infos}) == 1  # one pair of references per task


def test_generation_is_deterministic_and_real(offline):
    first = generate_builtin("builtin/pendulum/expert-v0", offline / "a")
    second = generate_builtin("builtin/pendulum/expert-v0", offline / "b")
    assert first != second
    import minari

    one, two = (data.load_transitions(minari.MinariDataset(p / "data")) for p in (first, second))
    np.testing.assert_array_equal(one.observations, two.observations)
    np.testing.assert_array_equal(one.actions, two.actions)
    # real Pendulum-v1 dynamics: the stored next state follows from the state and the action
    # (theta_dot' = theta_dot + (3 g / 2 l sin(theta) + 3 / (m l^2) u) dt, g = 10, dt = 0.05, clipped at 8)
    sin, velocity = one.observations[:, 1], one.observations[:, 2]
    predicted = np.clip(velocity + (15.0 * sin + 3.0 * one.actions[:, 0]) * 0.05, -8, 8)
    np.testing.assert_allclose(one.next_observations[:, 2], predicted, atol=1e-4)
    assert np.abs(one.actions).max() <= 2.0


def test_minari_root_comes_first_and_datasets_list_shows_builtin(offline):
    folder = data.load_dataset("pendulum-random")
    cached = offline / "home" / "datasets" / "builtin" / "pendulum" / "random-v0"
    shutil.copytree(cached, offline / "empty" / "builtin" / "pendulum" / "random-v0")
    assert data.find_local_dataset("builtin/pendulum/random-v0") == offline / "empty" / "builtin" / "pendulum" / "random-v0"
    assert folder.id == "builtin/pendulum/random-v0"
    result = runner.invoke(app, ["datasets", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    local = {line.split()[-1]: line.split()[1:-1] for line in result.output.splitlines() if line.strip()}
    for dataset_id in BUILTIN_DATASETS:  # local, or generated on first use
        assert local[dataset_id] == (["yes"] if dataset_id == "builtin/pendulum/random-v0" else ["on", "first", "use"])
    assert ("pendulum-medium", "builtin/pendulum/medium-v0", False) in data.known_datasets()


def test_unknown_builtin_names_and_the_offline_message(offline):
    with pytest.raises(data.UnknownDatasetError, match="builtin/pendulum/medium-v0"):
        data.resolve_dataset_id("builtin/pendulum/great-v0")
    result = runner.invoke(app, ["run", "aspc", "--dataset", "pen-human", "--out", str(offline / "runs")])
    assert result.exit_code == 2
    assert "metaconstraint run aspc --dataset builtin/pendulum/medium-v0" in " ".join(result.output.split())


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["aspc", "td3bc"])
def test_levels_order_the_trained_scores(offline, algorithm):
    """A short budget on each level: expert data gives a better policy than random data."""
    scores = {}
    for level in ("random", "expert"):
        args = ["run", algorithm, "--dataset", f"builtin/pendulum/{level}-v0", "--steps", "2000", "--eval-every", "2000",
                "--eval-episodes", "10", "--out", str(offline / "runs")]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        folder = offline / "runs" / algorithm / f"builtin__pendulum__{level}-v0" / "seed0"
        scores[level] = json.loads((folder / "summary.json").read_text())["final_score"]
    assert scores["expert"] > scores["random"] + 30
