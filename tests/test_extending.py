"""The extension points: user outer losses share the one computed-once context, objectives and
algorithms by name, import path or configuration, and clear errors for bad specifications."""

import pytest
import torch
from typer.testing import CliRunner

from metaconstraint.algorithms import ALGORITHMS, ASPC, ASPCConfig, ProblemSpec, define_algorithm
from metaconstraint.cli import app
from metaconstraint.config import ConfigError, build_configs
from metaconstraint.engine import MetaParameters, bilevel_step
from metaconstraint.engine.bilevel import OuterLoss
from metaconstraint.objectives import ObjectiveError, TD3BCObjective, resolve_objective
from metaconstraint.outer_losses import OuterLossError, resolve_outer_loss

SPEC = ProblemSpec(5, 3, 1.0, 1000)
CPU = torch.device("cpu")


def test_user_losses_get_the_same_context_and_its_quantities_are_computed_once():
    seen = []

    def record(ctx):
        seen.append((ctx.q_updated, ctx.updated_policy_actions, ctx.meta["alpha"]))
        return ctx.q_updated.mean() * 0.0

    def stateful(ctx):
        seen.append((ctx.q_updated, ctx.updated_policy_actions, ctx.meta["alpha"]))
        return (ctx.updated_policy_actions - ctx.policy_actions).pow(2).sum()

    def count_calls(ctx):
        return {"calls": ctx.state["calls"] + 1}

    algorithm = ASPC(ASPCConfig(), SPEC, 1, CPU)
    losses = [resolve_outer_loss("l2"), OuterLoss("record", record), OuterLoss("stateful", stateful, 2.0, {"calls": 0.0}, count_calls)]
    problem = type(algorithm.problem)(
        inner_objective=algorithm.problem.inner_objective, optimizer=algorithm.problem.optimizer, outer_losses=losses,
        meta_parameters=algorithm.problem.meta_parameters, make_context=algorithm.problem.make_context,
    )
    state = algorithm.init_state([0])
    g = torch.Generator().manual_seed(0)
    batch = {"observations": torch.randn(1, 8, 5, generator=g), "actions": torch.rand(1, 8, 3, generator=g) * 2 - 1}
    outer_state = problem.init_outer_state()
    _, _, meta, outer_state, info = bilevel_step(
        problem, state["actor"], state["actor_opt"], state["meta"], batch, {"critic": state["critic"]}, outer_state
    )
    (q_a, actions_a, alpha_a), (q_b, actions_b, alpha_b) = seen
    assert q_a is q_b and actions_a is actions_b  # one critic pass, one actor pass, shared
    assert not alpha_a.requires_grad and alpha_a.item() == pytest.approx(2.5)  # the scale is a constant for the losses
    assert outer_state["stateful"]["calls"].item() == 1.0
    assert torch.isfinite(info["grad/alpha"]).all() and info["grad/alpha"].item() != 0.0
    assert info["outer_loss"].item() == pytest.approx(info["outer/l2"].item() + 2.0 * info["outer/stateful"].item(), rel=1e-5)


def test_objectives_by_name_and_import_path():
    assert resolve_objective("td3bc") is TD3BCObjective
    assert resolve_objective("metaconstraint.objectives.td3bc:TD3BCObjective") is TD3BCObjective
    algorithm = ASPC(ASPCConfig(objective="metaconstraint.objectives.rebrac:ReBRACObjective"), SPEC, 1, CPU)
    assert algorithm.objective.scale_name == "beta"  # the meta-parameter is named by the objective
    assert list(MetaParameters.values(algorithm.init_state([0])["meta"]["raw"])) == ["beta"]
    for spec, message in (
        ("td3bx", "Did you mean td3bc"),
        ("no_such_module:Thing", "cannot import module 'no_such_module'"),
        ("metaconstraint.objectives.td3bc:Nope", "has no attribute 'Nope'"),
        ("metaconstraint.objectives.td3bc:", "an import path is 'module:attribute'"),
    ):
        with pytest.raises(ObjectiveError, match=message):
            resolve_objective(spec)
    with pytest.raises(OuterLossError, match="cannot import module"):
        resolve_outer_loss("no_such_module:loss=0.5")
    with pytest.raises(ConfigError, match="objective"):
        build_configs({"algorithm": "aspc", "dataset": "x", "objective": "awx"})


@pytest.mark.parametrize("objective,algorithm,scale", [
    ("td3bc", "aspc", "alpha"), ("awr", "aspc-iql", "beta"), ("wpc", "aspc-wpc", "alpha"),
    ("a2pr", "aspc-a2pr", "alpha"), ("rebrac", "aspc-rebrac", "beta"),
])
def test_aspc_takes_every_registered_objective_on_the_backbone_it_names(objective, algorithm, scale):
    """aspc --objective X runs X's backbone with the learned scale; the scale starts at the backbone's own value."""
    run, config = build_configs({"algorithm": "aspc", "dataset": "dapg/pen/expert-v0", "objective": objective})
    assert run.algorithm == algorithm and config.objective == objective
    built = ALGORITHMS[algorithm](config, ProblemSpec(5, 2, 1.0, 100), 1, torch.device("cpu"))
    assert built.scale.learned and built.scale.name == scale
    assert list(built.meta_parameters(built.init_state([0]))) == [scale]


