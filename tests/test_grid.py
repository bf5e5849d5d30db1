"""`metaconstraint compare` and `report`: a tiny real grid end to end, skipping, failures, the table.

The grid tests share one grid folder and run in file order: the last one adds cells to it.
"""

import csv
import json
import os

import shutil

import numpy as np
import pytest
from typer.testing import CliRunner
from ray_support import comparable, marked_pids, metric_records, ray_env  # noqa: F401  (ray_env: a fixture)

from metaconstraint.cli import app
from metaconstraint.grid import available_cores, expand_grid, run_grid
from metaconstraint.report import RunResult, load_run, markdown_table, score_table

runner = CliRunner()
ENV = {"METACONSTRAINT_OFFLINE": "1"}
PEN = "dapg/pen/expert-v0"
TINY = ["--steps", "100", "--eval-every", "50", "--eval-episodes", "1", "--workers", "2"]
PLOTS = ["learning_curves.png", "learned_scale.png", "aggregates.png", "performance_profiles.png", "improvement.png"]


def compare(out, *args):
    return runner.invoke(app, ["compare", *args, *TINY, "--out", str(out)], env=ENV, catch_exceptions=False)


def summaries(out):
    return {path: json.loads(path.read_text()) for path in sorted(out.rglob("summary.json"))}


def read_csv(path):
    with open(path, newline="") as handle:
        return {row["dataset"]: row for row in csv.DictReader(handle)}


def stamps(out):
    return {p: p.stat().st_mtime_ns for pattern in ("summary.json", "metrics.jsonl") for p in out.rglob(pattern)}


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("grid")
    result = compare(out, "aspc", "td3bc", "--datasets", PEN, "--seeds", "2")
    return out, result


