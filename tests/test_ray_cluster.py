"""A real two-node Ray cluster (two network namespaces the test creates, a veth pair between them).

The grid's tasks run on both nodes and its table equals the local backend's; a node killed mid-run
loses its task, Ray retries it on the other node, the run resumes from its checkpoint on the shared
filesystem and ends as an undisturbed run. Nothing the test starts listens or sends anywhere but on
127.0.0.1 and the pair's two addresses. Needs root and iproute2.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid

import pytest

from ray_support import (
    DOOR, DRIVER, PEN, NetnsCluster, comparable, marked_pids, metric_records, read_output, sockets, summaries, wait_for,
)

pytestmark = pytest.mark.slow
GRID = ["td3bc", "bc", "--datasets", f"{PEN},{DOOR}", "--seeds", "2", "--steps", "300", "--eval-every", "100",
        "--eval-episodes", "1"]
FAULT = ["td3bc", "--datasets", PEN, "--seeds", "2", "--steps", "400", "--eval-every", "100", "--eval-episodes", "1"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("ss") is None:
        pytest.skip("needs root, ip and ss to build network namespaces")
    pytest.importorskip("ray")
    cluster = NetnsCluster(tmp_path_factory.mktemp("cluster"), uuid.uuid4().hex)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
        assert not marked_pids(cluster.marker), "Ray processes outlived the cluster"


def check_bindings(cluster: NetnsCluster) -> None:
    """Every socket of the cluster's processes is on loopback or the pair's addresses."""
    allowed = {"127.0.0.1", "::1", cluster.head_ip, cluster.node_ip}
    wildcard = {"*", "0.0.0.0", "::"}
    ours = set(marked_pids(cluster.marker))
    assert sockets(ours) == [] and sockets(ours, listening=False) == []  # none in the machine's own namespace
    for namespace, own_ip in ((cluster.head_ns, cluster.head_ip), (cluster.node_ns, cluster.node_ip)):
        # a wildcard listener in a namespace reaches only the namespace's own addresses
        assert cluster.addresses(namespace) <= {"127.0.0.1", "::1", own_ip}
        listening = sockets(ours, namespace)
        assert listening and {local for local, _, _ in listening} <= allowed | wildcard
        assert {peer for _, peer, _ in sockets(ours, namespace, listening=False)} <= allowed


def run_local(args, out, env):
    done = subprocess.run([*DRIVER, "compare", *args, "--workers", "2", "--out", str(out)], env=env, capture_output=True,
                          text=True, timeout=1200)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_a_grid_on_two_nodes_uses_both_and_its_table_equals_the_local_backends(cluster, tmp_path):
    out, local = tmp_path / "ray", tmp_path / "local"
    start = time.monotonic()
    driver = cluster.popen_driver(["compare", *GRID, "--backend", "ray", "--address", cluster.address, "--out", str(out)])
    try:
        wait_for(lambda: list(out.rglob("metrics.jsonl")), 300, "a run's first metrics", driver)
        check_bindings(cluster)
        assert driver.wait(timeout=1200) == 0, read_output(driver)
    finally:
        driver.kill()
    ray_seconds = time.monotonic() - start
    output = read_output(driver)
    assert "2 node(s), 2 CPU" in " ".join(output.split()), output
    cells = json.loads((out / "grid.json").read_text())["cells"]
    assert len(cells) == 8 and {c["status"] for c in cells} == {"done"}
    assert {c["node"] for c in cells} == {cluster.head_ip, cluster.node_ip}  # tasks ran on both nodes

    start = time.monotonic()
    run_local(GRID, local, cluster.env)
    local_seconds = time.monotonic() - start
    assert (out / "results.csv").read_text() == (local / "results.csv").read_text()
    table = lambda path: [line for line in path.read_text().splitlines() if line.startswith("|")]  # noqa: E731
    assert table(out / "results.md") == table(local / "results.md")
    ray_runs, local_runs = summaries(out), summaries(local)
    assert ray_runs.keys() == local_runs.keys() and len(ray_runs) == 8
    for run in ray_runs:
        assert comparable(ray_runs[run]) == comparable(local_runs[run]), run
        assert metric_records(out / run) == metric_records(local / run), run
    placed = {node: sum(c["node"] == node for c in cells) for node in (cluster.head_ip, cluster.node_ip)}
    print(f"\n2-node grid: ray {ray_seconds:.1f} s (runs per node {placed}), local 2 workers {local_seconds:.1f} s")


def test_a_node_killed_mid_run_loses_nothing(cluster, tmp_path):
    out, reference = tmp_path / "ray", tmp_path / "reference"
    driver = cluster.popen_driver(["compare", *FAULT, "--backend", "ray", "--address", cluster.address, "--out", str(out)])
    try:
        runs = [out / "td3bc" / "dapg__pen__expert-v0" / f"seed{s}" for s in (0, 1)]
        wait_for(lambda: all(list((r / "checkpoints").glob("step*.pt")) for r in runs), 300, "both runs' checkpoints",
                 driver)
        cluster.kill_node()
        assert driver.wait(timeout=900) == 0, read_output(driver)
    finally:
        driver.kill()
    cells = json.loads((out / "grid.json").read_text())["cells"]
    assert {c["status"] for c in cells} == {"done"}
    assert {c["node"] for c in cells} == {cluster.head_ip}  # the lost run finished on the head node
    assert max(c["resumed_from"] for c in cells) >= 100  # and continued from its checkpoint
    run_local(FAULT, reference, cluster.env)
    for run, summary in summaries(out).items():
        assert comparable(summary) == comparable(summaries(reference)[run]), run
        assert metric_records(out / run) == metric_records(reference / run), run
