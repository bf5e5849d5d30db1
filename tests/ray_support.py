"""Helpers of the Ray tests: environments, processes the tests started, sockets, summaries."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
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


class NetnsCluster:
    """A real two-node Ray cluster on this machine: the head node (and the driver) in one network
    namespace, the second node in another, joined by a veth pair with the test's own /30.

    Nothing runs in the machine's own namespace, so Ray's servers, which listen on every address of
    their namespace, are reachable on 127.0.0.1 and the pair's two addresses only.
    """

    def __init__(self, tmp_root: Path, marker: str, cpus_per_node: int = 1, port: int = 26379):
        suffix = f"{os.getpid() % 10000}"
        self.head_ns, self.node_ns = f"mc9h{suffix}", f"mc9n{suffix}"
        self.veth_head, self.veth_node = f"mc9a{suffix}", f"mc9b{suffix}"
        octet = os.getpid() % 250
        self.head_ip, self.node_ip = f"10.203.{octet}.1", f"10.203.{octet}.2"
        self.port, self.cpus, self.marker = port, cpus_per_node, marker
        self.address = f"{self.head_ip}:{port}"
        self.tmp = Path(tempfile.mkdtemp(prefix="mc9-", dir="/tmp"))  # Ray's socket paths must stay short
        self.env = ray_environment(tmp_root, marker, single_node=False)
        self.ray = str(Path(sys.executable).parent / "ray")

    def _ip(self, *args: str, namespace: str | None = None) -> None:
        prefix = ["ip", "netns", "exec", namespace] if namespace else []
        subprocess.run([*prefix, "ip", *args], check=True, capture_output=True)

    def start(self) -> "NetnsCluster":
        for ns in (self.head_ns, self.node_ns):
            subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
            for key in ("all", "default"):  # IPv4 only: no link-local IPv6 addresses of its own making
                subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1"],
                               check=True, capture_output=True)
            self._ip("link", "set", "lo", "up", namespace=ns)
        self._ip("link", "add", self.veth_head, "netns", self.head_ns, "type", "veth", "peer", "name", self.veth_node,
                 "netns", self.node_ns)
        for ns, dev, ip in ((self.head_ns, self.veth_head, self.head_ip), (self.node_ns, self.veth_node, self.node_ip)):
            self._ip("addr", "add", f"{ip}/30", "dev", dev, namespace=ns)
            self._ip("link", "set", dev, "up", namespace=ns)
        common = [f"--num-cpus={self.cpus}", "--disable-usage-stats"]
        self.run_in(self.head_ns, [self.ray, "start", "--head", f"--node-ip-address={self.head_ip}", f"--port={self.port}",
                                   "--include-dashboard=false", f"--temp-dir={self.tmp / 'h'}", *common])
        self.run_in(self.node_ns, [self.ray, "start", f"--address={self.address}", f"--node-ip-address={self.node_ip}",
                                   f"--temp-dir={self.tmp / 'n'}", *common])
        return self

    def run_in(self, namespace: str, command: list[str], timeout: float = 120, check: bool = True):
        done = subprocess.run(["ip", "netns", "exec", namespace, *command], env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def popen_driver(self, args: list[str]) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.head_ns, *DRIVER, *args], env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def namespace_pids(self, namespace: str) -> set[int]:
        out = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True).stdout
        return {int(p) for p in out.split()}

    def addresses(self, namespace: str) -> set[str]:
        out = subprocess.run(["ip", "-n", namespace, "-br", "addr"], capture_output=True, text=True, check=True).stdout
        return {a.split("/")[0] for line in out.splitlines() for a in line.split()[2:]}

    def kill_node(self) -> None:
        """The second node dies at once: every process of its namespace gets SIGKILL."""
        for pid in self.namespace_pids(self.node_ns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        for ns in (self.node_ns, self.head_ns):
            for pid in self.namespace_pids(ns):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        kill_marked(self.marker)
        for ns in (self.head_ns, self.node_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)  # takes the veth pair with it
        shutil.rmtree(self.tmp, ignore_errors=True)
