"""`metaconstraint report` on small fake run folders: the aggregate table (IQM, mean, 95% CIs,
P(aspc > X)) and the aggregate plots, with the number of runs and bootstrap samples stated."""

import json
import re

import pytest
from PIL import Image
from typer.testing import CliRunner

from metaconstraint.cli import app

runner = CliRunner()
# Hand-computed below: IQM of 6 pooled runs cuts one run at each end (trim_mean, 25%).
SCORES = {
    "aspc": {"d4rl/a-v0": [10.0, 20.0, 30.0], "d4rl/b-v0": [50.0, 60.0, 100.0]},  # IQM mean(20,30,50,60) = 40, mean 45
    "td3bc": {"d4rl/a-v0": [5.0, 15.0, 25.0], "d4rl/b-v0": [50.0, 55.0, 90.0]},  # IQM mean(15,25,50,55) = 36.25, mean 40
    "bc": {"d4rl/a-v0": [0.0, 1.0, 2.0], "d4rl/b-v0": [3.0, 4.0]},  # 5 runs: IQM cuts one at each end = 2.0, mean 2.0
}
# P(aspc > td3bc): a: 10 > 5; 20 > 5, 15; 30 > all three -> 6 of 9. b: 50 ties 50 (1/2); 60 > 50, 55;
# 100 > all three -> 5.5 of 9. Averaged over the two datasets: (6 + 5.5) / 18.
P_ASPC_TD3BC = (6 + 5.5) / 18
P_ASPC_BC = 1.0


def write_runs(root):
    for algorithm, datasets in SCORES.items():
        for dataset, scores in datasets.items():
            for seed, score in enumerate(scores):
                folder = root / algorithm / dataset.replace("/", "__") / f"seed{seed}"
                folder.mkdir(parents=True)
                summary = {
                    "algorithm": algorithm, "dataset": dataset, "seed": seed, "final_score": score,
                    "final_score_rule": "last", "scores": [{"step": 100, "score": score}], "steps": 100,
                }
                (folder / "summary.json").write_text(json.dumps(summary))
                (folder / "metrics.jsonl").write_text(json.dumps({"step": 100, "score": score}) + "\n")


def row(markdown, algorithm):
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {algorithm} |") and "[" in line)
    return [cell.strip() for cell in line.strip("|").split("|")]


def interval(cell):
    point, low, high = map(float, re.match(r"([-\d.]+) \[([-\d.]+), ([-\d.]+)\]", cell).groups())
    assert low <= point <= high
    return point, low, high


def test_report_writes_aggregate_table_and_plots_from_run_folders(tmp_path):
    write_runs(tmp_path / "runs")
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", str(tmp_path / "runs"), "--out", str(out), "--bootstrap-samples", "300"])
    assert result.exit_code == 0, result.output
    markdown = (out / "results.md").read_text()
    assert "## Aggregates across datasets x seeds" in markdown
    assert "aspc 6, bc 5, td3bc 6, over 2 dataset(s)" in markdown and "from 300 stratified bootstrap samples" in markdown

    aspc, td3bc, bc = row(markdown, "aspc"), row(markdown, "td3bc"), row(markdown, "bc")
    assert aspc[1] == "6" and td3bc[1] == "6" and bc[1] == "5"  # runs pooled
    assert interval(aspc[2])[0] == pytest.approx(40.0) and interval(aspc[3])[0] == pytest.approx(45.0)
    assert interval(td3bc[2])[0] == pytest.approx(36.25, abs=0.051) and interval(td3bc[3])[0] == pytest.approx(40.0)
    assert interval(bc[2])[0] == pytest.approx(2.0) and interval(bc[3])[0] == pytest.approx(2.0)
    # the stratified bootstrap keeps each dataset's runs: bc's mean can never leave [mean of minima, mean of maxima]
    _, low, high = interval(bc[3])
    assert 1.2 <= low and high <= 2.6  # (0*3 + 3*2) / 5 = 1.2 and (2*3 + 4*2) / 5 = 2.8, but 95% of 300 stay inside
    assert aspc[4] == "—"
    assert interval(td3bc[4].split(" (")[0])[0] == pytest.approx(P_ASPC_TD3BC, abs=0.005) and "(2 datasets)" in td3bc[4]
    assert interval(bc[4].split(" (")[0]) == (P_ASPC_BC, P_ASPC_BC, P_ASPC_BC)

    for name in ("aggregates.png", "performance_profiles.png", "improvement.png", "learning_curves.png"):
        assert (out / name).stat().st_size > 10_000, name
        assert f"({name})" in markdown
    for name in ("aggregates.png", "performance_profiles.png", "improvement.png"):
        note = Image.open(out / name).text["Description"]
        assert "runs: aspc 6, bc 5, td3bc 6 (2 dataset(s) x seeds)" in note and "300 stratified bootstrap samples" in note

    # the same report again: the same intervals (the bootstrap is seeded)
    again = runner.invoke(app, ["report", str(tmp_path / "runs"), "--out", str(tmp_path / "again"), "--bootstrap-samples", "300"])
    assert again.exit_code == 0
    assert row((tmp_path / "again" / "results.md").read_text(), "td3bc")[2:] == td3bc[2:]
