"""Grid cells as Ray tasks: one run is one task with declared resources, on one machine or a cluster.

The task calls :func:`metaconstraint.grid.worker.execute_cell`, the same function a local worker calls, so
run folders, summaries and the skip-what-is-done rule are those of the local backend, and a grid
started on one backend can be finished on the other. Each finished run's small files (summary,
metrics, config, environment) travel back with the task's result and are written into the driver's
``--out`` where they are missing, so the report is complete when workers do not share its filesystem.

Faults: a task whose worker process or node is lost is retried by Ray (``max_retries``), as is one
stopped by SIGTERM after its checkpoint (a node being drained); the retry continues from the run's
newest checkpoint, which resumes exactly. A run that fails for its own reasons returns a ``failed``
result (never retried) and the grid goes on. Ctrl-C on the driver cancels the tasks: running ones
checkpoint and stop, and a rerun resumes them.

Security: the driver keeps Ray's token authentication on (``RAY_AUTH_MODE=token`` unless the user set
the mode), starts no dashboard unless asked, and a cluster it starts itself listens on 127.0.0.1 only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterator

from metaconstraint.grid.events import CellResult, GridEvent, JobFinished, JobProgress, JobStarted
from metaconstraint.signals import StopRequest

INSTALL_HINT = "pip install 'metaconstraint[ray]'"
DEFAULT_MAX_RETRIES = 3


class RayBackendError(RuntimeError):
    """Ray is missing, unreachable or cannot place a run; the message says what to do."""


class RunInterrupted(RuntimeError):
    """A run stopped by a signal after its checkpoint; Ray retries it (it then resumes)."""


def import_ray(single_node: bool = False):
    """Ray, with token authentication on unless the user chose a mode (``RAY_AUTH_MODE``).

    ``single_node``: this driver will start a cluster of its own, which must stay on 127.0.0.1 (Ray
    otherwise swaps loopback for the machine's interface address and listens on every interface);
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is Ray's switch for that, and it also keeps other nodes out.
    Ray reads both settings when it loads, so they are set before the import; a process that
    imported Ray already gets them applied to the loaded module.
    """
    import sys

    loaded = sys.modules.get("ray") is not None
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    if single_node:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        import ray
    except ImportError:
        raise RayBackendError(f"--backend ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    if loaded:
        from ray._private import ray_constants
        from ray._raylet import Config

        if single_node:
            ray_constants.ENABLE_RAY_CLUSTER = False
        Config.initialize("")  # Ray's own refresh of its cached settings, RAY_AUTH_MODE among them
    return ray


def _run_task(index: int, values: dict[str, Any], sink, threads: int) -> CellResult:
    """The body of a run's Ray task (module-level, so workers import it instead of unpickling code)."""
    import ray
    import torch

    from metaconstraint.grid.cells import PACKED, cell_directory
    from metaconstraint.grid.worker import execute_cell, read_run_files

    torch.set_num_threads(threads)
    node = ray.util.get_node_ip_address()
    sink.put.remote(JobStarted(index, node))

    def progress(iteration: int, score: float | None, scale: tuple[str, float] | None) -> None:
        sink.put.remote(JobProgress(index, iteration, score, scale))

    result = execute_cell(values, progress)
    if result["status"] == "interrupted":
        raise RunInterrupted(result["error"])
    result["node"] = node
    for cell, cell_result in zip(values.get(PACKED) or [values], result.get("cells") or [result]):
        directory = cell_directory(cell)
        if cell_result["status"] == "done" and directory is not None:
            cell_result["files"] = read_run_files(directory)
    return result


class _ProgressSink:
    """A tiny actor that collects the tasks' progress messages until the driver drains them."""

    def __init__(self) -> None:
        self.events: list[GridEvent] = []

    def put(self, event: GridEvent) -> None:
        self.events.append(event)

    def drain(self) -> list[GridEvent]:
        events, self.events = self.events, []
        return events


class RayBackend:
    """Jobs as Ray tasks on a cluster at ``address`` (``auto``: the running one) or on a
    single-node cluster this driver starts on 127.0.0.1 (``address=None``): a
    :class:`~metaconstraint.grid.events.Backend`."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        cpus_per_run: float = 1.0,
        gpus_per_run: float = 0.0,
        workers: int | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        include_dashboard: bool = False,
    ):
        self.address, self.cpus_per_run, self.gpus_per_run = address, cpus_per_run, gpus_per_run
        self.workers, self.max_retries, self.include_dashboard = workers, max_retries, include_dashboard
        self.ray = import_ray(single_node=address is None)

    # ------------------------------------------------------------------------- connection
    def connect(self) -> str:
        ray = self.ray
        from metaconstraint.grid.local import available_cores

        if ray.is_initialized():
            return "an existing Ray connection"
        if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
            logging.getLogger(__name__).warning(
                "RAY_AUTH_MODE=%s: this Ray cluster accepts anyone who can reach it.", os.environ["RAY_AUTH_MODE"]
            )
        options: dict[str, Any] = {
            "include_dashboard": self.include_dashboard,
            "log_to_driver": False,  # the driver's display shows progress; workers' logs stay in Ray's session folder
            "logging_level": logging.WARNING,
            "configure_logging": True,
        }
        if self.address is None:
            workers = self.workers or max(1, int(available_cores() // max(self.cpus_per_run, 1e-9)))
            options.update(
                num_cpus=max(1, int(round(workers * self.cpus_per_run))),
                _node_ip_address="127.0.0.1",  # with import_ray(single_node=True): every server on loopback
            )
            if self.include_dashboard:
                options["dashboard_host"] = "127.0.0.1"
        else:
            options["address"] = self.address
        options = {k: v for k, v in options.items() if v is not None}
        try:
            ray.init(**options)
        except ConnectionError as error:
            raise RayBackendError(
                f"cannot reach a Ray cluster at {self.address} ({str(error).splitlines()[0]}). Start one with "
                "`ray start --head`, or leave out --address to start one on this machine."
            ) from None
        except Exception as error:  # noqa: BLE001 - Ray raises many kinds; the user needs the message
            text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            if "token" in text.lower() or "auth" in text.lower():
                text += (
                    ". The cluster uses token authentication: give this machine the head node's token "
                    "(RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token; `ray get-auth-token` prints it)"
                )
            raise RayBackendError(f"cannot start or join Ray: {text}.") from None
        return self.address or "a new single-node cluster on 127.0.0.1"

    def _check_resources(self) -> None:
        ray = self.ray
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        fits = [
            n for n in nodes
            if n["Resources"].get("CPU", 0) >= self.cpus_per_run and n["Resources"].get("GPU", 0) >= self.gpus_per_run
        ]
        if not fits:
            largest = max((n["Resources"].get("CPU", 0) for n in nodes), default=0)
            gpus = max((n["Resources"].get("GPU", 0) for n in nodes), default=0)
            raise RayBackendError(
                f"no node of the cluster can hold one run ({self.cpus_per_run:g} CPU, {self.gpus_per_run:g} GPU; "
                f"the largest node has {largest:g} CPU, {gpus:g} GPU): lower --cpus-per-run / --gpus-per-run."
            )

    def plan(self, jobs: int) -> str:
        where = self.connect()
        self._check_resources()
        total = self.ray.cluster_resources()
        nodes = sum(1 for n in self.ray.nodes() if n.get("Alive"))
        slots = int(total.get("CPU", 0) // self.cpus_per_run) if self.cpus_per_run else jobs
        return (
            f"running {jobs} run(s) as Ray tasks on {where}: {nodes} node(s), {total.get('CPU', 0):g} CPU, "
            f"{self.cpus_per_run:g} CPU and {self.gpus_per_run:g} GPU per run (up to {max(slots, 1)} at once)"
        )

    # ------------------------------------------------------------------------- running
    def execute(self, jobs: list[tuple[int, dict[str, Any]]], stop: StopRequest) -> Iterator[GridEvent]:
        ray = self.ray
        from ray.exceptions import RayError, RayTaskError, TaskCancelledError

        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        threads = max(1, int(self.cpus_per_run))
        # on the driver's own node: a worker node that dies must not take the progress channel with it
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        sink = ray.remote(num_cpus=0)(_ProgressSink).options(scheduling_strategy=here).remote()
        task = ray.remote(_run_task).options(
            num_cpus=self.cpus_per_run,
            num_gpus=self.gpus_per_run,
            max_retries=self.max_retries,
            retry_exceptions=[RunInterrupted],
        )
        refs = {}
        for index, values in jobs:
            # the driver's absolute --out: a worker's working folder is not the driver's
            values = {**values, "out": str(Path(values.get("out", "runs")).absolute())}
            refs[task.remote(index, values, sink, threads)] = index
        remaining, cancelled = list(refs), False
        try:
            while remaining:
                try:
                    done, remaining = ray.wait(remaining, num_returns=len(remaining), timeout=0.5)
                    events = self._drain(sink)
                except KeyboardInterrupt:  # a second signal: stop the runs at once
                    for ref in remaining:
                        ray.cancel(ref, force=True)
                    raise
                yield from events
                if stop.signal_number is not None and not cancelled:
                    cancelled = True
                    for ref in remaining:
                        ray.cancel(ref)  # a running task gets KeyboardInterrupt: it checkpoints and stops
                for ref in done:
                    try:
                        result = ray.get(ref)
                    except TaskCancelledError:
                        result = {"status": "interrupted", "error": "cancelled after its checkpoint"}
                    except RayTaskError as error:
                        cause = error.cause if getattr(error, "cause", None) is not None else error
                        if isinstance(cause, RunInterrupted) or cancelled:
                            result = {"status": "interrupted", "error": str(cause)}
                        else:
                            result = {"status": "failed", "error": f"{type(cause).__name__}: {cause}"}
                    except RayError as error:  # the worker or node was lost more often than max_retries allows
                        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                        result = {
                            "status": "failed",
                            "error": f"lost {self.max_retries + 1} time(s) (Ray: {first}); rerun the grid to resume it",
                        }
                    yield JobFinished(refs[ref], result)
            yield from self._drain(sink)
        finally:
            ray.shutdown()

    def _drain(self, sink) -> list[GridEvent]:
        """The progress messages so far; none when the channel is briefly unreachable (results still arrive)."""
        from ray.exceptions import RayError

        try:
            return self.ray.get(sink.drain.remote(), timeout=30)
        except (RayError, TimeoutError):
            return []
