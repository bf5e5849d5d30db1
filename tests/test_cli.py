"""The command line, end to end: run folders, the offline message, pen-human from a local root."""

import json
import os
import subprocess
import sys
import time
import tomllib

import pytest
from typer.testing import CliRunner

from metaconstraint.cli import app
from metaconstraint.rl.data import dataset_roots, known_datasets

runner = CliRunner()
TINY = ["--steps", "60", "--eval-every", "30", "--eval-episodes", "1"]


def invoke(args, env=None):
    return runner.invoke(app, args, env=env, catch_exceptions=False)


@pytest.mark.parametrize("algorithm", ["aspc", "td3bc"])
def test_run_on_door_human_writes_scores(tmp_path, algorithm):
    result = invoke(["run", algorithm, "--dataset", "D4RL/door/human-v2", *TINY, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    folder = tmp_path / algorithm / "D4RL__door__human-v2" / "seed0"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["steps"] == 60 and [s["step"] for s in summary["scores"]] == [30, 60]
    assert f"seed 0: {folder}" in result.output.splitlines()  # the run folder whole (longer than 80 columns here)
    assert summary["dataset"] == "D4RL/door/human-v2"
    assert (summary.get("scale_name"), "final_scale" in summary) == (("alpha", True) if algorithm == "aspc" else (None, False))
    config = tomllib.loads((folder / "config.toml").read_text())
    assert config["dataset"] == "D4RL/door/human-v2" and config["algorithm"] == algorithm
    assert config.get("outer_losses") == (["l1", "l2", "l3"] if algorithm == "aspc" else None)  # ASPC's default, resolved
    assert "out" not in config  # the folder is where it is: no machine's absolute path in the run folder
    for name in ("config.toml", "summary.json", "environment.json", "metrics.jsonl"):
        assert str(tmp_path) not in (folder / name).read_text(), name


def test_a_run_folder_whose_config_records_an_out_still_loads(tmp_path):
    """config.toml files written before 'out' was left out hold an absolute path (another machine's)."""
    result = invoke(["run", "bc", "--dataset", "D4RL/door/human-v2", "--steps", "20", "--eval-every", "20",
                     "--eval-episodes", "1", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "runs" / "bc" / "D4RL__door__human-v2" / "seed0"
    config = folder / "config.toml"
    config.write_text('out = "/elsewhere/on/another/machine"\n' + config.read_text())
    again = invoke(["evaluate", str(folder), "--json"])
    assert again.exit_code == 0, again.output
    summary = json.loads((folder / "summary.json").read_text())
    assert json.loads(again.output)["mean"] == pytest.approx(summary["final_score"], rel=1e-9, abs=1e-9)
    resumed = runner.invoke(app, ["resume", str(folder)])
    assert resumed.exit_code == 0 and "has finished" in resumed.output, resumed.output


def test_pen_human_offline_gives_a_clear_message_and_fails(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {"MINARI_DATASETS_PATH": str(empty), "METACONSTRAINT_HOME": str(tmp_path / "home"), "METACONSTRAINT_OFFLINE": "1"}
    start = time.perf_counter()
    result = runner.invoke(app, ["run", "aspc", "--dataset", "pen-human", "--out", str(tmp_path / "runs")], env=env)
    assert time.perf_counter() - start < 10
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    message = " ".join(result.output.split())
    assert "D4RL/pen/human-v2" in message and "MINARI_DATASETS_PATH" in message
    assert f"MINARI_DATASETS_PATH={empty};" in result.output  # the message's paths whole, not wrapped at 80 columns
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_pen_human_trains_from_a_local_root(tmp_path, pen_human_root):
    env = {"MINARI_DATASETS_PATH": str(pen_human_root), "METACONSTRAINT_OFFLINE": "1"}
    result = runner.invoke(app, ["run", "aspc", "--dataset", "pen-human", *TINY, "--out", str(tmp_path)], env=env)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "aspc" / "D4RL__pen__human-v2" / "seed0" / "summary.json").read_text())
    assert summary["dataset"] == "D4RL/pen/human-v2" and len(summary["scores"]) == 2


def test_flags_override_the_config_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("dataset: dapg/pen/expert-v0\nsteps: 40\neval_every: 40\neval_episodes: 1\nalpha_lr: 0.01\n")
    result = invoke(["run", "aspc", "--config", str(config), "--steps", "20", "--eval-every", "20", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "aspc" / "dapg__pen__expert-v0" / "seed0"
    assert json.loads((folder / "summary.json").read_text())["steps"] == 20
    assert "scale_lr = 0.01" in (folder / "config.toml").read_text()  # the old name read, the new one written


@pytest.mark.parametrize(
    "args, expected",
    [
        (["run", "aspz", "--dataset", "pen-human"], "did you mean aspc"),
        (["run", "aspc", "--dataset", "pen-humen"], "pen-human"),
        (["run", "aspc", "--dataset", "dapg/pen/expert-v0", "--steps", "0"], "steps"),
        (["run", "aspc", "--dataset", "dapg/pen/expert-v0", "--outer-loss", "l9"], "unknown outer loss"),
        (["run", "aspc", "--dataset", "dapg/pen/expert-v0", "--device", "cuda:7"], "cuda"),
    ],
)
def test_bad_input_gets_a_clear_message(tmp_path, args, expected):
    result = runner.invoke(app, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert expected.lower() in " ".join(result.output.split()).lower()
    assert "Traceback" not in result.output


def test_datasets_list_prints_every_name_and_id_whole_in_80_columns_and_through_a_pipe():
    """rich's tables fit 80 columns by cutting cells (``D4RL/antmaze/umaze-div…``); the listing must not."""
    rows = known_datasets()
    assert max(len(short) + len(dataset_id) for short, dataset_id, _ in rows) > 70  # a table would have to cut
    in_runner = invoke(["datasets", "list"])  # not a terminal: rich's 80 columns
    piped = subprocess.run([sys.executable, "-m", "metaconstraint.cli", "datasets", "list"], capture_output=True,
                           text=True, timeout=300, env={**os.environ, "COLUMNS": "80"})
    assert in_runner.exit_code == 0 and piped.returncode == 0, piped.stderr
    for output in (in_runner.output, piped.stdout):
        listed = {(words[0], words[-1]): words[1] == "yes" for words in map(str.split, output.splitlines()) if words}
        for short, dataset_id, local in rows:  # each id whole, on the line of its short name
            assert listed.get((short or "-", dataset_id)) == local, (short, dataset_id)
        assert "…" not in output


def test_datasets_list_json_is_the_list():
    result = invoke(["datasets", "list", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert [(d["short_name"] or "", d["dataset_id"], d["local"]) for d in listed["datasets"]] == known_datasets()
    assert [d["dataset_id"] for d in listed["datasets"] if d["builtin"]] == [i for _, i, _ in known_datasets() if i.startswith("builtin/")]
    assert listed["searched"] == [str(p) for p in dataset_roots()]
