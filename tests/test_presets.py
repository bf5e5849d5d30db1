"""Baselines as reported: ReBRAC's and IQL's settings resolved per dataset family by ``preset``, IQL's
constant actor learning rate, A2PR's public-code networks, what ran recorded in config.toml, and the
report's labels that keep runs under other settings (and older runs without a preset) apart."""

import json
import math
import tomllib

import pytest
import torch

from metaconstraint.algorithms import A2PR, IQL, A2PRConfig, IQLConfig, ProblemSpec, ReBRAC
from metaconstraint.algorithms.presets import dataset_task
from metaconstraint.config import ConfigError, build_configs, resolved_config, to_toml
from metaconstraint.report import collect_runs

CPU = torch.device("cpu")
SPEC = ProblemSpec(5, 3, 1.0, 1000)


def resolved(algorithm, dataset, **keys):
    return build_configs({"algorithm": algorithm, "dataset": dataset, **keys})[1]


@pytest.mark.parametrize("name, expected", [
    ("pen-human", ("pen", "human")), ("D4RL/door/expert-v2", ("door", "expert")), ("dapg/pen/mixed-v0", ("pen", "mixed")),
    ("builtin/pendulum/medium-v0", ("pendulum", "medium")), ("hopper-medium+hopper-expert", ("hopper", "medium")),
])
def test_dataset_task_reads_short_names_and_ids(name, expected):
    assert dataset_task(name) == expected


@pytest.mark.parametrize("dataset, coefficients", [
    ("pen-human", (0.1, 0.5)), ("D4RL/pen/expert-v2", (0.01, 0.01)), ("door-human", (0.1, 0.1)),
    ("door-expert", (0.05, 0.01)), ("hammer-expert", (0.01, 0.01)),
    ("dapg/pen/mixed-v0", (0.01, 0.01)),  # not tuned by CORL: its task's expert entry
])
def test_rebrac_auto_takes_corls_adroit_config_per_dataset(dataset, coefficients):
    config = resolved("rebrac", dataset)
    assert config.preset == "corl-adroit"
    assert (config.batch_size, config.actor_lr, config.critic_lr) == (256, 3e-4, 3e-4)
    assert (config.actor_bc_coef, config.critic_bc_coef) == coefficients
    algorithm = ReBRAC(config, SPEC, 1, CPU)
    assert algorithm.batch_size == 256 and algorithm.scale.values({})["beta"].item() == pytest.approx(coefficients[0])


def test_rebrac_locomotion_setting_elsewhere_or_by_name_and_given_keys_win():
    elsewhere = resolved("rebrac", "builtin/pendulum/medium-v0")
    assert elsewhere.preset == "corl-locomotion"
    assert (elsewhere.batch_size, elsewhere.actor_lr, elsewhere.actor_bc_coef, elsewhere.critic_bc_coef) == (1024, 1e-3, 1.0, 1.0)
    on_adroit = resolved("rebrac", "pen-human", preset="corl-locomotion")
    assert (on_adroit.batch_size, on_adroit.actor_bc_coef) == (1024, 1.0)
    mine = resolved("rebrac", "pen-human", actor_bc_coef=0.3, batch_size=512)
    assert (mine.preset, mine.actor_bc_coef, mine.critic_bc_coef, mine.batch_size) == ("corl-adroit", 0.3, 0.5, 512)


def test_rebrac_preset_errors_are_clear():
    with pytest.raises(ConfigError, match="no values for dataset 'relocate-human'.*give actor_bc_coef, critic_bc_coef"):
        resolved("rebrac", "relocate-human")
    assert resolved("rebrac", "relocate-human", actor_bc_coef=0.2, critic_bc_coef=0.1).batch_size == 256
    with pytest.raises(ConfigError, match="unknown preset 'corl'"):
        resolved("rebrac", "pen-human", preset="corl")


@pytest.mark.parametrize("algorithm, dataset", [("rebrac", "pen-human"), ("iql", "door-human"), ("a2pr", "pen-human"),
                                                ("aspc-iql", "pen-expert")])
def test_config_toml_records_the_preset_and_reads_back_unchanged(algorithm, dataset):
    run, config = build_configs({"algorithm": algorithm, "dataset": dataset})
    written = resolved_config(run, config)
    assert written["preset"] != "auto"
    again = resolved_config(*build_configs(tomllib.loads(to_toml(written))))
    assert again == written
    # the recorded values hold on another dataset too: a file's keys are given keys
    assert resolved_config(*build_configs({**written, "dataset": "builtin/pendulum/medium-v0"}))["batch_size"] == written["batch_size"]


def test_iql_presets_by_family():
    adroit = resolved("iql", "pen-human")
    assert adroit.preset == "corl-adroit"
    assert (adroit.expectile, adroit.beta, adroit.actor_dropout, adroit.actor_lr, adroit.batch_size) == (0.8, 3.0, 0.1, 3e-4, 256)
    antmaze = resolved("iql", "antmaze-umaze")
    assert (antmaze.preset, antmaze.expectile, antmaze.beta) == ("paper-antmaze", 0.9, 10.0)
    other = resolved("iql", "builtin/pendulum/medium-v0")
    assert (other.preset, other.expectile, other.beta, other.actor_dropout) == ("paper-locomotion", 0.7, 3.0, 0.0)
    learned = resolved("aspc-iql", "pen-expert", beta=1.0)
    assert (learned.preset, learned.expectile, learned.beta) == ("corl-adroit", 0.8, 1.0)


