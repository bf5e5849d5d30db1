"""Run folders: layout, atomic writes, metrics files, checkpoints, summaries.

``OUT/<algorithm>/<dataset id with "/" as "__">/seed<K>[-<tag>]/`` holds ``config.toml``,
``metrics.jsonl``, ``metrics.csv``, ``checkpoints/``, ``summary.json`` and ``environment.json``.
Every file is written to a temporary sibling, flushed, fsynced and renamed into place, so a crash
leaves the previous version intact.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import torch

CHECKPOINT_PREFIX = "step"


class RunFolderError(RuntimeError):
    """A run folder (or a file in it) cannot be written or read; the message says which and why."""


def run_directory(out: Path, algorithm: str, dataset_id: str, seed: int, tag: str | None = None) -> Path:
    name = f"seed{seed}" + (f"-{tag}" if tag else "")
    return Path(out) / algorithm / dataset_id.replace("/", "__") / name


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new ``.<name>.<random>.tmp`` beside ``path``, created with the umask's permissions (as a
    plain ``open`` would; ``mkstemp`` would make it owner-only)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), str(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file beside {path}")


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write ``path`` through ``write(file)`` on a temporary sibling, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(directory: Path, what: str = "--out") -> None:
    """Raise :class:`RunFolderError` unless ``directory`` can be created and written.

    Probes the nearest existing ancestor by creating and removing an empty folder there, so nothing
    is left behind when the check fails (or succeeds).
    """
    if "\x00" in str(directory):
        raise RunFolderError(f"{what} {str(directory)!r} is not a usable path: it contains a NUL character.")
    try:
        target = Path(directory).expanduser().absolute()
        probe = target
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            raise RunFolderError(f"{what} {directory}: {probe} is a file, not a folder, so the run folder cannot be created.")
        os.rmdir(tempfile.mkdtemp(dir=probe, prefix=".metaconstraint-probe-"))
    except OSError as error:
        raise RunFolderError(
            f"{what} {directory}: cannot create the run folder there ({error.strerror or error}"
            f"{': ' + error.filename if getattr(error, 'filename', None) else ''}). Choose a writable --out."
        ) from None
    except ValueError as error:  # e.g. an embedded NUL byte
        raise RunFolderError(f"{what} {directory!r} is not a usable path ({error}).") from None


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode()))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


class MetricsLog:
    """``metrics.jsonl`` (appended records) and ``metrics.csv`` (rewritten from them)."""

    def __init__(self, directory: Path, records: list[dict[str, Any]] | None = None):
        self.directory = Path(directory)
        self.records: list[dict[str, Any]] = list(records or [])

    def append(self, rows: list[dict[str, Any]]) -> None:
        self.records.extend(rows)

    def flush(self) -> None:
        atomic_write_text(self.directory / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.records))
        columns: list[str] = []
        for record in self.records:
            columns.extend(k for k in record if k not in columns)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.records)
        atomic_write_text(self.directory / "metrics.csv", buffer.getvalue())

    @staticmethod
    def read(directory: Path) -> list[dict[str, Any]]:
        path = Path(directory) / "metrics.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def checkpoint_paths(directory: Path) -> list[Path]:
    """Checkpoints of a run folder, oldest first."""
    folder = Path(directory) / "checkpoints"
    paths = [p for p in folder.glob(f"{CHECKPOINT_PREFIX}*.pt") if p.stem[len(CHECKPOINT_PREFIX) :].isdigit()]
    return sorted(paths, key=checkpoint_step)


def checkpoint_step(path: Path) -> int:
    """The iteration of ``checkpoints/step<N>.pt``."""
    return int(Path(path).stem[len(CHECKPOINT_PREFIX) :])


def checkpoint_path(directory: Path, step: int) -> Path:
    return Path(directory) / "checkpoints" / f"{CHECKPOINT_PREFIX}{step:08d}.pt"


def save_checkpoint(directory: Path, step: int, payload: dict[str, Any], keep: int | None = 2) -> Path:
    """Atomically write ``checkpoints/step<N>.pt``; then keep the newest ``keep`` (``None``: keep all).

    If the write fails (a full disk), the temporary file is removed and the checkpoints already
    there are untouched.
    """
    path = checkpoint_path(directory, step)
    # Serialise in memory first: torch's zip writer turns a failed file write (ENOSPC) into an
    # opaque RuntimeError, while a plain write of the bytes raises the OSError callers handle.
    serialised = io.BytesIO()
    torch.save(payload, serialised)
    atomic_write(path, lambda handle: handle.write(serialised.getbuffer()))
    if keep is not None:
        prune_checkpoints(directory, keep)
    return path


def prune_checkpoints(directory: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints."""
    for old in checkpoint_paths(directory)[:-keep]:
        old.unlink(missing_ok=True)


