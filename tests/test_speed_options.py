"""Speed options of a run: ``--threads`` sets torch's thread count, is recorded, and is validated."""

import json
import tomllib

import pytest
import torch
from typer.testing import CliRunner

from metaconstraint.cli import app

runner = CliRunner()
TINY = ["--steps", "40", "--eval-every", "40", "--eval-episodes", "1"]


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_flag_sets_torch_threads_and_is_recorded(tmp_path, restore_threads):
    torch.set_num_threads(2)
    result = runner.invoke(app, ["run", "td3bc", "--dataset", "D4RL/door/human-v2", *TINY, "--threads", "1", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "td3bc" / "D4RL__door__human-v2" / "seed0"
    assert tomllib.loads((run_dir / "config.toml").read_text())["threads"] == 1
    assert json.loads((run_dir / "environment.json").read_text())["torch_threads"] == 1
    assert torch.get_num_threads() == 1


def test_threads_must_be_positive(tmp_path):
    result = runner.invoke(app, ["run", "td3bc", "--dataset", "D4RL/door/human-v2", "--threads", "0", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "threads" in result.output and "Traceback" not in result.output
