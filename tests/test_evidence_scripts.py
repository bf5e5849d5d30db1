"""The evidence grid's scripts (docs/results/evidence): the criteria verdicts and the job order.

The grid's conclusions are only as sound as ``criteria.py``; these tests feed it made-up runs whose
right verdicts are known. The scripts are not a package, so they are loaded from their files.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

EVIDENCE = Path(__file__).resolve().parents[1] / "docs" / "results" / "evidence"
MAZE, PEN = "maze", "pen"
PAPER, RELATIVE, EMA = "l1.l2.l3", "l1.l2-rel.l3-rel", "l1.l2-ema.l3"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"evidence_{name}", EVIDENCE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def criteria():
    return load("criteria")


def run(algorithm, dataset, seed, score, *, alpha=None, form=None, final_alpha=None, score_40k=None):
    scores = [{"step": 40_000, "score": score if score_40k is None else score_40k}, {"step": 50_000, "score": score}]
    return {"algorithm": algorithm, "dataset": dataset, "seed": seed, "form": form, "alpha": alpha, "scale": 1.0,
            "final_score": score, "mean_last_3": score, "final_alpha": final_alpha, "trajectory": [],
            "outer_terms": [], "scores": scores}


def oracle(dataset: str, means: dict[float, float], spread=(-2.0, 1.0, 0.0, 2.0, -1.0)) -> list[dict]:
    return [run("td3bc", dataset, seed, mean + spread[seed], alpha=alpha) for alpha, mean in means.items() for seed in range(5)]


def aspc(dataset: str, form: str, alpha: float, score: float) -> list[dict]:
    return [run("aspc", dataset, seed, score + seed, form=form, final_alpha=alpha * (1 + 0.01 * seed)) for seed in range(5)]


def verdict(lines: list[str], heading: str, label: str) -> str:
    section = lines[next(i for i, line in enumerate(lines) if line.startswith(f"**{heading}")):]
    line = next(line for line in section if line.startswith(f"- {label}:"))
    return line.split("**")[1]


def test_criteria_verdicts_follow_the_runs(criteria):
    """The maze's best fixed alpha is 10 and pen's 0.3. The paper form orders its alphas that way,
    stays within a point of both oracles and beats alpha 2.5 on every pair (by 8-34): it meets
    criteria 1, 3 and 4. The relative form orders them the other way and falls 50 points short
    on pen: it meets none. A form without runs is pending, and so is criterion 3 until the whole
    family has run."""
    records = oracle(MAZE, {0.3: 60, 1.0: 70, 2.5: 80, 10.0: 90}) + oracle(PEN, {0.3: 110, 1.0: 95, 2.5: 80, 10.0: 40})
    records += aspc(MAZE, PAPER, 3.5, 88) + aspc(PEN, PAPER, 0.5, 109)
    records += aspc(MAZE, RELATIVE, 3.5, 88) + aspc(PEN, RELATIVE, 5.0, 60)
    lines = criteria.criteria(records, [MAZE, PEN])
    assert lines[0] == "Oracle best fixed alpha: maze 10, pen 0.3"
    assert verdict(lines, "1.", "paper L2") == "met"
    assert verdict(lines, "1.", "relative L2") == "not met"
    assert verdict(lines, "1.", "EMA L2") == "pending"
    assert verdict(lines, "3.", "paper L2") == "pending"

    records += aspc(MAZE, EMA, 3.6, 88) + aspc(PEN, EMA, 0.2, 109)
    lines = criteria.criteria(records, [MAZE, PEN])
    assert [verdict(lines, n, "paper L2") for n in ("1.", "3.", "4.")] == ["met"] * 3
    assert [verdict(lines, n, "relative L2") for n in ("1.", "3.", "4.")] == ["not met"] * 3


def test_no_verdict_before_every_seed_has_run(criteria):
    """The oracle needs all 5 seeds of every fixed alpha; a criterion needs all seeds of its arms."""
    best, means = criteria.oracle_best(oracle(MAZE, {0.3: 60, 2.5: 80, 10.0: 90}), MAZE)
    assert best is None and means == {0.3: 60, 2.5: 80, 10.0: 90}
    records = oracle(MAZE, {0.3: 60, 1.0: 70, 2.5: 80, 10.0: 90}) + oracle(PEN, {0.3: 110, 1.0: 95, 2.5: 80, 10.0: 40})
    for form, maze_alpha, pen_alpha in ((PAPER, 3.5, 0.5), (EMA, 3.6, 0.2), (RELATIVE, 3.5, 5.0)):
        records += aspc(MAZE, form, maze_alpha, 88) + aspc(PEN, form, pen_alpha, 109)
    one_seed_short = [r for r in records if not (r["algorithm"] == "aspc" and r["form"] == PAPER and r["dataset"] == PEN
                                                  and r["seed"] == 4)]
    lines = criteria.criteria(one_seed_short, [MAZE, PEN])
    assert [verdict(lines, n, "paper L2") for n in ("1.", "3.", "4.")] == ["pending"] * 3
    assert verdict(lines, "1.", "EMA L2") == "met" and verdict(lines, "3.", "EMA L2") == "pending"  # 3 waits for the family
    alpha_short = [r for r in records if not (r["algorithm"] == "td3bc" and r["alpha"] == 1.0 and r["seed"] == 0)]
    assert criteria.criteria(alpha_short, [MAZE, PEN])[0] == "Oracle best fixed alpha: maze pending, pen pending"


def test_a_failure_no_pending_run_can_undo_is_reported_at_once(criteria):
    """A third dataset (mixed) has no runs yet. The relative form already orders the complete pair
    the wrong way, and falls 50 points short of pen's oracle on all 5 seeds: neither verdict can
    change, so both read "not met" now. The paper form agrees and is close so far: pending. A
    shortfall on 4 of 5 seeds decides nothing."""
    records = oracle(MAZE, {0.3: 60, 1.0: 70, 2.5: 80, 10.0: 90}) + oracle(PEN, {0.3: 110, 1.0: 95, 2.5: 80, 10.0: 40})
    records += aspc(MAZE, PAPER, 3.5, 88) + aspc(PEN, PAPER, 0.5, 109)
    records += aspc(MAZE, RELATIVE, 3.5, 88) + aspc(PEN, RELATIVE, 5.0, 60)
    lines = criteria.criteria(records, [MAZE, PEN, "mixed"])
    assert verdict(lines, "1.", "relative L2") == "not met" + criteria.DECIDED_EARLY
    assert verdict(lines, "4.", "relative L2") == "not met" + criteria.DECIDED_EARLY
    assert verdict(lines, "1.", "paper L2") == verdict(lines, "4.", "paper L2") == "pending"
    four_seeds = [r for r in records if not (r["form"] == RELATIVE and r["dataset"] == PEN and r["seed"] == 4)]
    assert verdict(criteria.criteria(four_seeds, [MAZE, PEN, "mixed"]), "4.", "relative L2") == "pending"


def test_an_ordering_with_nothing_to_order_is_untestable(criteria):
    records = oracle(MAZE, {0.3: 60, 1.0: 70, 2.5: 80, 10.0: 90}) + oracle(PEN, {0.3: 60, 1.0: 70, 2.5: 80, 10.0: 90})
    records += aspc(MAZE, PAPER, 3.5, 88) + aspc(PEN, PAPER, 0.5, 88)
    assert verdict(criteria.criteria(records, [MAZE, PEN]), "1.", "paper L2").startswith("untestable")


def test_oracle_table_pairs_each_alpha_with_the_best_and_reports_the_climb(criteria):
    records = oracle(MAZE, {1.0: 70, 2.5: 80, 10.0: 90}) + oracle(MAZE, {0.3: 60}, spread=(0.0,) * 5)
    records += [run("td3bc", PEN, seed, 100.0 + seed, alpha=0.3, score_40k=90.0) for seed in range(5)]
    rows = criteria.oracle_table(records, [MAZE, PEN])
    maze_03 = next(row for row in rows if row.startswith(f"| {MAZE} | 0.3 |"))
    assert "| -30.0 ± 1.6 | 5 |" in maze_03  # 60 against 90 + (-2, 1, 0, 2, -1): the SD is the spread's
    assert f"| {MAZE} | 10 (best) |" in "\n".join(rows)
    pen = next(row for row in rows if row.startswith(f"| {PEN} (oracle incomplete) | 0.3 (best) |"))
    assert pen.endswith("| +12.0 |")  # final (100..104, mean 102) minus the 40k score 90


def test_aspc_against_each_fixed_alpha_pairs_by_seed_per_dataset_and_form(criteria):
    """The paper form scores 88 + seed on the maze and 100 + seed on pen, where only alpha 0.3 has
    run; on the maze the EMA form has one seed (a count, no test) and the relative form none (no row)."""
    records = oracle(MAZE, {0.3: 60, 1.0: 70, 2.5: 80, 10.0: 90}) + aspc(MAZE, PAPER, 3.5, 88)
    records += aspc(MAZE, EMA, 3.5, 88)[:1] + oracle(PEN, {0.3: 110}) + aspc(PEN, PAPER, 0.5, 100)
    rows = criteria.aspc_vs_fixed_table(records, [MAZE, PEN])
    # 88..92 against 60 + (-2, 1, 0, 2, -1): differences 30, 28, 30, 29, 33
    assert rows[2].startswith(f"| {MAZE} | paper L2 | +30.0 ± 1.9 (p 3.6e-06, 5 pairs) | +20.0 ± 1.9 ")
    assert rows[2].endswith("| +0.0 ± 1.9 (p 1, 5 pairs) |")
    assert rows[3] == f"| {MAZE} | EMA L2 | 1 pairs | 1 pairs | 1 pairs | 1 pairs |"
    assert rows[4].startswith(f"| {PEN} | paper L2 | -8.0 ± 1.9 (p ") and rows[4].endswith("5 pairs) |  |  |  |")
    assert len(rows) == 5


def test_pooled_table_pairs_aspc_with_one_alpha_everywhere_and_with_each_datasets_best(criteria):
    """The maze's best alpha is 10 (90), pen's 0.3 (110); ASPC scores 88 + seed and 100 + seed."""
    records = oracle(MAZE, {0.3: 60, 1.0: 70, 2.5: 80, 10.0: 90}) + aspc(MAZE, PAPER, 3.5, 88)
    records += oracle(PEN, {0.3: 110, 1.0: 100, 2.5: 90, 10.0: 50})
    assert "| aspc, paper L2 | 5 of 10 runs |" in criteria.pooled_table(records, [MAZE, PEN])[-3]
    records += aspc(PEN, PAPER, 0.5, 100)
    rows = criteria.pooled_table(records, [MAZE, PEN])
    assert "| td3bc, alpha 2.5 | 85.0 |" in rows[4] and "| td3bc, each dataset's best | 100.0 |" in rows[6]
    paper = next(row for row in rows if row.startswith("| aspc, paper L2 | 96.0 |"))
    # against the best: 0, -2, 0, -1, +3 on the maze and -8, -10, -8, -9, -5 on pen
    assert paper.endswith("| -4.0 ± 4.6 (p 0.022, 10 pairs) |")
    assert criteria.pooled_table(records[5:], [MAZE, PEN]) == []  # the maze's alpha 0.3 lost a seed: no best yet


def test_invariance_table_has_a_row_per_form_and_scale_with_the_sign_of_alphas_push(criteria):
    """At x0.1 the meta-gradient pushes alpha down in 1 of 2 logged updates, at x10 in both."""
    def scaled(scale: float, seed: int, grads: tuple[float, float]) -> dict:
        record = run("aspc", criteria.INVARIANCE_DATASET, seed, 100.0 + seed, form=PAPER, final_alpha=scale * (1 + seed))
        terms = [{"q_mean": 300 * scale, "outer/l1": -1.0, "outer/l2": scale ** 2, "outer/l3": 0.0, "grad/alpha": g} for g in grads]
        return {**record, "scale": scale, "outer_terms": terms}

    records = [scaled(0.1, seed, (-1.0, 1.0)) for seed in range(2)] + [scaled(10.0, seed, (1.0, 2.0)) for seed in range(2)]
    rows = criteria.invariance_table(records)
    assert rows[2:] == ["| paper L2 | x0.1 | 2 | 100.5 ± 0.7 | 0.15 [0.10, 0.20] | 30 | -1 | 0.01 | 0 | 0 | 50% |",
                        "| paper L2 | x10 | 2 | 100.5 ± 0.7 | 15.00 [10.00, 20.00] | 3e+03 | -1 | 100 | 0 | 1.5 | 100% |"]


def test_run_grid_reorders_seed_major_with_preferred_settings_first():
    run_grid = load("run_grid")

    def job(algorithm: str, value: float, seeds: list[int]):
        key = "alpha" if algorithm == "td3bc" else "outer_losses"
        spec = {"datasets": [MAZE], "algorithms": {algorithm: {"sweep": {key: [value]}}}}
        return run_grid.Job(spec, seeds)

    jobs = [job("aspc", "ema", [0, 1]), job("td3bc", 0.3, [1, 2]), job("td3bc", 10.0, [0, 1, 2])]
    assert run_grid.reorder(jobs, False, []) == jobs
    order = [(job.name.split(" ")[0], job.seeds) for job in run_grid.reorder(jobs, True, ["alpha=10.0"])]
    assert order == [("td3bc(alpha=10.0)", [0]), ("td3bc(alpha=10.0)", [1]), ("td3bc(alpha=10.0)", [2]),
                     ("aspc(outer_losses=ema)", [0]), ("aspc(outer_losses=ema)", [1]), ("td3bc(alpha=0.3)", [1]),
                     ("td3bc(alpha=0.3)", [2])]
