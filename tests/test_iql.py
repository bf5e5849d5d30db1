"""IQL and ASPC-IQL: the losses as defined, the meta-gradient through AWR against finite
differences, beta -> 0 as plain likelihood, beta fixed vs learned, stacked seeds = separate runs."""

import math

import pytest
import torch
import torch.nn.functional as F

from metaconstraint.algorithms import ASPCIQL, IQL, ASPCIQLConfig, IQLConfig, ProblemSpec
from metaconstraint.algorithms.iql import expectile_loss
from metaconstraint.config import build_configs
from metaconstraint.engine import (
    BilevelProblem, MetaParameter, MetaParameters, adam, bilevel_step, cosine_decay, inner_step, inverse_softplus, member,
)
from metaconstraint.objectives.awr import AWRObjective, awr_loss, awr_weights
from metaconstraint.outer_losses import PolicyContext, context_factory, resolve_outer_losses
from metaconstraint.rl.buffer import MemberSampler
from metaconstraint.rl.networks import dropout_masks, gaussian_actor, twin_critic
from metaconstraint.runs import MetricsLog
from metaconstraint.training import Trainer
from member_checks import train_stacked_and_alone

PEN = "dapg/pen/expert-v0"
CPU = torch.device("cpu")
F64 = torch.float64


def test_expectile_loss_weights_positive_and_negative_errors_asymmetrically():
    u = torch.tensor([2.0, -2.0, 1.0, -1.0])
    # |tau - 1(u<0)| u^2 with tau = 0.8: 0.8*4, 0.2*4, 0.8*1, 0.2*1
    assert expectile_loss(u, 0.8).item() == pytest.approx((3.2 + 0.8 + 0.8 + 0.2) / 4)
    assert expectile_loss(u, 0.5).item() == pytest.approx(0.5 * (4 + 4 + 1 + 1) / 4)  # tau 0.5: half the MSE
    cosine = cosine_decay(3e-4, 100)
    assert cosine(0) == 3e-4 and cosine(50) == pytest.approx(1.5e-4)
    assert cosine(100) == pytest.approx(0.0, abs=1e-20)


def test_awr_weights_are_exp_beta_a_clipped_at_100_with_finite_gradients():
    advantages = torch.tensor([-1.0, 0.0, 0.5, 2.0, 1e4])
    beta = torch.tensor(3.0, requires_grad=True)
    weights = awr_weights(beta, advantages)
    expected = torch.tensor([math.exp(-3.0), 1.0, math.exp(1.5), 100.0, 100.0])
    torch.testing.assert_close(weights.detach(), expected)
    (grad,) = torch.autograd.grad(weights.sum(), beta)
    # d/dbeta exp(beta A) = A exp(beta A) where unclipped, 0 where clipped (no NaN from exp overflow)
    assert grad.item() == pytest.approx(-math.exp(-3.0) + 0.5 * math.exp(1.5))
    log_probs = torch.tensor([-1.0, -2.0, -3.0, -4.0, -5.0])
    assert awr_loss(torch.tensor(0.0), log_probs, advantages).item() == pytest.approx(3.0)  # beta 0: mean NLL


def test_gaussian_actor_log_prob_is_the_diagonal_normal_density():
    actor = gaussian_actor(4, 3, 1.0, hidden=(8, 8))
    params = actor.init(torch.Generator().manual_seed(0))
    params["log_std"] = torch.tensor([-0.5, 0.0, 0.3])
    states, actions = torch.randn(6, 4), torch.rand(6, 3) * 2 - 1
    mean = actor.apply(params, states)
    expected = torch.distributions.Normal(mean, params["log_std"].exp()).log_prob(actions).sum(-1)
    torch.testing.assert_close(actor.log_prob(params, states, actions), expected)
    masks = dropout_masks([torch.rand(6, 8), torch.rand(6, 8)], 0.5)
    assert set(torch.cat(masks).unique().tolist()) <= {0.0, 2.0}
    assert not torch.allclose(actor.log_prob(params, states, actions, masks), expected)


# ----------------------------------------------------------------------------- meta-gradient
OBS, ACT, B = 5, 3, 16