def test_compare_trains_the_grid_and_writes_table_csv_markdown_and_plots(grid):
    out, result = grid
    assert result.exit_code == 0, result.output
    found = summaries(out)
    assert sorted((s["algorithm"], s["dataset"], s["seed"]) for s in found.values()) == [
        ("aspc", PEN, 0), ("aspc", PEN, 1), ("td3bc", PEN, 0), ("td3bc", PEN, 1)
    ]
    for path, summary in found.items():
        assert path.parent == out / summary["algorithm"] / "dapg__pen__expert-v0" / f"seed{summary['seed']}"
        assert summary["steps"] == 100 and [s["step"] for s in summary["scores"]] == [50, 100]
        # each worker ran with cores // workers torch threads
        environment = json.loads((path.parent / "environment.json").read_text())
        assert environment["torch_threads"] == max(1, available_cores() // 2)

    rows = read_csv(out / "results.csv")
    assert set(rows) == {PEN, "average"}
    for algorithm in ("aspc", "td3bc"):
        finals = [s["final_score"] for s in found.values() if s["algorithm"] == algorithm]
        assert float(rows[PEN][f"{algorithm} mean"]) == pytest.approx(np.mean(finals), abs=1e-4)
        assert float(rows[PEN][f"{algorithm} std"]) == pytest.approx(np.std(finals, ddof=1), abs=1e-4)
        assert rows[PEN][f"{algorithm} runs"] == "2" and rows[PEN][f"{algorithm} failed"] == "0"
        assert float(rows["average"][f"{algorithm} mean"]) == pytest.approx(np.mean(finals), abs=1e-4)
    assert rows[PEN]["final_score_rule"] == "last"

    markdown = (out / "results.md").read_text()
    assert "| dataset | aspc | td3bc |" in markdown and f"| {PEN} |" in markdown
    assert "Final score rule: `last`" in markdown and "--steps 100" in markdown
    assert "Runs pooled per algorithm: aspc 2, td3bc 2, over 1 dataset(s)" in markdown
    assert "2000 stratified bootstrap samples" in markdown and "P(aspc > algorithm)" in markdown
    for name in PLOTS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"]({name})" in markdown
    assert "final D4RL-normalised score" in result.output and "IQM" in result.output
    cells = json.loads((out / "grid.json").read_text())["cells"]
    assert len(cells) == 4 and {c["status"] for c in cells} == {"done"}


def test_a_rerun_skips_every_finished_run(grid):
    out, _ = grid
    before = stamps(out)
    csv_before = (out / "results.csv").read_text()
    result = compare(out, "aspc", "td3bc", "--datasets", PEN, "--seeds", "2")
    assert result.exit_code == 0, result.output
    assert "skipping 4 finished run(s)" in result.output and "running" not in result.output
    assert stamps(out) == before  # nothing was retrained or rewritten
    assert (out / "results.csv").read_text() == csv_before
    assert {c["status"] for c in json.loads((out / "grid.json").read_text())["cells"]} == {"skipped"}


def test_report_rebuilds_the_same_table(grid, tmp_path):
    out, _ = grid
    result = runner.invoke(app, ["report", str(out), "--out", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "results.csv").read_text() == (out / "results.csv").read_text()
    table = lambda text: [line for line in text.splitlines() if line.startswith("|")]  # noqa: E731
    assert table((tmp_path / "results.md").read_text()) == table((out / "results.md").read_text())
    for name in PLOTS:
        assert (tmp_path / name).exists()
    # one run folder is a report of its own
    single = out / "aspc" / "dapg__pen__expert-v0" / "seed1"
    result = runner.invoke(app, ["report", str(single), "--out", str(tmp_path / "one")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    final = json.loads((single / "summary.json").read_text())["final_score"]
    assert read_csv(tmp_path / "one" / "results.csv")[PEN]["aspc runs"] == "1"
    assert float(read_csv(tmp_path / "one" / "results.csv")[PEN]["aspc mean"]) == pytest.approx(final, abs=1e-4)

    # another final-score rule, recomputed from each summary's saved scores and recorded
    result = runner.invoke(
        app, ["report", str(out), "--out", str(tmp_path / "k2"), "--final-score-rule", "mean_last_k", "--final-score-k", "2"]
    )
    assert result.exit_code == 0, result.output
    rows = read_csv(tmp_path / "k2" / "results.csv")
    finals = [np.mean([s["score"] for s in v["scores"][-2:]]) for v in summaries(out).values() if v["algorithm"] == "aspc"]
    assert float(rows[PEN]["aspc mean"]) == pytest.approx(np.mean(finals), abs=1e-4)
    assert rows[PEN]["final_score_rule"] == "mean_last_k (k=2)"
    assert "`mean_last_k (k=2)`" in (tmp_path / "k2" / "results.md").read_text()


def test_a_failing_cell_is_reported_and_the_others_still_run(grid):
    out, _ = grid
    before = stamps(out)
    # the missing dataset's cells come first; td3bc's third seed on pen trains beside them
    result = compare(out, "td3bc", "--datasets", f"nope/missing-v0,{PEN}", "--seeds", "3")
    assert result.exit_code == 1, result.output
    output = " ".join(result.output.split())
    assert "failed td3bc nope/missing-v0 seed0" in output and "3 of 6 run(s) failed" in output
    assert "skipping 2 finished run(s)" in output
    new = out / "td3bc" / "dapg__pen__expert-v0" / "seed2" / "summary.json"
    assert json.loads(new.read_text())["steps"] == 100
    assert all(stamps(out)[path] == stamp for path, stamp in before.items())
    rows = read_csv(out / "results.csv")
    assert rows["nope/missing-v0"]["td3bc runs"] == "0" and rows["nope/missing-v0"]["td3bc failed"] == "3"
    assert rows[PEN]["td3bc runs"] == "3"
    markdown = (out / "results.md").read_text()
    assert "| nope/missing-v0 | failed |" in markdown and "td3bc nope/missing-v0 seeds 0, 1, 2:" in markdown
    cells = {(c["algorithm"], c["dataset"], c["seed"]): c for c in json.loads((out / "grid.json").read_text())["cells"]}
    assert cells[("td3bc", "nope/missing-v0", 1)]["status"] == "failed"
    assert "nope/missing-v0" in cells[("td3bc", "nope/missing-v0", 1)]["error"]
    assert cells[("td3bc", PEN, 2)]["status"] == "done"
    assert cells[("aspc", PEN, 0)]["status"] == "skipped"  # earlier grids' cells are kept in the record
    # report finds the failures again from grid.json
    result = runner.invoke(app, ["report", str(out)], catch_exceptions=False)
    assert "td3bc nope/missing-v0 seeds 0, 1, 2" in " ".join(result.output.split())


def test_the_ray_backend_finishes_a_local_grid_with_the_same_results(grid, tmp_path, ray_env):
    out, _ = grid
    mixed = tmp_path / "mixed"
    for seed in (0, 1):  # two runs the local backend finished
        shutil.copytree(out / "td3bc" / "dapg__pen__expert-v0" / f"seed{seed}", mixed / "td3bc" / "dapg__pen__expert-v0" / f"seed{seed}")
    result = runner.invoke(
        app, ["compare", "td3bc", "--datasets", f"{PEN},nope/missing-v0", *TINY[:-2], "--seeds", "3", "--backend", "ray",
              "--workers", "1", "--out", str(mixed)], catch_exceptions=False,
    )
    assert result.exit_code == 1, result.output  # the missing dataset's runs failed; the grid went on
    output = " ".join(result.output.split())
    assert "skipping 2 finished run(s)" in output and "as Ray tasks on a new single-node cluster on 127.0.0.1" in output
    assert "failed td3bc nope/missing-v0 seed0" in output and "3 of 6 run(s) failed" in output
    cells = {(c["dataset"], c["seed"]): c for c in json.loads((mixed / "grid.json").read_text())["cells"]}
    assert cells[(PEN, 2)]["status"] == "done" and cells[(PEN, 2)]["node"] == "127.0.0.1"
    assert [cells[(PEN, s)]["status"] for s in (0, 1)] == ["skipped", "skipped"]
    assert cells[("nope/missing-v0", 1)]["status"] == "failed" and "nope/missing-v0" in cells[("nope/missing-v0", 1)]["error"]
    # seed 2 trained on Ray equals seed 2 trained by the local backend (the failing-cell grid above)
    ray_run, local_run = (root / "td3bc" / "dapg__pen__expert-v0" / "seed2" for root in (mixed, out))
    assert comparable(json.loads((ray_run / "summary.json").read_text())) == comparable(
        json.loads((local_run / "summary.json").read_text())
    )
    assert metric_records(ray_run) == metric_records(local_run)
    rows = read_csv(mixed / "results.csv")
    assert rows[PEN]["td3bc runs"] == "3" and rows["nope/missing-v0"]["td3bc failed"] == "3"
    assert "--backend ray" in (mixed / "results.md").read_text()
    assert marked_pids(ray_env["METACONSTRAINT_TEST_MARKER"]) == []  # the cluster it started is gone


# ----------------------------------------------------------------------------- without training
def test_expand_grid_gives_one_cell_per_algorithm_dataset_and_seed():
    cells = expand_grid(["aspc", "td3bc"], ["a-v0", "b-v0"], 3, seed=5, run_options={"steps": 10},
                        algorithm_options={"outer_losses": ["l1"]})
    assert len(cells) == 12
    assert sorted({c["seed"] for c in cells}) == [5, 6, 7] and {c["seeds"] for c in cells} == {1}
    assert all(c["steps"] == 10 for c in cells)
    assert all(("outer_losses" in c) == (c["algorithm"] == "aspc") for c in cells)
    from metaconstraint.config import ConfigError

    with pytest.raises(ConfigError, match="outer_losses"):
        expand_grid(["td3bc"], ["a-v0"], 1, algorithm_options={"outer_losses": ["l1"]})


def test_a_finished_run_is_skipped_without_workers_and_a_budget_change_is_noted(tmp_path):
    cells = expand_grid(["td3bc"], [PEN], 1, run_options={"steps": 100, "out": str(tmp_path)})
    folder = tmp_path / "td3bc" / "dapg__pen__expert-v0" / "seed0"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"algorithm": "td3bc", "dataset": PEN, "seed": 0, "steps": 50}))
    (outcome,) = run_grid(cells, workers=1)
    assert outcome.status == "skipped" and outcome.directory == folder
    assert "50 iterations" in outcome.note and "asks for 100" in outcome.note


def run(algorithm, dataset, seed, score=None):
    status = "failed" if score is None else "done"
    return RunResult(algorithm, dataset, seed, status, final_score=score, rule="last", error="boom" if score is None else None)


def test_score_table_rows_average_and_best():
    runs = [
        run("td3bc", "a", 0, 15.0), run("td3bc", "a", 1, 15.0),
        run("aspc", "a", 0, 10.0), run("aspc", "a", 1, 20.0),
        run("aspc", "b", 0, 30.0), run("aspc", "b", 1, 50.0),
        run("td3bc", "b", 0), run("td3bc", "b", 1),
    ]
    table = score_table(runs)
    assert table.algorithms == ["aspc", "td3bc"] and table.datasets == ["a", "b"]
    assert table.row_value("a", "aspc") == pytest.approx((15.0, np.std([10, 20], ddof=1)))
    assert table.best("a") == {"aspc", "td3bc"}  # a tie highlights both
    assert table.best("b") == {"aspc"}
    # td3bc has no run on b: the average covers a only, for every algorithm
    assert table.averaged == ["a"] and table.average_label == "average (1 of 2 datasets)"
    assert table.average["aspc"][0] == pytest.approx(15.0)
    markdown = markdown_table(table)
    assert "| b | **40.0 ± 14.1** | failed (2 failed) |" not in markdown
    assert "| b | **40.0 ± 14.1** | failed |" in markdown
    # complete: the average is the mean of dataset means, its spread the std of per-seed averages
    table = score_table(runs[2:6])  # aspc alone: both datasets complete
    assert table.average["aspc"] == pytest.approx((27.5, np.std([20.0, 35.0], ddof=1), 2))


def test_load_run_recomputes_the_final_score_when_asked(tmp_path):
    folder = tmp_path / "aspc" / "x" / "seed3-decay1m"
    folder.mkdir(parents=True)
    scores = [{"step": 10 * i, "score": float(s)} for i, s in enumerate([1, 2, 4, 8], start=1)]
    summary = {"algorithm": "aspc", "dataset": "x", "seed": 3, "final_score": 8.0, "final_score_rule": "last",
               "scores": scores, "steps": 40, "final_alpha": 0.5}
    (folder / "summary.json").write_text(json.dumps(summary))
    kept = load_run(folder)
    assert (kept.final_score, kept.rule, kept.algorithm) == (8.0, "last", "aspc (decay1m)")
    recomputed = load_run(folder, "mean_last_k", 3)
    assert recomputed.final_score == pytest.approx((2 + 4 + 8) / 3) and recomputed.rule == "mean_last_k (k=3)"
    assert os.path.basename(recomputed.directory) == "seed3-decay1m"


def test_run_files_a_remote_worker_sends_back_complete_the_drivers_folder(tmp_path):
    """A worker that shares no filesystem with the driver: its run's files arrive with the result."""
    from metaconstraint.grid import JobFinished, JobStarted, run_grid
    from metaconstraint.signals import StopRequest

    cells = expand_grid(["td3bc"], [PEN], 1, run_options={"steps": 100, "out": str(tmp_path)})
    summary = {"algorithm": "td3bc", "dataset": PEN, "seed": 0, "steps": 100, "final_score": 12.5,
               "final_score_rule": "last", "scores": [{"step": 100, "score": 12.5}]}
    files = {"summary.json": json.dumps(summary).encode(), "metrics.jsonl": b'{"step": 100, "score": 12.5}\n',
             "config.toml": b'algorithm = "td3bc"\n'}

    class RemoteBackend:  # what the Ray backend yields for a run trained on another machine
        def plan(self, jobs):
            return f"running {jobs} run(s) elsewhere"

        def execute(self, jobs, stop: StopRequest):
            for index, _ in jobs:
                yield JobStarted(index, "10.0.0.9")
                yield JobFinished(index, {"status": "done", "summary": summary, "files": files, "seconds": 1.0})

    (outcome,) = run_grid(cells, backend=RemoteBackend())
    folder = tmp_path / "td3bc" / "dapg__pen__expert-v0" / "seed0"
    assert outcome.status == "done" and outcome.node == "10.0.0.9" and outcome.directory == folder
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files
    assert load_run(folder).final_score == 12.5
    (again,) = run_grid(cells, backend=RemoteBackend())  # the delivered summary marks it finished
    assert again.status == "skipped"


def test_grid_record_keeps_run_folders_relative_and_reads_old_absolute_ones(tmp_path):
    from metaconstraint.grid import CellOutcome, write_grid_record
    from metaconstraint.grid_record import read_cells
    from metaconstraint.report import collect_runs

    out = tmp_path / "grid"
    (values,) = expand_grid(["td3bc"], [PEN], 1, run_options={"out": str(out)})
    folder = out / "td3bc" / "dapg__pen__expert-v0" / "seed0"
    write_grid_record(out, [CellOutcome(values, "failed", folder, error="boom")], {"algorithms": ["td3bc"]})
    (recorded,) = json.loads((out / "grid.json").read_text())["cells"]
    assert recorded["run_dir"] == "td3bc/dapg__pen__expert-v0/seed0"  # no machine's path in the record
    moved = tmp_path / "moved"
    (out).rename(moved)  # the folder moves, the record still points into it
    assert read_cells(moved / "grid.json")[0]["run_dir"] == moved / "td3bc" / "dapg__pen__expert-v0" / "seed0"
    (failed,) = collect_runs(moved)
    assert failed.status == "failed" and failed.directory == moved / "td3bc" / "dapg__pen__expert-v0" / "seed0"
    old = {**recorded, "run_dir": str(folder)}  # written before: an absolute path, read as it is
    (moved / "grid.json").write_text(json.dumps({"cells": [old]}))
    assert read_cells(moved / "grid.json")[0]["run_dir"] == folder


def test_both_backends_offer_the_backend_protocol():
    import inspect

    from metaconstraint.grid import Backend, LocalBackend
    from metaconstraint.ray_backend import RayBackend

    assert isinstance(LocalBackend(1), Backend)
    for backend in (LocalBackend, RayBackend):  # RayBackend's constructor needs Ray: compare the class
        assert isinstance(backend.name, str)
        for method in ("plan", "execute"):
            assert list(inspect.signature(getattr(backend, method)).parameters)[1:] == list(
                inspect.signature(getattr(Backend, method)).parameters
            )[1:], (backend, method)