def test_old_config_names_of_the_learned_scale_still_read():
    _, aspc = build_configs({"algorithm": "aspc", "dataset": "x", "alpha_lr": 0.01, "alpha_interval": 3,
                             "alpha_lr_decay_steps": "run", "alpha_final_lr_fraction": 0.1})
    _, iql = build_configs({"algorithm": "aspc-iql", "dataset": "x", "beta_lr": 0.01, "beta_interval": 3,
                            "beta_lr_decay_steps": "run", "beta_final_lr_fraction": 0.1})
    for config in (aspc, iql):
        assert (config.scale_lr, config.scale_interval, config.scale_lr_decay_steps, config.scale_final_lr_fraction) == (0.01, 3, "run", 0.1)
        assert "scale_lr" in config.model_dump() and "alpha_lr" not in config.model_dump()  # written under the new names


def test_an_algorithm_is_a_configuration():
    try:
        cls = define_algorithm("aspc-l1-test", "aspc", outer_losses=["l1"], alpha=1.0)
        assert ALGORITHMS["aspc-l1-test"] is cls and issubclass(cls, ASPC)
        _, config = build_configs({"algorithm": "aspc-l1-test", "dataset": "x"})
        assert (config.outer_losses, config.alpha, config.scale_lr) == (["l1"], 1.0, 2e-3)
        _, config = build_configs({"algorithm": "aspc-l1-test", "dataset": "x", "alpha": 4.0})
        assert config.alpha == 4.0  # a run's keys override the definition's defaults
        with pytest.raises(ValueError):
            define_algorithm("aspc-bad-test", "aspc", alpha=-1.0)
    finally:
        ALGORITHMS.pop("aspc-l1-test", None)
    assert "aspc-bad-test" not in ALGORITHMS


@pytest.mark.parametrize("args,message", [
    (["--objective", "nope_module:Objective"], "cannot import module 'nope_module'"),
    (["--outer-loss", "l1", "--outer-loss", "nope_module:loss"], "cannot import module 'nope_module'"),
    (["--objective", "rebrac"], "objective 'rebrac' needs the rebrac backbone"),  # aspc-iql runs IQL's
])
def test_cli_rejects_bad_user_code_paths_with_a_message(tmp_path, args, message):
    algorithm = "aspc-iql" if "rebrac" in args else "aspc"
    result = CliRunner().invoke(app, ["run", algorithm, "--dataset", "dapg/pen/expert-v0", "--steps", "10", *args, "--out", str(tmp_path)],
                                env={"METACONSTRAINT_OFFLINE": "1"})
    assert result.exit_code == 2 and message in " ".join(result.output.split())
    assert "Traceback" not in result.output


BAD_LOSSES = '''
import torch


def text(ctx):
    return "a string"


def constant(ctx):
    return torch.tensor(1.0)


def detached(ctx):
    return ctx.q_updated.mean().detach()


def per_sample(ctx):
    return (ctx.updated_policy_actions - ctx.policy_actions).pow(2).sum(-1)
'''


@pytest.mark.parametrize("losses,message", [
    (["bad_outer_losses:text"], "outer loss 'bad_outer_losses:text' returned str 'a string'; an outer loss returns a scalar tensor"),
    (["bad_outer_losses:constant"], "outer loss 'bad_outer_losses:constant' returned a tensor that does not depend on the parameters after the inner step"),
    (["l1", "bad_outer_losses:detached"], "outer loss 'bad_outer_losses:detached' returned a tensor that does not depend on the parameters"),
    (["bad_outer_losses:per_sample"], "outer loss 'bad_outer_losses:per_sample' returned a tensor of shape (256,) for one member; it must be a scalar"),
], ids=["string", "constant", "detached-beside-l1", "not-reduced"])
def test_an_outer_loss_returning_the_wrong_thing_is_named_at_its_first_call(tmp_path, monkeypatch, losses, message):
    """User code fails with what it returned and what was expected: exit 2, no traceback (the first
    meta-iteration, 20, is where an outer loss is first called)."""
    (tmp_path / "bad_outer_losses.py").write_text(BAD_LOSSES)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "bad_outer_losses", raising=False)
    args = ["run", "aspc", "--dataset", "dapg/pen/expert-v0", "--steps", "20", "--eval-every", "20", "--eval-episodes", "1",
            *[arg for loss in losses for arg in ("--outer-loss", loss)], "--out", str(tmp_path / "runs")]
    result = CliRunner().invoke(app, args, env={"METACONSTRAINT_OFFLINE": "1"})
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