def remove_temporary_files(directory: Path) -> None:
    """Delete the ``.<name>.*.tmp`` leftovers of writes a crash interrupted."""
    for folder in (Path(directory), Path(directory) / "checkpoints"):
        if folder.is_dir():
            for leftover in folder.glob(".*.tmp"):
                leftover.unlink(missing_ok=True)


def load_checkpoint(path: Path, device="cpu") -> dict[str, Any]:
    """A checkpoint is data, never code: ``weights_only=True``."""
    return torch.load(path, map_location=device, weights_only=True)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment_record() -> dict[str, Any]:
    """Package versions, git commit and machine, for ``environment.json``."""
    packages = ["torch", "minari", "gymnasium", "gymnasium-robotics", "mujoco", "metaconstraint", "numpy"]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "packages": {name: _version(name) for name in packages},
        "git_commit": commit,
        "python": platform.python_version(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cpu": cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the SIMD kernels torch dispatches to
            "cpus": os.cpu_count(),
        },
        "torch_threads": torch.get_num_threads(),
    }


def cpu_model() -> str | None:
    """The CPU's model name: the same code, seed and packages train differently on other CPUs (the
    BLAS kernels round differently), so a run's record names it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def environment_changes(started: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two environment records in ways that can change a run's numbers:
    package versions, Python, the git commit, torch's thread count and the CPU
    (``["mujoco 4.0.0 -> 4.0.1"]``).

    A patch release can matter: MuJoCo 4.0.0 and 4.0.1 give different pen trajectories from the
    same seed and actions (docs/results.md)."""
    changes = []
    before, after = started.get("packages", {}), now.get("packages", {})
    for name in sorted(set(before) | set(after)):
        if before.get(name) != after.get(name):
            changes.append(f"{name} {before.get(name)} -> {after.get(name)}")
    for key, label in (("python", "python"), ("git_commit", "git commit"), ("torch_threads", "torch threads")):
        if started.get(key) != now.get(key):
            changes.append(f"{label} {started.get(key)} -> {now.get(key)}")
    for key in ("cpu", "cpu_capability"):  # absent from records written before they were kept
        before_value, after_value = started.get("machine", {}).get(key), now.get("machine", {}).get(key)
        if before_value is not None and after_value is not None and before_value != after_value:
            changes.append(f"{key.replace('_', ' ')} {before_value} -> {after_value}")
    return changes


def record_resume(directory: Path, iteration: int, now: dict[str, Any]) -> list[str]:
    """Append ``now`` (this process's environment) to the run's ``environment.json`` under
    ``resumes`` with the iteration it continues from; return what changed since the run started.

    The top-level record stays the one the run started with, so a run resumed under other package
    versions says so instead of silently claiming the first ones."""
    path = Path(directory) / "environment.json"
    try:
        record = read_json(path)
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict):  # lost or unreadable: this process's record is the best there is
        atomic_write_json(path, {**now, "resumes": [{"iteration": iteration, **now}]})
        return []
    atomic_write_json(path, {**record, "resumes": [*record.get("resumes", []), {"iteration": iteration, **now}]})
    return environment_changes(record, now)