def small_problem(losses=("l1", "l2=2.0", "l3")):
    actor = gaussian_actor(OBS, ACT, 1.0, hidden=(8, 8))
    critic = twin_critic(OBS, ACT, hidden=(8, 8), robust=False)
    objective = AWRObjective(actor, critic)
    problem = BilevelProblem(
        inner_objective=objective.inner,
        optimizer=adam(3e-3),
        outer_losses=resolve_outer_losses(list(losses)),
        meta_parameters=MetaParameters([MetaParameter("beta", init=1.5, lr=1e-3)]),
        make_context=context_factory(actor, critic, objective),
    )
    return actor, critic, objective, problem


def real_batch(seed):
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(B, OBS, generator=g, dtype=F64)
    states[:, 0] = 0.0  # a constant feature: its first-layer weights get exactly zero gradient (Adam's v = 0)
    frozen = {
        "advantages": torch.randn(B, generator=g, dtype=F64) * 1.5,  # some beta * A above log(100): clipped weights
        "dropout": dropout_masks([torch.rand(B, 8, generator=g, dtype=F64) for _ in range(2)], 0.25),
    }
    return {"observations": states, "actions": torch.rand(B, ACT, generator=g, dtype=F64) * 2 - 1}, frozen


def stack(tree):
    if isinstance(tree, torch.Tensor):
        return tree.unsqueeze(0)
    if isinstance(tree, dict):
        return {k: stack(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [stack(v) for v in tree]
    return tree


def clone(tree):
    if isinstance(tree, torch.Tensor):
        return tree.clone()
    if isinstance(tree, dict):
        return {k: clone(v) for k, v in tree.items()}
    return tree


def outer_value(problem, actor, critic, objective, params, opt_state, critic_params, rho, batch, frozen, rho0):
    """The weighted outer losses at the updated actor as a plain function of rho (no engine), for finite
    differences. As in the engine, beta enters the losses as the constant softplus(rho0) (they reach rho
    only through the updated actor) and L3's stop-gradient factor sg(L2) is held at its value at rho0."""

    def context_at(r):
        leaf = {k: v.clone().requires_grad_() for k, v in params.items()}
        beta = F.softplus(torch.tensor(r, dtype=F64))
        grads = torch.autograd.grad(objective.inner(leaf, {"beta": beta}, batch, frozen), list(leaf.values()))
        with torch.no_grad():
            updated, _ = problem.optimizer.step(dict(zip(leaf, grads)), clone(opt_state), clone(params))
        meta = {"beta": F.softplus(torch.tensor(rho0, dtype=F64))}
        return PolicyContext(params, updated, meta, batch, {**frozen, "critic": critic_params}, actor=actor, critic=critic, objective=objective)

    total = 0.0
    for loss in problem.outer_losses:
        ctx = context_at(rho)
        if loss.name == "l3":
            ctx.q_change = context_at(rho0).q_change  # sg(L2) = q_change^2 at the point of differentiation
        total = total + loss.weight * loss.fn(ctx).detach()
    return total


@pytest.mark.parametrize("losses", [("l1",), ("l2",), ("l3",), ("l1", "l2=2.0", "l3"), ("gain-rel",)], ids=["l1", "l2", "l3", "l1+2l2+l3", "gain-rel"])
def test_meta_gradient_through_awr_matches_central_finite_differences(losses):
    actor, critic, objective, problem = small_problem(losses)
    params = {k: v.to(F64) for k, v in actor.init(torch.Generator().manual_seed(1)).items()}
    critic_params = {k: v.to(F64) for k, v in critic.init(torch.Generator().manual_seed(2)).items()}
    opt_state = problem.optimizer.init(params)
    beta = torch.tensor([1.5], dtype=F64)
    for step in range(6):  # a warmed-up Adam state
        batch, frozen = real_batch(100 + step)
        new, new_opt, _ = inner_step(problem, stack(params), stack(opt_state), {"beta": beta}, stack(batch),
                                     stack({**frozen, "critic": critic_params}))
        params, opt_state = member(new, 0), member(new_opt, 0)
    assert (opt_state["exp_avg_sq"]["w0"][0] == 0).all() and (opt_state["exp_avg_sq"]["w0"][1:] > 0).all()

    batch, frozen = real_batch(7)
    assert (beta * frozen["advantages"] > math.log(100)).any()  # the clip is exercised
    meta_state = problem.meta_parameters.init(1, dtype=F64)
    _, _, _, _, info = bilevel_step(problem, stack(params), stack(opt_state), meta_state, stack(batch),
                                    stack({**frozen, "critic": critic_params}), {})
    analytic = info["grad/beta"][0].item()
    rho, h = inverse_softplus(1.5), 1e-5
    plus = outer_value(problem, actor, critic, objective, params, opt_state, critic_params, rho + h, batch, frozen, rho).item()
    minus = outer_value(problem, actor, critic, objective, params, opt_state, critic_params, rho - h, batch, frozen, rho).item()
    numeric = (plus - minus) / (2 * h)
    assert math.isfinite(analytic) and abs(numeric) > 1e-12  # not vacuous
    assert abs(analytic - numeric) <= 1e-3 * abs(numeric), (analytic, numeric)


# ----------------------------------------------------------------------------- on real data
@pytest.fixture(scope="module")
def pen(tmp_path_factory):
    run, config = build_configs({"algorithm": "iql", "dataset": PEN, "steps": 10, "out": tmp_path_factory.mktemp("pen")})
    trainer = Trainer(run, config)
    return trainer.buffer, ProblemSpec(trainer.info.observation_dim, trainer.info.action_dim, 1.0, 1000)


def likelihood_step(actor, params, opt_state, states, actions, lr):
    leaf = {k: v.detach().requires_grad_() for k, v in params.items()}
    loss = -actor.log_prob(leaf, states, actions).mean()
    grads = dict(zip(leaf, torch.autograd.grad(loss, list(leaf.values()))))
    with torch.no_grad():
        return adam(lr).step(grads, opt_state, params)[0]


@pytest.mark.parametrize("meta_iteration", [False, True], ids=["first-order step", "bilevel step"])
def test_beta_near_zero_gives_a_plain_likelihood_step(pen, meta_iteration):
    buffer, spec = pen
    algorithm = ASPCIQL(ASPCIQLConfig(beta=1e-9, actor_lr_schedule="constant"), spec, 1, CPU)
    state = algorithm.init_state([0])
    sampler = MemberSampler(buffer, 256, [0])
    for iteration in range(1, 6):
        state, _ = algorithm.update(state, sampler, iteration)
    batch = sampler.sample()
    advantages = torch.randn(1, 256) * 3  # large advantages: with beta > 0 the weights would differ a lot
    before = clone(state["actor"])
    opt_before = {k: (v if isinstance(v, int) else clone(v)) for k, v in state["actor_opt"].items()}
    iteration = algorithm.config.scale_interval if meta_iteration else 3
    algorithm.update_actor(state, batch, {"critic": state["critic"], "advantages": advantages}, iteration)
    expected = likelihood_step(
        algorithm.actor, member(before, 0, copy=True), member(opt_before, 0, copy=True),
        batch["observations"][0], batch["actions"][0], algorithm.config.actor_lr,
    )
    for k in expected:
        torch.testing.assert_close(state["actor"][k][0], expected[k], rtol=1e-5, atol=1e-7)
    assert max((state["actor"][k] - before[k]).abs().max().item() for k in before) > 1e-5


@pytest.mark.parametrize("cls,config", [
    (IQL, IQLConfig(actor_dropout=0.1)), (ASPCIQL, ASPCIQLConfig(scale_interval=2, actor_dropout=0.1)),
], ids=["iql", "aspc-iql"])
def test_stacked_seeds_equal_separate_runs(pen, cls, config):
    buffer, spec = pen
    state, alone = train_stacked_and_alone(cls, config, buffer, spec, [3, 4], 6, CPU)
    for k, own in enumerate(alone):
        for name in ("actor", "critic", "value", "target_critic"):
            for key in own[name]:
                torch.testing.assert_close(state[name][key][k], own[name][key][0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(state["meta"]["raw"].get("beta", torch.zeros(2))[k],
                                   own["meta"]["raw"].get("beta", torch.zeros(1))[0], rtol=1e-5, atol=1e-7)


def test_iql_beta_is_fixed_and_aspc_iql_beta_moves(tmp_path):
    values = {"dataset": PEN, "steps": 100, "eval_every": 100, "eval_episodes": 2, "log_every": 20, "out": tmp_path}
    run, config = build_configs({**values, "algorithm": "aspc-iql", "scale_lr_decay_steps": 1_000_000})
    trainer = Trainer(run, config)
    summary = trainer.fit()[0]
    betas = [row["scale/beta"] for row in MetricsLog.read(trainer.directories[0])]
    assert len(set(betas)) == len(betas) and summary["final_scale"] != pytest.approx(3.0, abs=1e-3) and summary["scale_name"] == "beta"
    assert summary["meta_parameters"] == {"beta": pytest.approx(summary["final_scale"])}
    run, config = build_configs({**values, "algorithm": "iql", "steps": 20, "eval_every": 20})
    plain = Trainer(run, config).fit()[0]
    assert "final_scale" not in plain and plain["meta_parameters"] == {}


def test_iql_beta_stays_fixed(pen):
    """Past two of the iterations where ASPC-IQL moves its beta (20, 40), IQL's actor step still
    minimises the advantage-weighted likelihood at the configured beta."""
    buffer, spec = pen
    algorithm = IQL(IQLConfig(beta=3.0), spec, 1, CPU)
    state = algorithm.init_state([0])
    sampler = MemberSampler(buffer, 256, [0])
    for iteration in range(1, 42):
        state, _ = algorithm.update(state, sampler, iteration)
    batch = sampler.sample()
    advantages = torch.randn(1, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        one = member(batch, 0)
        log_probs = algorithm.actor.log_prob(member(state["actor"], 0), one["observations"], one["actions"])
        expected = awr_loss(torch.tensor(3.0), log_probs, advantages[0])
        assert (expected - awr_loss(torch.tensor(2.9), log_probs, advantages[0])).abs() > 1e-3  # beta matters here
    metrics = algorithm.update_actor(state, batch, {"critic": state["critic"], "advantages": advantages}, 42)
    torch.testing.assert_close(metrics["actor_loss"][0], expected, rtol=1e-5, atol=1e-6)


def test_cli_trains_on_door_human_with_its_constant_state_features(tmp_path):
    """door-human has state features that are constant in the data (zero gradients, Adam's v = 0):
    the meta-gradient must stay finite there."""
    import json

    from typer.testing import CliRunner

    from metaconstraint.cli import app

    algorithm = "aspc-iql"
    args = ["run", algorithm, "--dataset", "D4RL/door/human-v2", "--steps", "40", "--eval-every", "40",
            "--eval-episodes", "1", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args, env={"METACONSTRAINT_OFFLINE": "1"}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / algorithm / "D4RL__door__human-v2" / "seed0" / "summary.json").read_text())
    assert summary["steps"] == 40 and math.isfinite(summary["final_score"])
    assert math.isfinite(summary["final_scale"]) and summary["final_scale"] != 3.0


def test_aspc_iql_resumes_bit_for_bit_with_dropout_and_meta_state(tmp_path):
    """Resume from the middle checkpoint (the final one deleted) ends where the uninterrupted run
    ended, tensor for tensor: dropout draws, beta's Adam and the cosine schedule all continue."""
    import json

    from metaconstraint.checkpoint import load_checkpoint
    from metaconstraint.runs import checkpoint_paths

    values = {"algorithm": "aspc-iql", "dataset": PEN, "steps": 24, "eval_every": 24, "eval_episodes": 1, "log_every": 6,
              "checkpoint_every": 12, "actor_dropout": 0.1, "scale_interval": 4,
              "actor_lr_schedule": "cosine"}
    finals = []
    for name in ("straight", "resumed"):
        trainer = Trainer(*build_configs({**values, "out": tmp_path / name}))
        trainer.fit()
        folder = trainer.directories[0]
        if name == "resumed":
            checkpoint_paths(folder)[-1].unlink()
            (folder / "summary.json").unlink()
            Trainer(*build_configs({**values, "out": tmp_path / name})).fit(resume=True)
        finals.append((load_checkpoint(checkpoint_paths(folder)[-1], "cpu"), (folder / "metrics.jsonl").read_text(),
                       json.loads((folder / "summary.json").read_text())))
    (a, metrics_a, summary_a), (b, metrics_b, summary_b) = finals
    assert a["iteration"] == b["iteration"] == 24
    flat_a, flat_b = torch.utils._pytree.tree_flatten(a["state"])[0], torch.utils._pytree.tree_flatten(b["state"])[0]
    assert len(flat_a) == len(flat_b)
    for x, y in zip(flat_a, flat_b):
        assert torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y
    assert metrics_a == metrics_b
    assert summary_a["final_scale"] == summary_b["final_scale"] != 3.0
