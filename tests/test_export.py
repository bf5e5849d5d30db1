"""`metaconstraint export`: the file a user loads with torch.jit.load or onnxruntime acts as the toolkit does."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from metaconstraint.cli import app
from metaconstraint.export import export_policy, toolkit_actions
from metaconstraint.rl import data
from metaconstraint.checkpoint import load_run_policy

runner = CliRunner()
ONNX_READY = all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not ONNX_READY, reason="ONNX export needs pip install 'metaconstraint[export]'")


def train(out: Path, algorithm: str, steps: int = 20) -> Path:
    result = runner.invoke(app, ["run", algorithm, "--dataset", "dapg/pen/expert-v0", "--steps", str(steps),
                                 "--eval-every", str(steps), "--eval-episodes", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out / algorithm / "dapg__pen__expert-v0" / "seed0"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, simulated_root) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("export_runs")
    return {name: train(out, name) for name in ("td3bc", "iql")}


def dataset_observations(count: int = 64) -> np.ndarray:
    """Real observations of the training set, not the statistics the export check draws from."""
    transitions = data.load_transitions(data.load_dataset("dapg/pen/expert-v0"))
    return np.asarray(transitions.observations[:count], dtype=np.float32)


def file_actions(path: Path, fmt: str, observations: np.ndarray) -> np.ndarray:
    if fmt == "torchscript":
        return torch.jit.load(str(path))(torch.from_numpy(observations)).detach().numpy()
    if fmt == "torch-export":
        return torch.export.load(str(path)).module()(torch.from_numpy(observations)).detach().numpy()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"observation": observations})[0]


@pytest.mark.parametrize("fmt", ["torchscript", "torch-export", pytest.param("onnx", marks=needs_onnx)])
@pytest.mark.parametrize("algorithm", ["td3bc", "iql"])
def test_the_exported_file_acts_as_the_toolkit_does(runs, fmt, algorithm, tmp_path):
    run_dir = runs[algorithm]
    out = tmp_path / f"policy.{fmt}"
    result = runner.invoke(app, ["export", str(run_dir), "--format", fmt, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output.splitlines()[-1])
    assert record["max_abs_difference"] < 1e-5 and record["bytes"] == out.stat().st_size

    observations = dataset_observations()
    policy, env = load_run_policy(run_dir)
    env.close()
    expected = toolkit_actions(policy, torch.from_numpy(observations))
    for batch in (observations, observations[:1]):  # any batch size, one included
        actions = file_actions(out, fmt, batch)
        assert actions.shape == (len(batch), 24)
        np.testing.assert_allclose(actions, expected[: len(batch)], atol=1e-5, rtol=1e-5)
    assert np.abs(expected).max() > 1e-3  # a policy that acts, so the comparison means something

    sidecar = json.loads(out.with_name(out.name + ".json").read_text())
    assert sidecar["input"]["shape"] == ["batch", 45] and sidecar["output"]["shape"] == ["batch", 24]
    assert sidecar["output"]["low"] == [-1.0] * 24 and sidecar["provenance"]["iteration"] == 20
    assert sidecar["provenance"]["algorithm"] == algorithm and sidecar["provenance"]["dataset"] == "dapg/pen/expert-v0"
    assert ("Gaussian" in sidecar["output"]["action"]) == (algorithm == "iql")


def test_the_normalisation_is_inside_the_file(runs, tmp_path):
    """Observations far from the data's mean: a file without (s - mu) / sigma would act differently."""
    exported = export_policy(runs["td3bc"], "torchscript", tmp_path / "p.pt")
    policy, env = load_run_policy(runs["td3bc"])
    env.close()
    shifted = (policy.normalizer.mean.reshape(1, -1) + 3 * policy.normalizer.std.reshape(1, -1)).float()
    loaded = torch.jit.load(str(exported.path))
    np.testing.assert_allclose(loaded(shifted).detach().numpy(), toolkit_actions(policy, shifted), atol=1e-5)
    unnormalised = policy.algorithm.act(policy.state, shifted.unsqueeze(0)).squeeze(0).detach().numpy()
    assert np.abs(loaded(shifted).detach().numpy() - unnormalised).max() > 1e-3


def test_an_unfinished_run_is_refused(runs, tmp_path):
    import shutil

    copy = tmp_path / "td3bc" / "dapg__pen__expert-v0" / "seed0"
    shutil.copytree(runs["td3bc"], copy)
    (copy / "summary.json").unlink()
    result = runner.invoke(app, ["export", str(copy)])
    assert result.exit_code == 2
    assert "has not finished" in " ".join(result.output.split()) and "metaconstraint resume" in result.output


def test_bad_formats_and_folders_are_clear_errors(runs, tmp_path):
    result = runner.invoke(app, ["export", str(runs["td3bc"]), "--format", "tflite"])
    assert result.exit_code == 2 and "Known export format names: onnx, torch-export, torchscript" in " ".join(result.output.split())
    result = runner.invoke(app, ["export", str(tmp_path)])
    assert result.exit_code == 2 and "not a run folder" in result.output


def test_missing_onnx_packages_get_the_install_line(runs, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real_find_spec(name, *a))
    result = runner.invoke(app, ["export", str(runs["td3bc"]), "--format", "onnx"])
    assert result.exit_code == 2
    assert "onnxscript" in result.output and "pip install 'metaconstraint[export]'" in " ".join(result.output.split())
