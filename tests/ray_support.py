"""Helpers of the Ray tests: environments, processes the tests started, sockets, summaries."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

PEN = "dapg/pen/expert-v0"
DOOR = "dapg/door/expert-v0"
TIMING = re.compile(r"seconds|per_second|time")  # keys of timings, which no rerun reproduces
DRIVER = [sys.executable, "-c", "from metaconstraint.cli import app; app()"]


def ray_environment(tmp_path: Path, marker: str, single_node: bool) -> dict[str, str]:
    """The environment of a test's Ray processes: usage stats off, token auth with a token of the
    test's own (never the user's ~/.ray/auth_token), and a marker that finds every process it started."""
    token = tmp_path / "ray_token"
    if not token.exists():
        token.write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token),
        METACONSTRAINT_OFFLINE="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        MPLBACKEND="Agg",
        METACONSTRAINT_TEST_MARKER=marker,
        PYTHONPATH=str(Path(__file__).resolve().parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    if single_node:
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    return env


def marked_pids(marker: str) -> list[int]:
    """Processes whose environment holds ``METACONSTRAINT_TEST_MARKER=marker``: the test's own."""
    needle = f"METACONSTRAINT_TEST_MARKER={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def kill_marked(marker: str, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL, every process the test started (found by its marker, never by name)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in marked_pids(marker):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while marked_pids(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not marked_pids(marker):
            return


def sockets(pids: set[int], namespace: str | None = None, listening: bool = True) -> list[tuple[str, str, int]]:
    """(local address, peer address, pid) of the TCP/UDP sockets of ``pids`` (in a network namespace)."""
    command = ["ss", "-H", "-tunp"] + (["-l"] if listening else [])
    if namespace:
        command = ["ip", "netns", "exec", namespace] + command
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    found = []
    for line in output.splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue
        owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            found.append((host_of(fields[4]), host_of(fields[5]), min(owners & pids)))
    return found


def host_of(address: str) -> str:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host.removeprefix("::ffff:")


def comparable(summary: dict) -> dict:
    """A summary without its timings: what a disturbed run must reproduce exactly."""
    return {k: v for k, v in summary.items() if not TIMING.search(k)}


def metric_records(directory: Path) -> list[dict]:
    records = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if not TIMING.search(k)} for r in records]


def summaries(out: Path) -> dict[str, dict]:
    return {str(p.parent.relative_to(out)): json.loads(p.read_text()) for p in sorted(Path(out).rglob("summary.json"))}


def wait_for(predicate, timeout: float, what: str, process: subprocess.Popen | None = None, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the driver exited ({process.returncode}) before {what}:\n{read_output(process)}")
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def read_output(process: subprocess.Popen) -> str:
    if process.stdout is None:
        return ""
    try:
        return process.stdout.read() or ""
    except ValueError:
        return ""


@pytest.fixture
def ray_env(tmp_path, monkeypatch):
    """This process as a driver of a single-node Ray cluster it starts on 127.0.0.1 (skipped without Ray)."""
    marker = uuid.uuid4().hex
    env = ray_environment(tmp_path, marker, single_node=True)
    for key in [k for k in os.environ if k.startswith("RAY_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    pytest.importorskip("ray")
    yield env
    import ray

    ray.shutdown()
    kill_marked(marker)
    assert not marked_pids(marker), "Ray processes outlived the test"
