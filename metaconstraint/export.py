r"""Policies that leave the toolkit: a finished run's policy as one TorchScript, ONNX or torch.export file.

The file maps raw observations to actions, :math:`a = \pi\big((s - \mu) / \sigma\big)`, shapes
``(B, obs_dim) -> (B, action_dim)``, float32: the run's state normalisation :math:`(\mu, \sigma)`
and the actor's action scaling (:math:`a_{max} \tanh(\cdot)`) are inside it, so using it needs
``torch`` (TorchScript: ``torch.jit.load``; torch.export: ``torch.export.load(f).module()``) or
``onnxruntime`` (ONNX) and nothing of metaconstraint. TorchScript is deprecated in recent torch
releases (``torch.jit.load`` warns so): it is here for the runtimes that still load it; torch.export's
``.pt2`` is its successor. Dict observations
(PointMaze, AntMaze) are flattened in the key order the sidecar lists. A Gaussian actor (IQL,
aspc-iql) is exported as its mean action, the action the toolkit evaluates.

Beside the file, ``<file>.json`` describes the spaces, the observation layout and where the policy
comes from (run, algorithm, dataset, environment, checkpoint iteration, versions).
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch import Tensor, nn

from metaconstraint.checkpoint import RunPolicy, load_run_policy
from metaconstraint.rl.networks import GaussianActor
from metaconstraint.runs import atomic_write_json, read_json
from metaconstraint.suggest import unknown_name

Format = Literal["torchscript", "onnx", "torch-export"]
SUFFIX: dict[str, str] = {"torchscript": ".pt", "onnx": ".onnx", "torch-export": ".pt2"}
EXPORT_EXTRA = "pip install 'metaconstraint[export]'"


class ExportError(ValueError):
    """A run that cannot be exported, or a format whose packages are missing (the message says which)."""


class StandalonePolicy(nn.Module):
    """``(B, obs_dim)`` raw observations -> ``(B, action_dim)`` actions of one trained member."""

    def __init__(self, act: Callable[[Tensor], Tensor], mean: Tensor, std: Tensor):
        super().__init__()
        self.act = act  # normalised observations (1, B, obs_dim) -> actions (1, B, action_dim)
        self.register_buffer("mean", mean.detach().float().cpu().clone())
        self.register_buffer("std", std.detach().float().cpu().clone())

    def forward(self, observation: Tensor) -> Tensor:
        return self.act(((observation - self.mean) / self.std).unsqueeze(0)).squeeze(0)


def standalone_policy(policy: RunPolicy) -> StandalonePolicy:
    """The run's deterministic (or mean) action with its normalisation, on the CPU in float32."""
    state = _float32_cpu(policy.state)
    algorithm = policy.algorithm

    def act(observations: Tensor) -> Tensor:
        return algorithm.act(state, observations)

    return StandalonePolicy(act, policy.normalizer.mean, policy.normalizer.std).eval()


def _float32_cpu(tree: Any) -> Any:
    if isinstance(tree, Tensor):
        return tree.detach().to("cpu", torch.float32) if tree.is_floating_point() else tree.cpu()
    if isinstance(tree, dict):
        return {key: _float32_cpu(value) for key, value in tree.items()}
    return tree


def exported_action(policy: RunPolicy) -> str:
    """What the file's output is: the deterministic action, or the mean of a Gaussian actor."""
    if isinstance(getattr(policy.algorithm, "actor", None), GaussianActor):
        return f"mean of {policy.run.algorithm}'s Gaussian policy (its evaluation action); no sampling"
    return "deterministic action"


@dataclass(frozen=True)
class Exported:
    """An exported policy: the file, its sidecar, what it returns, and the check of its actions."""

    path: Path
    sidecar: Path
    format: str
    action: str
    size_bytes: int
    export_seconds: float
    load_seconds: float | None
    max_abs_difference: float | None  # file vs the toolkit's own actions on the check observations


def export_policy(run_dir: Path, format: Format = "torchscript", out: Path | None = None, check: bool = True) -> Exported:
    """Write the policy of the finished run in ``run_dir`` to ``out`` (default
    ``RUN_DIR/export/policy.pt`` or ``.onnx``) and ``<out>.json``; with ``check``, load the file back
    (``torch.jit.load`` / ``onnxruntime``) and compare its actions with the toolkit's on 256
    observations drawn around the dataset's state statistics."""
    if format not in SUFFIX:
        raise ExportError(unknown_name("export format", format, SUFFIX))
    run_dir = Path(run_dir)
    _require_finished(run_dir)
    if format == "onnx":
        _require("onnx", "onnxscript")
    policy, env = load_run_policy(run_dir, "cpu")
    env.close()
    module = standalone_policy(policy)
    path = Path(out) if out is not None else run_dir / "export" / f"policy{SUFFIX[format]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    observations = check_observations(policy)
    started = time.perf_counter()
    _write(module, observations[:4], path, format)
    export_seconds = time.perf_counter() - started
    load_seconds = difference = None
    if check:
        expected = toolkit_actions(policy, observations)
        load_seconds, actions = run_exported(path, format, observations.numpy())
        difference = float(np.max(np.abs(actions - expected)))
    action = exported_action(policy)
    sidecar = path.with_name(path.name + ".json")
    atomic_write_json(sidecar, description(policy, path, format, action, run_dir))
    return Exported(path, sidecar, format, action, path.stat().st_size, export_seconds, load_seconds, difference)


