"""Reading run folders back: old names mapped to today's, checkpoints of another format refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metaconstraint.checkpoint import CHECKPOINT_FORMAT, read_checkpoint
from metaconstraint.runs import ResumeError, read_metrics, read_summary, scale_history

OLD_ASPC = Path(__file__).resolve().parents[1] / "docs" / "results" / "runs" / "aspc" / "dapg__pen__expert-v0" / "seed0"


def test_a_committed_old_aspc_folder_reads_with_todays_names():
    raw = json.loads((OLD_ASPC / "summary.json").read_text())
    summary = read_summary(OLD_ASPC)
    assert "final_alpha" in raw and "final_alpha" not in summary
    assert (summary["final_scale"], summary["scale_name"]) == (raw["final_alpha"], "alpha")
    records = read_metrics(OLD_ASPC, summary["scale_name"])
    assert all("alpha" not in r for r in records) and "scale/alpha" in records[-1]
    assert scale_history(records)[-1] == (records[-1]["step"], records[-1]["scale/alpha"])


def test_an_old_aspc_iql_folders_alpha_was_its_beta(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"algorithm": "aspc-iql", "seed": 0, "final_alpha": 0.7}))
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 10, "critic_loss": 1.0, "alpha": 0.7}) + "\n")
    summary = read_summary(tmp_path)
    assert (summary["final_scale"], summary["scale_name"]) == (0.7, "beta")
    assert read_metrics(tmp_path, summary["scale_name"]) == [{"step": 10, "critic_loss": 1.0, "scale/beta": 0.7}]


def test_a_folder_with_todays_names_reads_as_written(tmp_path):
    written = {"algorithm": "aspc-iql", "final_scale": 0.7, "scale_name": "beta"}
    (tmp_path / "summary.json").write_text(json.dumps(written))
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 10, "scale/beta": 0.7}) + "\n")
    assert read_summary(tmp_path) == written and scale_history(read_metrics(tmp_path, "beta")) == [(10, 0.7)]


@pytest.mark.parametrize("payload, found", [({"format": CHECKPOINT_FORMAT + 1}, f"format {CHECKPOINT_FORMAT + 1}"),
                                            ({"weights": torch.zeros(2)}, "not a metaconstraint checkpoint")])
def test_a_checkpoint_of_another_format_names_the_format_this_version_reads(tmp_path, payload, found):
    torch.save(payload, tmp_path / "step00000010.pt")
    with pytest.raises(ResumeError, match=f"{found}.*reads checkpoint format {CHECKPOINT_FORMAT}"):
        read_checkpoint(tmp_path / "step00000010.pt")


def test_a_checkpoint_written_before_the_scale_settings_were_renamed_resumes_exactly(tmp_path):
    """An older version wrote alpha_lr, alpha_interval, ... and no keys added since: the run still
    resumes, and ends exactly where an uninterrupted run of today's code ends."""
    from typer.testing import CliRunner

    from metaconstraint.checkpoint import check_config
    from metaconstraint.cli import app

    runner = CliRunner()
    args = ["run", "aspc", "--dataset", "dapg/pen/expert-v0", "--steps", "40", "--eval-every", "20", "--eval-episodes", "1"]
    for out in ("whole", "cut"):
        assert runner.invoke(app, [*args, "--out", str(tmp_path / out)]).exit_code == 0
    folder = lambda out: tmp_path / out / "aspc" / "dapg__pen__expert-v0" / "seed0"  # noqa: E731
    cut = folder("cut")
    (cut / "checkpoints" / "step00000040.pt").unlink()
    (cut / "summary.json").unlink()
    path = cut / "checkpoints" / "step00000020.pt"
    payload = torch.load(path, weights_only=True)
    old_names = {"scale_lr": "alpha_lr", "scale_interval": "alpha_interval", "scale_lr_decay_steps": "alpha_lr_decay_steps",
                 "scale_final_lr_fraction": "alpha_final_lr_fraction"}
    config = {old_names.get(key, key): value for key, value in payload["config"].items()}
    del config["alpha_final_lr_fraction"]  # as if added since, at the default it was trained with
    assert {"alpha_lr", "alpha_interval", "alpha_lr_decay_steps"} <= set(config) and "scale_lr" not in config
    torch.save({**payload, "config": config}, path)
    with pytest.raises(ResumeError, match="another configuration: scale_lr \\(checkpoint 0.002, now 0.01\\)"):
        check_config(path, {**config, "alpha_lr": 0.002}, {**payload["config"], "scale_lr": 0.01})  # a real change still refuses
    result = runner.invoke(app, ["resume", str(cut)])
    assert result.exit_code == 0, result.output
    assert (cut / "metrics.jsonl").read_bytes() == (folder("whole") / "metrics.jsonl").read_bytes()
