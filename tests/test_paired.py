"""The report's paired differences: pairs by (dataset, seed), the p-values of the stated test,
Holm's step-down adjustment, and the minimum detectable difference that marks an underpowered
comparison; on synthetic run folders whose answers are known."""

import csv
import json
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from typer.testing import CliRunner

from metaconstraint import stats
from metaconstraint.cli import app


def test_holm_matches_the_step_down_definition_and_keeps_the_input_order():
    p = [0.04, 0.01, 0.03, 0.20]
    # sorted: 0.01*4 = 0.04, 0.03*3 = 0.09, 0.04*2 = 0.08 -> 0.09 (monotone), 0.20*1 = 0.20
    assert stats.holm(p) == pytest.approx([0.09, 0.04, 0.09, 0.20])
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm([0.01]) == [0.01]  # one comparison: unadjusted


def test_detectable_difference_has_the_stated_power_and_shrinks_with_more_pairs():
    sd = 26.0
    d9 = stats.detectable_difference(sd, 9)
    assert stats.paired_t_power(d9, sd, 9) == pytest.approx(0.8, abs=1e-6)
    # the normal approximation (z_0.975 + z_0.8) sd / sqrt(n) is a lower bound that the t version approaches
    assert d9 > (1.959964 + 0.841621) * sd / 3
    d50 = stats.detectable_difference(sd, 50)
    assert d50 == pytest.approx((1.959964 + 0.841621) * sd / math.sqrt(50), rel=0.03)
    assert d50 < 11 < d9  # the issue's figures: ~50 pairs for 10 points at SD 26, 9 pairs far from it
    assert stats.detectable_difference(sd, 1) is None
    # scale-free: near-identical runs (a tiny SD) and n = 2 stay finite (scipy's far tails are NaN)
    assert stats.detectable_difference(1e-6, 12) == pytest.approx(stats.detectable_difference(1.0, 12) * 1e-6)
    assert math.isfinite(stats.detectable_difference(3.0, 2)) and stats.paired_t_power(1e6, 1.0, 12) == 1.0


def test_power_at_zero_difference_is_the_test_level():
    assert stats.paired_t_power(0.0, 5.0, 12) == pytest.approx(0.05, abs=1e-9)


def test_paired_p_values_are_scipys_tests_on_the_differences():
    rng = np.random.default_rng(0)
    d = rng.normal(3.0, 2.0, size=12)
    assert stats.paired_p_value(d, "t") == pytest.approx(scipy_stats.ttest_rel(d + 5.0, np.full(12, 5.0)).pvalue)
    assert stats.paired_p_value(d, "wilcoxon") == pytest.approx(scipy_stats.wilcoxon(d).pvalue)
    assert stats.paired_p_value(np.zeros(5)) == 1.0
    assert stats.paired_p_value(np.array([2.0])) is None
    with pytest.raises(ValueError, match="unknown paired test"):
        stats.paired_p_value(d, "sign")


def test_comparisons_pair_by_dataset_and_seed_only():
    scores = {
        "ref": {"a": {0: 10.0, 1: 20.0, 2: 30.0}, "b": {0: 5.0}},
        "x": {"a": {1: 15.0, 2: 26.0, 7: 100.0}, "b": {0: 1.0, 1: 50.0}},
    }
    (c,) = stats.paired_comparisons(scores, "ref")
    # pairs: (a,1) 5, (a,2) 4, (b,0) 4; seed 7 and (b,1) have no partner
    assert (c.pairs, c.datasets) == (3, 2)
    assert c.mean_difference == pytest.approx(13 / 3)
    with pytest.raises(ValueError, match="reference algorithm 'nope'"):
        stats.paired_comparisons(scores, "nope")


# ----------------------------------------------------------------------------- the report on run folders
SEEDS = range(12)
DATASETS = ("toy/a-v0", "toy/b-v0")


