"""`--logger tensorboard/wandb/mlflow`: one real run logged to all three trackers, read back with
each tracker's own reader (TensorBoard's event reader, the MLflow client on the run folder's file
store, `wandb leet inspect` on the offline run), against the run's metrics.jsonl and summary.json."""

import importlib.util
import json
import math
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metaconstraint.cli import app

runner = CliRunner()
DOOR = "D4RL/door/human-v2"
TINY = ["--steps", "60", "--eval-every", "30", "--eval-episodes", "1"]
TRACKERS = ("tensorboard", "wandb", "mlflow")
# Nothing may leave the machine: W&B offline (the default) and MLflow's file store; no telemetry.
ENV = {"METACONSTRAINT_OFFLINE": "1", "WANDB_MODE": "offline", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}

missing = [name for name in TRACKERS if importlib.util.find_spec(name) is None]
needs_trackers = pytest.mark.skipif(
    bool(missing), reason=f"tracker extras not installed ({', '.join(missing)}): pip install -e '.[tensorboard,wandb,mlflow]'"
)


def by_metric(records):
    """metric name -> [(step, value)] from metrics.jsonl records."""
    series = {}
    for record in records:
        for key, value in record.items():
            if key != "step":
                series.setdefault(key, []).append((record["step"], value))
    return series


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("trackers")
    # a short name: the trackers get the resolved config of config.toml (the Minari id)
    args = ["run", "aspc", "--dataset", "door-human", *TINY, "--out", str(out)]
    args += [f"--logger={name}" for name in TRACKERS]
    result = runner.invoke(app, args, env=ENV, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run_dir = out / "aspc" / "D4RL__door__human-v2" / "seed0"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    config = tomllib.loads((run_dir / "config.toml").read_text())
    return run_dir, by_metric(records), summary, config


@needs_trackers
def test_tensorboard_event_files_hold_every_metric_at_its_steps(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, series, summary, config = logged_run
    assert {"critic_loss", "actor_loss", "scale/alpha", "score", "outer/l1"} <= set(series)
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert set(series) <= scalars
    for name, points in series.items():
        read = [(e.step, e.value) for e in events.Scalars(name)]
        assert [s for s, _ in read] == [s for s, _ in points], name
        assert [v for _, v in read] == pytest.approx([v for _, v in points], rel=1e-6), name  # float32 in the events
    assert events.Scalars("summary/final_score")[-1].value == pytest.approx(summary["final_score"], rel=1e-6)
    texts = {tag: events.Tensors(tag)[-1].tensor_proto.string_val[0].decode() for tag in events.Tags()["tensors"]}
    config_text = next(text for tag, text in texts.items() if tag.startswith("config"))
    assert tomllib.loads(config_text.strip("`\n").removeprefix("toml\n")) == config
    summary_text = next(text for tag, text in texts.items() if tag.startswith("summary"))
    assert json.loads(summary_text.strip("`\n").removeprefix("json\n")) == summary


@needs_trackers
def test_mlflow_file_store_holds_params_metrics_and_summary(logged_run, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    run_dir, series, summary, config = logged_run
    client = MlflowClient(tracking_uri=(run_dir / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("metaconstraint")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == json.loads((run_dir / "tracker-mlflow.json").read_text())["run_id"]
    assert run.info.status == "FINISHED" and run.info.run_name == f"aspc {DOOR} seed0"
    assert run.data.params["scale_lr"] == str(config["scale_lr"]) and run.data.params["steps"] == "60"
    assert json.loads(run.data.params["outer_losses"]) == config["outer_losses"]
    assert set(config) == set(run.data.params)
    logged = {m for m in run.data.metrics if not m.startswith("summary/")}
    assert logged == set(series)
    for name, points in series.items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, name))
        assert history == [(s, pytest.approx(v)) for s, v in points], name
    assert run.data.metrics["summary/final_score"] == pytest.approx(summary["final_score"])
    artifacts = Path(client.download_artifacts(run.info.run_id, "summary.json", str(run_dir.parent / "dl")))
    assert json.loads(artifacts.read_text()) == summary


@needs_trackers
def test_wandb_offline_run_holds_history_config_and_summary(logged_run):
    run_dir, series, summary, config = logged_run
    (offline,) = (run_dir / "wandb").glob("offline-run-*")  # offline: nothing was sent anywhere
    (log_file,) = offline.glob("run-*.wandb")
    assert log_file.name == f"run-{json.loads((run_dir / 'tracker-wandb.json').read_text())['run_id']}.wandb"
    inspect = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(log_file)]
    env = {**os.environ, **ENV}
    records = [json.loads(line) for line in subprocess.run(inspect, capture_output=True, text=True, env=env, check=True).stdout.splitlines()]
    history = [r["history"] for r in records if r["type"] == "history"]
    steps = [h["step"]["num"] for h in history]
    for name, points in series.items():
        read = [(h["step"]["num"], h["item"][name]) for h in history if name in h["item"]]
        assert read == [(s, pytest.approx(v)) for s, v in points], name
    assert steps == sorted({s for points in series.values() for s, _ in points})
    assert {k for h in history for k in h["item"] if not k.startswith("_")} == set(series)
    state = json.loads(subprocess.run([*inspect[:-1], "--summary", str(log_file)], capture_output=True, text=True, env=env, check=True).stdout)
    assert state["state"] == "finished" and state["project"] == "metaconstraint"
    assert {k: v for k, v in state["config"].items() if k != "_wandb"} == config
    assert state["summary"]["final_score"] == pytest.approx(summary["final_score"])
    assert state["summary"]["scores"] == summary["scores"]


def test_a_missing_tracker_says_how_to_install_it(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    result = runner.invoke(app, ["run", "aspc", "--dataset", DOOR, *TINY, "--out", str(tmp_path), "--logger", "wandb"], env=ENV)
    assert result.exit_code == 2
    assert "pip install 'metaconstraint[wandb]'" in " ".join(result.output.split())
    assert not list(tmp_path.rglob("metrics.jsonl"))  # it stopped before training
    result = runner.invoke(app, ["run", "aspc", "--dataset", DOOR, "--logger", "neptune", "--out", str(tmp_path)], env=ENV)
    assert result.exit_code == 2 and "neptune" in result.output


@needs_trackers
def test_a_failing_tracker_stops_the_run_with_its_name(tmp_path):
    args = ["run", "td3bc", "--dataset", DOOR, *TINY, "--out", str(tmp_path), "--logger", "mlflow"]
    result = runner.invoke(app, [*args, "--mlflow-tracking-uri", "nonsense-scheme://nowhere"], env=ENV)
    assert result.exit_code == 4, result.output
    text = " ".join(result.output.split())
    assert "--logger mlflow: could not start its run" in text and "nonsense-scheme" in text
    assert "Traceback" not in result.output


@needs_trackers
def test_compare_passes_loggers_to_every_cell(tmp_path):
    from metaconstraint.grid import expand_grid, run_cell

    (cell,) = expand_grid(["td3bc"], [DOOR], 1, 0, {"out": str(tmp_path), "steps": 30, "eval_every": 30, "eval_episodes": 1, "loggers": ["tensorboard"]}, {})
    assert cell["loggers"] == ["tensorboard"]
    summary = run_cell(cell)
    run_dir = tmp_path / "td3bc" / "D4RL__door__human-v2" / "seed0"
    assert summary["steps"] == 30 and list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert tomllib.loads((run_dir / "config.toml").read_text())["loggers"] == ["tensorboard"]
    help_text = runner.invoke(app, ["compare", "--help"]).output
    assert "--logger" in help_text and not math.isnan(summary["final_score"])


@needs_trackers
def test_a_resumed_run_continues_its_tracker_runs_without_duplicate_points(tmp_path, monkeypatch):
    """A run that died after logging step 60 but before checkpointing it resumes from step 30: every
    tracker keeps one run with steps 30 and 60 once each (the resumed session recomputes 31..60
    exactly, so what the trackers hold already is not sent again)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = ["run", "td3bc", "--dataset", DOOR, *TINY, "--out", str(tmp_path)] + [f"--logger={t}" for t in TRACKERS]
    assert runner.invoke(app, args, env=ENV, catch_exceptions=False).exit_code == 0
    run_dir = tmp_path / "td3bc" / "D4RL__door__human-v2" / "seed0"
    ids = {t: json.loads((run_dir / f"tracker-{t}.json").read_text())["run_id"] for t in TRACKERS}
    (run_dir / "summary.json").unlink()
    (run_dir / "checkpoints" / "step00000060.pt").unlink()
    result = runner.invoke(app, ["resume", str(run_dir)], env=ENV, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert {t: json.loads((run_dir / f"tracker-{t}.json").read_text()) for t in TRACKERS} == {
        t: {"run_id": ids[t], "step": 60} for t in TRACKERS
    }
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("critic_loss")] == [30, 60]
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(run_dir / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("metaconstraint").experiment_id])
    assert run.info.run_id == ids["mlflow"] and run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "critic_loss")) == [30, 60]
    # One folder per session, one run id. W&B names a folder by the second its session starts in and
    # adds "-1" to the second of two sessions that start within the same second (seen in CI here).
    sessions = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*"))
    assert len(sessions) == 2 and all(ids["wandb"] in name for name in sessions), sessions


@needs_trackers
def test_a_grid_cell_that_diverges_ends_its_tracker_run_as_failed(tmp_path, monkeypatch):
    """A grid worker has no CLI around the Trainer: the Trainer itself ends the tracker runs of a
    run that stops early (alpha's range [2.499, 2.501] trips at the first alpha update, iteration 20)."""
    for key, value in {**ENV, "MLFLOW_ALLOW_FILE_STORE": "true"}.items():
        monkeypatch.setenv(key, value)
    from mlflow.tracking import MlflowClient

    from metaconstraint.grid import run_cell
    from metaconstraint.monitor import TrainingDiverged

    values = {"algorithm": "aspc", "dataset": DOOR, "seed": 0, "seeds": 1, "steps": 60, "eval_every": 30,
              "eval_episodes": 1, "out": str(tmp_path), "loggers": ["mlflow"], "alpha_min": 2.499, "alpha_max": 2.501}
    with pytest.raises(TrainingDiverged):
        run_cell(values)
    run_dir = tmp_path / "aspc" / "D4RL__door__human-v2" / "seed0"
    client = MlflowClient(tracking_uri=(run_dir / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("metaconstraint").experiment_id])
    assert run.info.status == "FAILED"
