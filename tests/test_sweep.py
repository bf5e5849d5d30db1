"""`metaconstraint sweep SPEC`: validation before anything runs, settings as tagged run folders, one report."""

from __future__ import annotations

import csv
import json
import textwrap
import tomllib

import pytest
from typer.testing import CliRunner

from metaconstraint.cli import app
from metaconstraint.config import ConfigError
from metaconstraint.sweep import expand_sweep, parse_sweep

runner = CliRunner()
PEN = "dapg/pen/expert-v0"
ENV = {"METACONSTRAINT_OFFLINE": "1"}


def sweep(spec_path, out, *args):
    return runner.invoke(app, ["sweep", str(spec_path), "--out", str(out), *args], env=ENV)


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def test_a_sweep_trains_one_tagged_setting_per_value_and_reports_each(tmp_path):
    spec = write(tmp_path / "sweep.toml", f"""
        datasets = ["{PEN}"]
        seeds = 1
        [run]
        steps = 100
        eval_every = 50
        eval_episodes = 1
        [algorithms.td3bc.sweep]
        alpha = [2.5, 5.0]
    """)
    out = tmp_path / "out"
    result = sweep(spec, out, "--workers", "2")
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # rich wraps at the console width, wherever the tmp path ends
    assert "2 setting(s) x 1 dataset(s) x 1 seed(s) = 2 run(s)" in output
    assert "2 run(s) packed into 1 vectorised job(s)" in output  # alpha varies per member: one computation
    assert f"done td3bc {PEN} seed0-alpha=2.5" in output
    for alpha in (2.5, 5.0):
        folder = out / "td3bc" / "dapg__pen__expert-v0" / f"seed0-alpha={alpha}"
        config = tomllib.loads((folder / "config.toml").read_text())
        assert config["alpha"] == alpha and config["tag"] == f"alpha={alpha}" and config["steps"] == 100
        assert json.loads((folder / "summary.json").read_text())["steps"] == 100
    with open(out / "results.csv", newline="") as handle:
        row = {r["dataset"]: r for r in csv.DictReader(handle)}[PEN]
    assert row["td3bc (alpha=2.5) runs"] == "1" and row["td3bc (alpha=5.0) runs"] == "1"
    assert row["td3bc (alpha=2.5) mean"] != row["td3bc (alpha=5.0) mean"]  # the setting changed the run
    markdown = (out / "results.md").read_text()
    assert "| dataset | td3bc (alpha=2.5) | td3bc (alpha=5.0) |" in markdown and "metaconstraint sweep" in markdown
    assert (out / "learning_curves.png").exists()
    # a rerun skips both
    result = sweep(spec, out)
    assert result.exit_code == 0 and "skipping 2 finished run(s)" in result.output


def test_dry_run_lists_every_setting_of_a_yaml_spec_and_writes_nothing(tmp_path):
    spec = write(tmp_path / "sweep.yaml", f"""
        datasets: ["{PEN}", dapg/door/expert-v0]
        seeds: [0, 4]
        run: {{steps: 300}}
        algorithms:
          aspc:
            alpha_lr_decay_steps: 1000000
            sweep: {{alpha_lr: [0.0001, 0.0003], alpha_interval: [10, 20]}}
          bc:
    """)
    out = tmp_path / "out"
    result = sweep(spec, out, "--dry-run")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "5 setting(s) x 2 dataset(s) x 2 seed(s) = 20 run(s)" in text
    assert "aspc (alpha_lr=0.0001+alpha_interval=10)" in text and "aspc (alpha_lr=0.0003+alpha_interval=20)" in text
    assert "bc: its defaults" in text and "alpha_lr_decay_steps = 1000000" in text and "nothing was trained" in text
    assert not out.exists()
    listed = json.loads(sweep(spec, out, "--dry-run", "--json").output)
    assert [s["label"] for s in listed["settings"]][-1] == "bc" and listed["settings"][0]["values"] == {
        "alpha_lr_decay_steps": 1000000, "alpha_lr": 0.0001, "alpha_interval": 10}
    assert (listed["datasets"], listed["seeds"], len(listed["runs"])) == ([PEN, "dapg/door/expert-v0"], [0, 4], 20)
    assert listed["runs"][0] == {"algorithm": "aspc", "dataset": PEN, "seed": 0, "tag": "alpha_lr=0.0001+alpha_interval=10",
                                 "folder": str(out / "aspc" / "dapg__pen__expert-v0" / "seed0-alpha_lr=0.0001+alpha_interval=10")}
    assert not out.exists()
    assert sweep(spec, out, "--json").exit_code == 2  # a listing: only with --dry-run
    cells = expand_sweep(parse_sweep({"datasets": [PEN], "seeds": [0, 4], "algorithms": {"bc": {}}}), {"out": "x"})
    assert [(c["seed"], c.get("tag")) for c in cells] == [(0, None), (4, None)]


