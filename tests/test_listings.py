"""Output people can copy: every listing has --json, and no identifier is cut in 80 columns or a pipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from typer.testing import CliRunner

from metaconstraint.cli import app

runner = CliRunner()
PEN = "dapg/pen/expert-v0"
DATASETS = ["D4RL/antmaze/umaze-diverse-v1", "builtin/pointmaze/medium-dense-v0"]
ALGORITHMS = ["aspc", "td3bc", "iql", "rebrac", "a2pr"]


def invoke(args):
    return runner.invoke(app, args, catch_exceptions=False)


def piped(args):
    """The command's output through a pipe, as `metaconstraint ... | cat` sees it, with COLUMNS=80."""
    done = subprocess.run([sys.executable, "-m", "metaconstraint.cli", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "COLUMNS": "80", "MPLBACKEND": "Agg"})
    assert done.returncode == 0, done.stderr
    return done.stdout


def saved_runs(root):
    """Finished runs of five algorithms on two datasets with long ids: a table that 80 columns cannot hold."""
    for k, algorithm in enumerate(ALGORITHMS):
        for dataset in DATASETS:
            for seed in range(2):
                folder = root / algorithm / dataset.replace("/", "__") / f"seed{seed}"
                folder.mkdir(parents=True)
                summary = {"algorithm": algorithm, "dataset": dataset, "seed": seed, "final_score": 10.0 + k + seed,
                           "final_score_rule": "last", "scores": [{"step": 10, "score": 10.0 + k + seed}], "steps": 10}
                (folder / "summary.json").write_text(json.dumps(summary))
    return root


def test_report_prints_every_dataset_and_comparison_whole_in_80_columns_and_a_pipe(tmp_path):
    root = saved_runs(tmp_path / "grid")
    args = ["report", str(root), "--bootstrap-samples", "20", "--reference", "aspc"]
    in_runner = invoke(args)  # not a terminal: rich's 80 columns
    assert in_runner.exit_code == 0, in_runner.output
    for output in (in_runner.output, piped(args)):
        lines = output.splitlines()
        for dataset in DATASETS:
            assert any(dataset in line for line in lines), dataset
        for other in ALGORITHMS[1:]:
            assert any(f"aspc − {other}" in line for line in lines), other
        assert any(line.startswith("wrote ") and str(root / "results.md") in line for line in lines)


def test_report_json_is_the_table_and_the_comparisons(tmp_path):
    root = saved_runs(tmp_path / "grid")
    result = invoke(["report", str(root), "--bootstrap-samples", "20", "--reference", "aspc", "--json"])
    assert result.exit_code == 0, result.output
    listing = json.loads(result.output)
    assert listing["algorithms"][0] == "aspc" and sorted(listing["datasets"]) == sorted(DATASETS)
    cell = next(c for c in listing["cells"] if c["dataset"] == DATASETS[0] and c["algorithm"] == "td3bc")
    assert (cell["mean"], cell["runs"], cell["failed"]) == (11.5, 2, 0)
    assert {c["other"] for c in listing["paired"]} == set(ALGORITHMS[1:])
    assert listing["files"]["markdown"] == str(root / "results.md")


def test_datasets_download_json_lists_each_part(tmp_path):
    result = invoke(["datasets", "download", PEN, "--json"])
    assert result.exit_code == 0, result.output
    (part,) = json.loads(result.output)
    assert part["dataset_id"] == PEN and part["how"] == "local" and part["folder"].endswith("pen/expert-v0")


def test_run_dry_run_json_lists_the_run_folders_and_the_config(tmp_path):
    result = invoke(["run", "td3bc", "--dataset", PEN, "--seeds", "2", "--dry-run", "--json", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    listing = json.loads(result.output)
    assert listing["run_folders"] == [str(tmp_path / "td3bc" / "dapg__pen__expert-v0" / f"seed{k}") for k in (0, 1)]
    assert listing["config"]["algorithm"] == "td3bc" and listing["dataset_id"] == PEN
    alone = runner.invoke(app, ["run", "td3bc", "--dataset", PEN, "--json", "--out", str(tmp_path)])
    assert alone.exit_code == 2 and "--dry-run" in alone.output


def test_sweep_dry_run_prints_long_setting_labels_whole(tmp_path):
    spec = tmp_path / "sweep.toml"
    spec.write_text(f'datasets = ["{PEN}"]\n[algorithms.td3bc.sweep]\nalpha = [0.25, 2.5]\n'
                    "critic_lr = [0.000123456789]\nactor_lr = [0.000987654321]\nbatch_size = [256]\n")
    args = ["sweep", str(spec), "--out", str(tmp_path / "out"), "--dry-run"]
    labels = [s["label"] for s in json.loads(invoke([*args, "--json"]).output)["settings"]]
    assert max(map(len, labels)) > 80  # rich would wrap them
    for output in (invoke(args).output, piped(args)):
        lines = output.splitlines()
        for label in labels:
            assert any(label in line for line in lines), label