def _require_finished(run_dir: Path) -> None:
    if not (run_dir / "config.toml").is_file():
        raise ExportError(f"{run_dir} is not a run folder (it has no config.toml).")
    summary = run_dir / "summary.json"
    if not summary.is_file():
        raise ExportError(
            f"{run_dir} has not finished (no summary.json): export a finished run, or finish this one first with "
            f"`metaconstraint resume {run_dir}`."
        )


def _require(*packages: str) -> None:
    import importlib.util

    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"ONNX export needs {' and '.join(missing)}, which is not installed: {EXPORT_EXTRA}.")


@torch.no_grad()
def toolkit_actions(policy: RunPolicy, observations: Tensor) -> np.ndarray:
    """The actions the toolkit's own evaluation takes for raw observations ``(B, obs_dim)``."""
    normalised = policy.normalizer(observations.to(policy.normalizer.mean.device).unsqueeze(0))
    return policy.algorithm.act(policy.state, normalised).squeeze(0).cpu().numpy()


def check_observations(policy: RunPolicy, count: int = 256, seed: int = 0) -> Tensor:
    """``(count, obs_dim)`` float32 observations ``mu + sigma * N(0, 1)`` from the run's statistics."""
    generator = torch.Generator().manual_seed(seed)
    mean = policy.normalizer.mean.detach().cpu().float().reshape(-1)
    std = policy.normalizer.std.detach().cpu().float().reshape(-1)
    return mean + std * torch.randn(count, mean.numel(), generator=generator)


def _write(module: StandalonePolicy, example: Tensor, path: Path, format: str) -> None:
    """Export to a temporary file beside ``path``, then rename: an interrupted export leaves no half file."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(handle)
    try:
        with torch.no_grad():
            if format == "torchscript":
                with warnings.catch_warnings():
                    # The trace freezes branches on layer widths (networks._linear), which an exported
                    # policy never changes; only its batch varies, and no branch depends on it.
                    warnings.simplefilter("ignore", torch.jit.TracerWarning)
                    traced = torch.jit.trace(module, example)
                torch.jit.save(traced, temporary)
            elif format == "torch-export":
                program = torch.export.export(module, (example,), dynamic_shapes={"observation": {0: torch.export.Dim("batch")}})
                torch.export.save(program, temporary)
            else:
                _onnx_export(module, example, temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _onnx_export(module: StandalonePolicy, example: Tensor, path: str) -> None:
    """torch.onnx's exporter (via torch.export), with a dynamic batch; its progress lines and
    optional-operator notices (torchvision) are not the user's concern, so they are kept quiet."""
    import contextlib
    import io
    import logging

    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(
                module, (example,), path, input_names=["observation"], output_names=["action"],
                dynamic_shapes={"observation": {0: torch.export.Dim("batch")}}, dynamo=True, external_data=False,
                verbose=False,
            )
    finally:
        quiet.setLevel(level)


def run_exported(path: Path, format: str, observations: np.ndarray) -> tuple[float, np.ndarray]:
    """Load an exported file as a user would and act on ``observations`` ``(B, obs_dim)``: returns
    ``(load seconds, actions (B, action_dim))``."""
    started = time.perf_counter()
    if format == "torchscript":
        loaded = torch.jit.load(str(path), map_location="cpu")
        seconds = time.perf_counter() - started
        with torch.no_grad():
            return seconds, loaded(torch.as_tensor(observations, dtype=torch.float32)).numpy()
    if format == "torch-export":
        loaded = torch.export.load(str(path)).module()
        seconds = time.perf_counter() - started
        with torch.no_grad():
            return seconds, loaded(torch.as_tensor(observations, dtype=torch.float32)).numpy()
    try:
        import onnxruntime
    except ImportError:
        raise ExportError(f"checking the ONNX file needs onnxruntime, which is not installed: {EXPORT_EXTRA} "
                          f"(or export with --no-check).") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    seconds = time.perf_counter() - started
    return seconds, session.run(["action"], {"observation": observations.astype(np.float32)})[0]


def description(policy: RunPolicy, path: Path, format: str, action: str, run_dir: Path) -> dict[str, Any]:
    """The sidecar: spaces, observation layout, what the output is, and provenance."""
    from metaconstraint import __version__

    info = policy.info
    summary = read_json(run_dir / "summary.json")
    return {
        "file": path.name,
        "format": format,
        "input": {
            "name": "observation",
            "shape": ["batch", info.observation_dim],
            "dtype": "float32",
            "layout": list(info.observation_keys) or None,  # Dict observations: flattened in this key order
            "normalisation": "inside the file: (observation - mean) / std with the training data's statistics",
        },
        "output": {
            "name": "action",
            "shape": ["batch", info.action_dim],
            "dtype": "float32",
            "low": list(info.action_low),
            "high": list(info.action_high),
            "action": action,
        },
        "provenance": {
            "algorithm": policy.run.algorithm,
            "dataset": info.dataset_id,
            "environment": info.env_id,
            "seed": policy.run.seed,
            "iteration": int(policy.payload["iteration"]),
            "final_score": summary.get("final_score"),
            "run": f"{run_dir.parent.parent.name}/{run_dir.parent.name}/{run_dir.name}",
            "metaconstraint": __version__,
            "torch": torch.__version__,
            "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }


__all__ = ["ExportError", "Exported", "StandalonePolicy", "export_policy", "run_exported", "standalone_policy", "toolkit_actions"]