@pytest.mark.parametrize(
    "body, message",
    [
        ('datasets = ["x"]\nalgoritms = {}', "algoritms: unknown key"),
        ('datasets = ["x"]\n[algorithms.aspc.sweep]\nalpha_lrr = [0.1]', "unknown aspc config field 'alpha_lrr'. Did you mean alpha_lr,"),
        ('datasets = ["x"]\n[algorithms.aspc.sweep]\nalpha_lr = []', "alpha_lr: give at least one value"),
        ('datasets = ["x"]\n[algorithms.aspc.sweep]\nalpha_lr = "0.1"', "sweep.alpha_lr: Input should be a valid list"),
        ('datasets = ["x"]\n[algorithms.aspc.sweep]\nalpha_lr = [-0.1]', "alpha_lr: Input should be greater than 0"),
        ('datasets = ["x"]\n[algorithms.td3bc.sweep]\nalpha = ["big"]', "alpha: Input should be a valid number"),
        ('datasets = ["x"]\n[algorithms.td3bc.sweep]\nseed = [1, 2]', "td3bc.seed: set by the sweep itself"),
        ('datasets = ["x"]\n[run]\nsteps = 0\n[algorithms.bc]', "steps: Input should be greater than 0"),
        ('datasets = ["x"]\n[run]\nalpha = 1\n[algorithms.bc]', "run.alpha: unknown run option 'alpha'"),
        ('datasets = ["x"]\n[algorithms.aspcc]', "unknown algorithm 'aspcc'"),
        ('datasets = []\n[algorithms.bc]', "datasets: List should have at least 1 item"),
        ('datasets = ["x"]\nseeds = 0\n[algorithms.bc]', "seeds: give at least 1"),
        ('datasets = ["x"]\n[algorithms.td3bc.sweep]\nalpha = [2.5, 2.5]', "a value is listed twice"),
        ('datasets = ["x"]\n[algorithms.aspc.sweep]\noutcome = [1]\nalpha_lr = [1', "not valid TOML"),
    ],
)
def test_a_bad_spec_is_refused_before_anything_runs(tmp_path, body, message):
    spec = write(tmp_path / "bad.toml", body)
    result = sweep(spec, tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_settings_whose_values_give_one_tag_are_refused():
    with pytest.raises(ConfigError, match="same run folder tag"):
        parse_sweep({"datasets": ["x"], "algorithms": {"aspc": {"sweep": {"outer_losses": [["l1", "l2"], ["l1.l2"]]}}}})


def test_cells_differing_only_in_seed_and_a_member_scalar_are_packed():
    from metaconstraint.grid import pack_cells

    plan = parse_sweep({
        "datasets": [PEN, "door-human"], "seeds": 2,
        "algorithms": {"td3bc": {"sweep": {"alpha": [1, 2.5], "critic_lr": [1e-4, 3e-4]}}, "bc": {}, "aspc": {"sweep": {"alpha": [1, 4]}}},
    })
    cells = expand_sweep(plan, {"out": "o"})
    groups = pack_cells(cells, list(range(len(cells))))
    described = [sorted({(cells[i]["algorithm"], cells[i]["dataset"], cells[i].get("critic_lr")) for i in g}) for g in groups]
    assert all(len(d) == 1 for d in described)  # one algorithm, dataset and critic_lr per group
    sizes = {d[0]: len(g) for d, g in zip(described, groups)}
    assert sizes[("td3bc", PEN, 1e-4)] == 4 and sizes[("aspc", "door-human", None)] == 4  # 2 alphas x 2 seeds
    assert sizes[("bc", PEN, None)] == 2  # seeds alone
    assert len(groups) == 2 * (2 + 1 + 1)
    assert [len(g) for g in pack_cells(cells, list(range(len(cells))), max_members=3)].count(3) == 6


@pytest.mark.slow
def test_a_packed_sweep_writes_the_run_folders_of_the_unpacked_one(tmp_path):
    """td3bc alpha in {1, 10} x 2 seeds: one vectorised job of 4 members; each folder's config.toml,
    metrics and summary equal those of the same sweep run cell by cell (--no-pack)."""
    spec = write(tmp_path / "sweep.toml", f"""
        datasets = ["{PEN}"]
        seeds = 2
        [run]
        steps = 60
        eval_every = 30
        eval_episodes = 1
        [algorithms.td3bc.sweep]
        alpha = [1, 10]
    """)
    packed, separate = tmp_path / "packed", tmp_path / "separate"
    result = sweep(spec, packed, "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "4 run(s) packed into 1 vectorised job(s)" in " ".join(result.output.split())
    result = sweep(spec, separate, "--workers", "2", "--no-pack")
    assert result.exit_code == 0, result.output
    for name in ("seed0-alpha=1", "seed1-alpha=1", "seed0-alpha=10", "seed1-alpha=10"):
        folders = [root / "td3bc" / "dapg__pen__expert-v0" / name for root in (packed, separate)]
        configs = [tomllib.loads((f / "config.toml").read_text()) for f in folders]
        assert {**configs[0], "out": None} == {**configs[1], "out": None}
        rows = [[json.loads(line) for line in (f / "metrics.jsonl").read_text().splitlines()] for f in folders]
        for row, own in zip(*rows, strict=True):
            assert row.keys() == own.keys()
            assert all(row[k] == pytest.approx(own[k], rel=1e-4, abs=1e-6) for k in row), name
    grid = json.loads((packed / "grid.json").read_text())
    assert sorted(c["status"] for c in grid["cells"]) == ["done"] * 4
    result = sweep(spec, packed)
    assert result.exit_code == 0 and "skipping 4 finished run(s)" in result.output
