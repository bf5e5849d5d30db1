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
