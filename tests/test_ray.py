"""`--backend ray` on a single-node cluster on 127.0.0.1; faults, Ctrl-C and SIGTERM on both backends.

Every Ray process a test starts carries a marker in its environment; the tests stop those processes
by pid (never by name) and check that nothing is left, and that nothing they started listens on or
talks to any address but 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid

import pytest
from typer.testing import CliRunner

from metaconstraint.cli import app
from ray_support import (
    DRIVER, PEN, command_line, comparable, kill_marked, marked_pids, metric_records, ray_environment, read_output,
    sockets, wait_for,
)

runner = CliRunner()
TINY = ["--steps", "100", "--eval-every", "50", "--eval-episodes", "1"]
# long enough to be caught mid-run: a checkpoint every 100 iterations (at every evaluation)
FAULT = ["--steps", "400", "--eval-every", "100", "--eval-episodes", "1"]
RUN = "td3bc/dapg__pen__expert-v0/seed0"


def test_backend_ray_without_ray_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    result = runner.invoke(app, ["compare", "td3bc", "--datasets", PEN, *TINY, "--backend", "ray", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "pip install 'metaconstraint[ray]'" in " ".join(result.output.split())
    assert "Traceback" not in result.output and not (tmp_path / "grid.json").exists()


def test_ray_only_options_are_refused_on_the_local_backend(tmp_path):
    result = runner.invoke(app, ["compare", "td3bc", "--datasets", PEN, *TINY, "--address", "auto", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "only with --backend ray" in result.output


# ----------------------------------------------------------------------------- faults (slow)
@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory):
    """The reference: td3bc on pen, seed 0, 400 iterations, on the local backend, never interrupted."""
    out = tmp_path_factory.mktemp("undisturbed")
    env = {**os.environ, "METACONSTRAINT_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run([*DRIVER, "compare", "td3bc", "--datasets", PEN, *FAULT, "--seeds", "1", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return out / RUN


def start_driver(args, env) -> subprocess.Popen:
    return subprocess.Popen([*DRIVER, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def assert_same_run(run_dir, reference_dir):
    assert comparable(json.loads((run_dir / "summary.json").read_text())) == comparable(
        json.loads((reference_dir / "summary.json").read_text())
    )
    assert metric_records(run_dir) == metric_records(reference_dir)


@pytest.mark.slow
def test_a_killed_ray_worker_is_retried_and_its_run_resumes_to_the_undisturbed_result(tmp_path, undisturbed):
    pytest.importorskip("ray")
    marker = uuid.uuid4().hex
    env = ray_environment(tmp_path, marker, single_node=True)
    out = tmp_path / "grid"
    driver = start_driver(["compare", "td3bc", "--datasets", PEN, *FAULT, "--seeds", "1", "--backend", "ray",
                           "--workers", "1", "--out", str(out)], env)
    try:
        wait_for(lambda: list((out / RUN / "checkpoints").glob("step*.pt")), 300, "the first checkpoint", driver)
        ours = set(marked_pids(marker))
        # nothing the test started listens or talks anywhere but on loopback
        assert {local for local, _, _ in sockets(ours)} <= {"127.0.0.1"}
        assert {peer for _, peer, _ in sockets(ours, listening=False)} <= {"127.0.0.1"}
        (task,) = [pid for pid in ours if command_line(pid).startswith("ray::_run_task")]
        os.kill(task, signal.SIGKILL)
        assert driver.wait(timeout=600) == 0, read_output(driver)
    finally:
        driver.kill()
        kill_marked(marker)
    (cell,) = json.loads((out / "grid.json").read_text())["cells"]
    assert cell["status"] == "done" and cell["resumed_from"] >= 100  # Ray retried it; it resumed
    assert_same_run(out / RUN, undisturbed)
    assert not marked_pids(marker)


@pytest.mark.slow
def test_ctrl_c_on_the_ray_driver_stops_cleanly_and_the_local_backend_resumes(tmp_path, undisturbed):
    pytest.importorskip("ray")
    marker = uuid.uuid4().hex
    env = ray_environment(tmp_path, marker, single_node=True)
    out = tmp_path / "grid"
    args = ["compare", "td3bc", "--datasets", PEN, *FAULT, "--seeds", "2", "--workers", "1", "--out", str(out)]
    driver = start_driver([*args, "--backend", "ray"], env)
    try:
        wait_for(lambda: list((out / RUN / "checkpoints").glob("step*.pt")), 300, "the first checkpoint", driver)
        driver.send_signal(signal.SIGINT)
        code = driver.wait(timeout=120)
        output = read_output(driver)
    finally:
        driver.kill()
        kill_marked(marker)
    assert code == 130, output
    assert "Rerun the same command to resume" in " ".join(output.split())
    assert not (out / RUN / "summary.json").exists() and list((out / RUN / "checkpoints").glob("step*.pt"))
    assert not (out / "td3bc/dapg__pen__expert-v0/seed1/summary.json").exists()
    statuses = {c["seed"]: c["status"] for c in json.loads((out / "grid.json").read_text())["cells"]}
    assert statuses == {0: "interrupted", 1: "interrupted"}

    done = subprocess.run([*DRIVER, *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    cells = {c["seed"]: c for c in json.loads((out / "grid.json").read_text())["cells"]}
    assert cells[0]["status"] == "done" and cells[0]["resumed_from"] >= 100
    assert_same_run(out / RUN, undisturbed)
    assert not marked_pids(marker)


@pytest.mark.slow
def test_sigterm_to_a_local_worker_stops_the_grid_instead_of_starting_the_next_run(tmp_path, undisturbed):
    marker = uuid.uuid4().hex
    env = ray_environment(tmp_path, marker, single_node=True)
    out = tmp_path / "grid"
    args = ["compare", "td3bc", "--datasets", PEN, *FAULT, "--seeds", "2", "--workers", "1", "--out", str(out)]
    driver = start_driver(args, env)
    try:
        wait_for(lambda: list((out / RUN / "checkpoints").glob("step*.pt")), 300, "the first checkpoint", driver)
        workers = [p for p in marked_pids(marker) if "multiprocessing" in command_line(p) and "resource_tracker" not in command_line(p)]
        assert len(workers) == 1, [command_line(p) for p in workers]
        os.kill(workers[0], signal.SIGTERM)
        code = driver.wait(timeout=120)
        output = read_output(driver)
    finally:
        driver.kill()
        kill_marked(marker)
    assert code == 128 + signal.SIGTERM, output
    assert "stopped td3bc" in " ".join(output.split()), output
    assert not (out / RUN / "summary.json").exists() and list((out / RUN / "checkpoints").glob("step*.pt"))
    assert not (out / "td3bc/dapg__pen__expert-v0/seed1").exists()  # the next run never started
    done = subprocess.run([*DRIVER, *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    cells = {c["seed"]: c for c in json.loads((out / "grid.json").read_text())["cells"]}
    assert cells[0]["resumed_from"] >= 100 and cells[1]["status"] == "done"
    assert_same_run(out / RUN, undisturbed)
