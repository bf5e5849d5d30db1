"""Faults end-to-end, through the real CLI in subprocesses on D4RL/door/human-v2.

A run killed with SIGKILL (at whatever iteration it has reached when its N-th checkpoint appears),
or stopped with Ctrl-C, and then resumed, ends bit-identical to the uninterrupted run: the same
metrics files and the same final checkpoint, tensor for tensor.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

DATASET = "D4RL/door/human-v2"
STEPS = 300
CONFIG = "checkpoint_every = 50\nlog_every = 25\neval_every = 150\neval_episodes = 2\nkeep_checkpoints = 2\n"


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "metaconstraint.cli", *args]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "METACONSTRAINT_OFFLINE": "1"}


def start_run(root: Path, algorithm: str = "aspc", *extra: str) -> subprocess.Popen:
    (root / "c.toml").write_text(CONFIG)
    return subprocess.Popen(
        command("run", algorithm, "--dataset", DATASET, "--steps", str(STEPS), "--config", str(root / "c.toml"), "--out", str(root / "out"), *extra),
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def seed_folder(root: Path, algorithm: str = "aspc", seed: int = 0) -> Path:
    return root / "out" / algorithm / DATASET.replace("/", "__") / f"seed{seed}"


def wait_for_checkpoint(folder: Path, step: int, process: subprocess.Popen, timeout: float = 120) -> None:
    target = folder / "checkpoints" / f"step{step:08d}.pt"
    deadline = time.monotonic() + timeout
    while not target.exists():
        assert process.poll() is None, f"the run ended before its step-{step} checkpoint: {process.stderr.read()}"
        assert time.monotonic() < deadline, f"no step-{step} checkpoint after {timeout} s"
        time.sleep(0.05)


def final_checkpoint(folder: Path) -> dict:
    return torch.load(folder / "checkpoints" / f"step{STEPS:08d}.pt", weights_only=True)


def assert_same_tree(left, right, path: str = "") -> None:
    if isinstance(left, dict):
        assert left.keys() == right.keys(), path
        for key in left:
            assert_same_tree(left[key], right[key], f"{path}/{key}")
    elif isinstance(left, (list, tuple)):
        assert len(left) == len(right), path
        for index, (a, b) in enumerate(zip(left, right)):
            assert_same_tree(a, b, f"{path}[{index}]")
    elif torch.is_tensor(left):
        assert torch.equal(left, right), f"{path} differs"
    else:
        assert left == right, f"{path}: {left!r} != {right!r}"


def assert_identical_runs(reference: Path, resumed: Path) -> None:
    for name in ("metrics.jsonl", "metrics.csv"):
        assert (resumed / name).read_bytes() == (reference / name).read_bytes(), f"{name} differs"
    assert_same_tree(final_checkpoint(reference)["state"], final_checkpoint(resumed)["state"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("uninterrupted")
    process = start_run(root)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    return seed_folder(root)


@pytest.mark.parametrize("kill_after_checkpoint", [50, 200])
def test_sigkill_then_resume_is_bit_identical(tmp_path, reference, kill_after_checkpoint):
    process = start_run(tmp_path)
    folder = seed_folder(tmp_path)
    wait_for_checkpoint(folder, kill_after_checkpoint, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (folder / "summary.json").exists()

    resumed = subprocess.run(command("resume", str(folder)), env=environment(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from iteration" in resumed.stderr
    assert_identical_runs(reference, folder)


def test_ctrl_c_checkpoints_says_how_to_resume_and_exits_130(tmp_path, reference):
    process = start_run(tmp_path)
    folder = seed_folder(tmp_path)
    wait_for_checkpoint(folder, 100, process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "resume" in err and "Traceback" not in err

    resumed = subprocess.run(command("run", "aspc", "--resume", str(folder)), env=environment(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert_identical_runs(reference, folder)


def test_alpha_leaving_its_range_stops_the_run_with_exit_3(tmp_path):
    """Any alpha update moves alpha by about its learning rate, so [2.499, 2.501] trips at the first one (iteration 20)."""
    (tmp_path / "guard.toml").write_text(CONFIG.replace("checkpoint_every = 50", "checkpoint_every = 10") + "alpha_min = 2.499\nalpha_max = 2.501\n")
    run = subprocess.run(
        command("run", "aspc", "--dataset", DATASET, "--steps", str(STEPS), "--config", str(tmp_path / "guard.toml"), "--out", str(tmp_path / "out")),
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 3, run.stderr
    assert "Traceback" not in run.stderr
    message = " ".join(run.stderr.split())
    found = re.search(r"the learned scale \(alpha\) left its sane range .* at iteration (\d+)", message)
    assert found, message
    diverged_at = int(found.group(1))
    assert diverged_at == 20
    folder = seed_folder(tmp_path)
    assert not (folder / "summary.json").exists()
    kept = [torch.load(path, weights_only=True)["iteration"] for path in (folder / "checkpoints").glob("step*.pt")]
    assert kept and max(kept) < diverged_at, kept
    assert f"last good checkpoint, iteration {max(kept)}" in message


def test_a_run_resumed_under_other_package_versions_says_so_and_keeps_both_records(tmp_path, monkeypatch):
    """environment.json keeps the record the run started with and gains one entry per resume; a
    resume under another MuJoCo (whose patch releases change pen trajectories) or on another CPU
    warns, a resume under the same environment does not."""
    import json

    from metaconstraint import training
    from metaconstraint.config import build_configs
    from metaconstraint.runs import checkpoint_paths, environment_record

    values = {"algorithm": "bc", "dataset": DATASET, "steps": 20, "eval_every": 20, "eval_episodes": 1,
              "log_every": 10, "checkpoint_every": 10, "out": tmp_path}
    first = training.Trainer(*build_configs(values))
    first.fit()
    folder = first.directories[0]
    started = json.loads((folder / "environment.json").read_text())

    def interrupt() -> None:  # as a kill after the iteration-10 checkpoint leaves the folder
        checkpoint_paths(folder)[-1].unlink()
        (folder / "summary.json").unlink()

    def resume() -> list[str]:
        messages: list[str] = []
        training.Trainer(*build_configs(values), notify=messages.append).fit(resume=True)
        return [m for m in messages if m.startswith("warning")]

    interrupt()
    other = environment_record()
    other["packages"]["mujoco"] = "9.9.9"
    other["machine"]["cpu"] = "Another CPU"  # same code and seed, other BLAS kernels: other numbers
    monkeypatch.setattr(training, "environment_record", lambda: other)
    warnings = resume()
    assert len(warnings) == 1 and f"mujoco {started['packages']['mujoco']} -> 9.9.9" in warnings[0]
    assert f"cpu {started['machine']['cpu']} -> Another CPU" in warnings[0] and "iteration 10" in warnings[0]

    interrupt()
    monkeypatch.setattr(training, "environment_record", environment_record)
    assert resume() == []

    record = json.loads((folder / "environment.json").read_text())
    assert record["packages"] == started["packages"]  # the run's own start, not the latest process
    assert [(r["iteration"], r["packages"]["mujoco"]) for r in record["resumes"]] == [
        (10, "9.9.9"), (10, started["packages"]["mujoco"])
    ]