def synthetic_scores():
    """``base``: the reference. ``clear``: 20 points lower with small noise (resolved). ``noisy``: 3 points
    lower with SD 40 (underpowered at 10 points). ``close``: 1.2 points lower, SD 1 (p small before Holm)."""
    rng = np.random.default_rng(1)
    runs = {}
    for dataset in DATASETS:
        base = rng.uniform(40, 80, size=len(SEEDS))
        runs.setdefault("base", {})[dataset] = base
        runs.setdefault("clear", {})[dataset] = base - 20 + rng.normal(0, 2, size=len(SEEDS))
        runs.setdefault("noisy", {})[dataset] = base - 3 + rng.normal(0, 40, size=len(SEEDS))
        runs.setdefault("close", {})[dataset] = base - 1.2 + rng.normal(0, 1.0, size=len(SEEDS))
    return runs


def write_runs(root, runs):
    for algorithm, datasets in runs.items():
        for dataset, scores in datasets.items():
            for seed, score in zip(SEEDS, scores):
                folder = root / algorithm / dataset.replace("/", "__") / f"seed{seed}"
                folder.mkdir(parents=True)
                summary = {"algorithm": algorithm, "dataset": dataset, "seed": seed, "final_score": float(score),
                           "final_score_rule": "last", "scores": [{"step": 10, "score": float(score)}], "steps": 10}
                (folder / "summary.json").write_text(json.dumps(summary))


def read_paired(path):
    with open(path, newline="") as handle:
        return {row["other"]: row for row in csv.DictReader(handle)}


def test_report_resolves_the_clear_difference_and_calls_the_noisy_one_underpowered(tmp_path):
    runs = synthetic_scores()
    write_runs(tmp_path, runs)
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--reference", "base", "--bootstrap-samples", "50"])
    assert result.exit_code == 0, result.output
    rows = read_paired(tmp_path / "paired.csv")
    assert set(rows) == {"clear", "noisy", "close"}
    assert all(row["pairs"] == "24" and row["datasets"] == "2" and row["reference"] == "base" for row in rows.values())

    clear, noisy, close = rows["clear"], rows["noisy"], rows["close"]
    assert float(clear["mean_difference"]) == pytest.approx(20, abs=1.5)
    assert float(clear["p_holm"]) < 1e-6 and clear["underpowered"] == "False" and clear["verdict"].startswith("resolved")
    assert float(noisy["p_holm"]) > 0.05 and noisy["underpowered"] == "True"
    assert float(noisy["detectable_difference"]) > 10 and noisy["verdict"].startswith("underpowered")

    # Holm by hand over the three raw p-values: the recorded adjusted values and their order follow
    raw = {name: float(row["p"]) for name, row in rows.items()}
    expected = dict(zip(raw, stats.holm(list(raw.values()))))
    assert {name: float(row["p_holm"]) for name, row in rows.items()} == pytest.approx(expected, rel=1e-5)
    assert float(close["p_holm"]) == pytest.approx(min(1.0, 2 * raw["close"]), rel=1e-5)  # second smallest: x2

    markdown = (tmp_path / "results.md").read_text()
    assert "## Paired differences" in markdown and "paired t-test" in markdown and "Effect of interest: 10 points" in markdown
    line = next(line for line in markdown.splitlines() if line.startswith("| base − noisy"))
    assert "24 (2 datasets)" in line and "underpowered" in line


def test_report_reference_is_an_option_and_the_wilcoxon_test_is_stated(tmp_path):
    write_runs(tmp_path, synthetic_scores())
    result = CliRunner().invoke(
        app, ["report", str(tmp_path), "--reference", "clear", "--paired-test", "wilcoxon", "--effect", "50",
              "--bootstrap-samples", "50"]
    )
    assert result.exit_code == 0, result.output
    rows = read_paired(tmp_path / "paired.csv")
    assert set(rows) == {"base", "noisy", "close"} and {row["test"] for row in rows.values()} == {"wilcoxon"}
    assert float(rows["base"]["mean_difference"]) == pytest.approx(-20, abs=1.5)
    # 24 pairs, all negative: the exact signed-rank p-value is 2 / 2^24
    assert float(rows["base"]["p"]) == pytest.approx(2 / 2**24, rel=1e-3)
    assert rows["noisy"]["underpowered"] == "False" or float(rows["noisy"]["detectable_difference"]) > 50
    assert "Wilcoxon signed-rank" in (tmp_path / "results.md").read_text()

    missing = CliRunner().invoke(app, ["report", str(tmp_path), "--reference", "aspc"])
    assert missing.exit_code != 0 and "--reference aspc: no runs of it" in missing.output
    assert "Traceback" not in missing.output