def test_iql_actor_rate_is_constant_by_default_and_the_cosine_freezes_the_policy_at_the_end():
    steps = 20_000
    spec = ProblemSpec(5, 3, 1.0, steps)
    constant = IQL(IQLConfig(), spec, 1, CPU)
    rate = lambda algorithm, iteration: algorithm.actor_optimizer.rate_at(iteration - 1)  # noqa: E731  (one actor step per iteration)
    assert [rate(constant, i) for i in (1, steps // 2, steps)] == [3e-4] * 3
    cosine = IQL(IQLConfig(actor_lr_schedule="cosine"), spec, 1, CPU)
    assert rate(cosine, 1) == 3e-4
    # over the last 20% of the run below 10% of the rate, over the last 3% below 0.3%
    assert rate(cosine, int(0.8 * steps) + 1) < 0.1 * 3e-4 and rate(cosine, int(0.97 * steps) + 1) < 0.003 * 3e-4
    # the actor's Adam step is this rate: at the last iteration the policy barely moves
    state = cosine.init_state([0])
    batch = {"observations": torch.randn(1, 32, 5), "actions": torch.rand(1, 32, 3) * 2 - 1}
    frozen = {"critic": state["critic"], "advantages": torch.randn(1, 32)}
    state["actor_opt"]["count"] = steps - 1  # the schedule reads the optimizer's step count: the last iteration's step
    before = {k: v.clone() for k, v in state["actor"].items()}
    cosine.update_actor(state, batch, frozen, steps)
    moved_late = max((state["actor"][k] - before[k]).abs().max().item() for k in before)
    state = constant.init_state([0])
    before = {k: v.clone() for k, v in state["actor"].items()}
    constant.update_actor(state, batch, frozen, steps)
    moved_constant = max((state["actor"][k] - before[k]).abs().max().item() for k in before)
    assert moved_constant == pytest.approx(3e-4, rel=0.05) and moved_late < 1e-3 * moved_constant


def hidden_layers(params, prefix="w"):
    return sorted(k for k in params if k.startswith(prefix) and k[len(prefix):].isdigit())


def test_a2pr_networks_are_the_public_codes_by_default():
    state = A2PR(A2PRConfig(), SPEC, 1, CPU).init_state([0])
    widths = lambda params: [tuple(params[k].shape[-2:]) for k in hidden_layers(params)]  # noqa: E731  (in, out)
    assert widths(state["actor"]) == [(5, 256), (256, 256), (256, 256), (256, 3)]  # 3 x 256
    assert widths(state["value"]) == [(5, 256), (256, 256), (256, 256), (256, 256), (256, 1)]  # 4 x 256
    assert widths(state["critic"]) == [(8, 256), (256, 256), (256, 256), (256, 256), (256, 1)]  # 4 x 256, twin
    assert state["critic"]["w0"].shape[1] == 2 and not any(k.startswith("ln") for k in state["critic"])
    small = A2PR(resolved("a2pr", "pen-human", preset="reference-2x256"), SPEC, 1, CPU).init_state([0])
    assert [len(hidden_layers(small[n])) for n in ("actor", "critic", "value")] == [3, 3, 3]  # 2 x 256 each


# ----------------------------------------------------------------------------- labels in the report
def write_run(root, algorithm, seed, score, preset=None, tag=None):
    folder = root / algorithm / "dapg__pen__expert-v0" / (f"seed{seed}" + (f"-{tag}" if tag else ""))
    folder.mkdir(parents=True)
    summary = {"algorithm": algorithm, "dataset": "dapg/pen/expert-v0", "seed": seed, "final_score": score,
               "final_score_rule": "last", "scores": [{"step": 10, "score": score}], "steps": 10}
    (folder / "summary.json").write_text(json.dumps(summary))
    config = {"algorithm": algorithm, "dataset": "dapg/pen/expert-v0", **({"preset": preset} if preset else {})}
    (folder / "config.toml").write_text(to_toml(config))


def test_report_labels_runs_by_preset_and_keeps_older_runs_apart(tmp_path):
    write_run(tmp_path / "old", "rebrac", 0, 50.0)  # the 20k grid's: no preset key
    write_run(tmp_path / "new", "rebrac", 0, 90.0, preset="corl-adroit")
    write_run(tmp_path / "new", "rebrac", 1, 80.0, preset="corl-locomotion", tag="lr")
    labels = {run.algorithm: run.final_score for run in collect_runs(tmp_path)}
    assert labels == {"rebrac": 50.0, "rebrac (corl-adroit)": 90.0, "rebrac (corl-locomotion, lr)": 80.0}
    assert math.isfinite(sum(labels.values()))
