"""Run folders: layout, atomic writes, metrics files, summaries, and reading them back.

``OUT/<algorithm>/<dataset id with "/" as "__">/seed<K>[-<tag>]/`` holds ``config.toml``,
``metrics.jsonl``, ``metrics.csv``, ``checkpoints/step<N>.pt`` (their content:
:mod:`metaconstraint.checkpoint`), ``summary.json`` and ``environment.json``. Every file is written
to a temporary sibling, flushed, fsynced and renamed into place, so a crash leaves the previous
version intact.

The learned scale of an adaptive algorithm has one name in every file: the metric
``scale/<name>`` and the summary's ``final_scale`` with ``scale_name`` (``alpha`` for aspc, ``beta``
for aspc-iql). Folders written before that called it ``alpha`` everywhere (aspc-iql's beta too);
:func:`read_metrics` and :func:`read_summary` map them to today's names.
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

import numpy as np
import torch

from metaconstraint.config import load_config_file

CHECKPOINT_PREFIX = "step"


class RunFolderError(RuntimeError):
    """A run folder (or a file in it) cannot be written or read; the message says which and why."""


class ResumeError(ValueError):
    """A run folder or checkpoint that cannot be continued (or read); the message says why."""


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


# ----------------------------------------------------------------------------- reading run folders
SCALE_PREFIX = "scale/"  # the learned scale's metric: "scale/alpha", "scale/beta"
LEGACY_SCALE_NAMES = {"aspc-iql": "beta"}  # what the old metric "alpha" held, by algorithm (else alpha)


def scale_metric(name: str) -> str:
    """The metrics key of the learned scale called ``name``: ``scale/beta``."""
    return SCALE_PREFIX + name


def legacy_scale_name(algorithm: str) -> str:
    """The meta-parameter an old folder of ``algorithm`` logged as ``alpha``."""
    return LEGACY_SCALE_NAMES.get(algorithm, "alpha")


def scale_of(record: dict[str, Any]) -> tuple[str, float] | None:
    """``(name, value)`` of the learned scale in a (mapped) metrics record, or ``None``."""
    for key, value in record.items():
        if key.startswith(SCALE_PREFIX):
            return key[len(SCALE_PREFIX) :], value
    return None


def upgrade_metrics_record(record: dict[str, Any], scale_name: str) -> dict[str, Any]:
    """An old record's ``alpha`` renamed to ``scale/<scale_name>`` (in its place); others as they are."""
    if "alpha" not in record or scale_of(record) is not None:
        return record
    key = scale_metric(scale_name)
    return {(key if k == "alpha" else k): v for k, v in record.items()}


def scale_history(records: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """``[(step, value)]`` of the learned scale in (mapped) metrics records."""
    return [(int(r["step"]), float(found[1])) for r in records if (found := scale_of(r)) is not None]


def upgrade_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """An old summary's ``final_alpha`` as ``final_scale`` and ``scale_name`` (in place of it)."""
    if "final_alpha" not in summary or "final_scale" in summary:
        return summary
    upgraded = {}
    for key, value in summary.items():
        if key == "final_alpha":
            upgraded["final_scale"], upgraded["scale_name"] = value, legacy_scale_name(summary.get("algorithm", ""))
        else:
            upgraded[key] = value
    return upgraded


def read_metrics(directory: Path, old_scale_name: str | None = "alpha") -> list[dict[str, Any]]:
    """The records of a run folder's ``metrics.jsonl`` with today's names: an old folder's ``alpha``
    becomes ``scale/<old_scale_name>`` (the ``scale_name`` of :func:`read_summary`, or
    :func:`legacy_scale_name` of the run's algorithm)."""
    return [upgrade_metrics_record(r, old_scale_name or "alpha") for r in MetricsLog.read(directory)]


def read_summary(directory: Path) -> dict[str, Any]:
    """A run folder's ``summary.json`` with today's names."""
    return upgrade_summary(read_json(Path(directory) / "summary.json"))


def final_score(scores: list[float], rule: str, k: int) -> float:
    """``last``: the final evaluation's mean; ``mean_last_k``: mean of the last ``k`` evaluations."""
    if rule == "mean_last_k":
        return float(np.mean(scores[-k:]))
    return float(scores[-1])


def has_run(directory: Path) -> bool:
    """Whether a run folder already holds (part of) a run: checkpoints or a summary."""
    return bool(checkpoint_paths(directory)) or (Path(directory) / "summary.json").exists()


def read_run_folder(run_dir: Path) -> dict[str, Any]:
    """The flat config of a run folder, with ``out`` set to where the folder actually is."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file():
        raise ResumeError(
            f"{run_dir} is not a run folder (it has no config.toml). A run folder is "
            f"OUT/<algorithm>/<dataset>/seed<K>[-<tag>]/, e.g. runs/aspc/dapg__pen__expert-v0/seed0."
        )
    values = load_config_file(run_dir / "config.toml")
    if not isinstance(values.get("algorithm"), str) or not isinstance(values.get("dataset"), str):
        raise ResumeError(f"{run_dir / 'config.toml'} names no algorithm or dataset.")
    resolved = run_dir.resolve()
    if len(resolved.parents) < 3:
        raise ResumeError(f"{run_dir} is not a run folder: it is not inside OUT/<algorithm>/<dataset>/.")
    out = resolved.parents[2]
    expected = run_directory(out, values["algorithm"], values["dataset"], int(values.get("seed", 0)), values.get("tag"))
    if expected != resolved:
        raise ResumeError(
            f"{run_dir} does not sit where its config.toml puts it ({expected}): was the folder renamed? Put it back "
            f"at OUT/<algorithm>/<dataset with '/' as '__'>/seed<K>[-<tag>]/."
        )
    values["out"] = str(out)
    return values
