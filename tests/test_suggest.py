"""One "did you mean" for every registry: the same message shape, with the close names."""

from __future__ import annotations

import pytest

from metaconstraint.suggest import close_matches, did_you_mean, unknown_name


def test_close_matches_ignore_case_and_keep_the_registrys_spelling():
    assert close_matches("ASPZ", ["aspc", "iql", "td3bc"]) == ["aspc"]
    assert close_matches("d4rl/pen/human-v2", ["D4RL/pen/human-v2"]) == ["D4RL/pen/human-v2"]
    assert close_matches("zzz", ["aspc", "iql"]) == []
    assert did_you_mean("zzz", ["aspc"]) == ""


def test_the_message_shape():
    assert unknown_name("algorithm", "aspz", ["td3bc", "aspc"]) == (
        "unknown algorithm 'aspz'. Did you mean aspc? Known algorithm names: aspc, td3bc."
    )
    assert unknown_name("dataset", "x", ["y"], why="not a short name", list_known=False, advice="See the list.") == (
        "unknown dataset 'x': not a short name. See the list."
    )


def algorithm():
    from metaconstraint.config import algorithm_class

    algorithm_class("aspz")


def config_key():
    from metaconstraint.config import build_configs

    build_configs({"algorithm": "aspc", "dataset": "pen-human", "alpha_lrr": 0.1})


def tracker():
    from metaconstraint.config import build_configs

    build_configs({"algorithm": "td3bc", "dataset": "pen-human", "loggers": ["tensorbord"]})


def outer_loss():
    from metaconstraint.outer_losses import resolve_outer_loss

    resolve_outer_loss("l22")


def objective():
    from metaconstraint.objectives import resolve_objective

    resolve_objective("td3bx")


def dataset():
    from metaconstraint.rl.data import resolve_dataset_id

    resolve_dataset_id("pen-humen")


def preset():
    from metaconstraint.config import build_configs

    build_configs({"algorithm": "rebrac", "dataset": "pen-human", "preset": "corl-adroti"})


def environment():
    from metaconstraint.rl.collect import make_env_spec

    make_env_spec("Pendulm-v1")


def member_field():
    from metaconstraint.algorithms import ALGORITHMS
    from metaconstraint.members import check_member_fields

    check_member_fields(ALGORITHMS["td3bc"], ["alpah"])


def sweep_run_option():
    from metaconstraint.sweep import parse_sweep

    parse_sweep({"datasets": ["pen-human"], "algorithms": {"td3bc": {}}, "run": {"stepz": 10}})


def sweep_field():
    from metaconstraint.sweep import parse_sweep

    parse_sweep({"datasets": ["pen-human"], "algorithms": {"td3bc": {"sweep": {"alpah": [1, 2]}}}})


def sweep_key():
    from metaconstraint.sweep import parse_sweep

    parse_sweep({"datasets": ["pen-human"], "algoritms": {"td3bc": {}}})


def paired_test():
    from metaconstraint.stats import paired_comparisons

    paired_comparisons({"aspc": {}}, "aspc", test="wilcoxn")


def reference():
    from metaconstraint.stats import paired_comparisons

    paired_comparisons({"aspc": {}, "td3bc": {}}, "aspx")


def export_format():
    from metaconstraint.export import export_policy

    export_policy("no-run", "onxx")


def maze():
    from metaconstraint.rl.pointmaze import pointmaze_controller

    pointmaze_controller("mediun")


@pytest.mark.parametrize(
    "lookup, unknown, suggestion",
    [
        (algorithm, "unknown algorithm 'aspz'", "aspc"),
        (config_key, "unknown configuration key 'alpha_lrr'", "alpha_lr"),
        (tracker, "unknown tracker 'tensorbord'", "tensorboard"),
        (outer_loss, "unknown outer loss 'l22'", "l2"),
        (objective, "unknown inner objective 'td3bx'", "td3bc"),
        (dataset, "unknown dataset 'pen-humen'", "pen-human"),
        (preset, "unknown preset 'corl-adroti'", "corl-adroit"),
        (environment, "unknown environment 'Pendulm-v1'", "Pendulum-v1"),
        (member_field, "td3bc cannot train members that differ in alpah", "alpha"),
        (sweep_run_option, "unknown run option 'stepz'", "steps"),
        (sweep_field, "unknown td3bc config field 'alpah'", "alpha"),
        (sweep_key, "unknown key 'algoritms'", "algorithms"),
        (paired_test, "unknown paired test 'wilcoxn'", "wilcoxon"),
        (reference, "unknown reference algorithm 'aspx'", "aspc"),
        (export_format, "unknown export format 'onxx'", "onnx"),
        (maze, "unknown maze 'mediun'", "medium"),
    ],
    ids=lambda value: getattr(value, "__name__", None),
)
def test_every_registry_suggests_close_names_in_the_same_shape(lookup, unknown, suggestion, monkeypatch, tmp_path):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setenv("METACONSTRAINT_HOME", str(tmp_path / "home"))
    with pytest.raises(Exception) as caught:
        lookup()
    message = " ".join(str(caught.value).split())
    assert unknown in message, message
    assert f"Did you mean {suggestion}" in message, message
    assert "Traceback" not in message
