"""ASPC and TD3+BC: the behaviour the algorithms promise, on real data."""

import json

import pytest
import torch

from metaconstraint.algorithms import ASPC, ASPCConfig, ProblemSpec, TD3BC, TD3BCConfig
from metaconstraint.config import build_configs
from metaconstraint.engine import MetaParameters, Unroll, adam, inverse_softplus, member
from metaconstraint.rl.buffer import MemberSampler
from metaconstraint.rl.networks import q1
from metaconstraint.runs import MetricsLog
from metaconstraint.training import Trainer

PEN = "dapg/pen/expert-v0"


def short_run(tmp_path, algorithm="aspc", dataset=PEN, **overrides):
    values = {
        "algorithm": algorithm,
        "dataset": dataset,
        "steps": 200,
        "eval_every": 200,
        "eval_episodes": 2,
        "log_every": 100,
        "out": tmp_path,
        **overrides,
    }
    run, config = build_configs(values)
    return Trainer(run, config)


@pytest.fixture(scope="module")
def pen_trainer(tmp_path_factory):
    return short_run(tmp_path_factory.mktemp("pen"))


def bc_adam_step(actor, params, opt_state, states, actions, lr):
    leaf = {k: v.detach().requires_grad_() for k, v in params.items()}
    loss = (actor.apply(leaf, states) - actions).pow(2).mean()
    grads = dict(zip(leaf, torch.autograd.grad(loss, list(leaf.values()))))
    with torch.no_grad():
        return adam(lr).step(grads, opt_state, params)[0]


@pytest.mark.parametrize("meta_iteration", [False, True], ids=["first-order step", "bilevel step"])
def test_alpha_near_zero_gives_a_pure_behaviour_cloning_update(pen_trainer, meta_iteration):
    spec = ProblemSpec(pen_trainer.info.observation_dim, pen_trainer.info.action_dim, 1.0, 1000)
    algorithm = ASPC(ASPCConfig(alpha=1e-9), spec, 1, torch.device("cpu"))
    state = algorithm.init_state([0])
    sampler = MemberSampler(pen_trainer.buffer, 256, [0])
    for iteration in range(1, 6):  # warm up critic and actor state
        state, _ = algorithm.update(state, sampler, iteration)
    batch = sampler.sample()
    before = {k: v.clone() for k, v in state["actor"].items()}
    opt_before = {k: (v if isinstance(v, int) else {n: t.clone() for n, t in v.items()}) for k, v in state["actor_opt"].items()}
    iteration = algorithm.scale.meta_interval if meta_iteration else 2
    algorithm.update_actor(state, batch, algorithm.frozen_inputs(state), iteration)
    expected = bc_adam_step(  # copies: the real Adam step updates its inputs in place
        algorithm.actor,
        {k: v[0].clone() for k, v in before.items()},
        {k: (v if isinstance(v, int) else {n: t[0].clone() for n, t in v.items()}) for k, v in opt_before.items()},
        batch["observations"][0],
        batch["actions"][0],
        algorithm.config.actor_lr,
    )
    for k in expected:
        torch.testing.assert_close(state["actor"][k][0], expected[k], rtol=1e-5, atol=1e-7)
    moved = max((state["actor"][k] - before[k]).abs().max().item() for k in before)
    assert moved > 1e-5  # the step did happen


def test_aspc_alpha_moves(tmp_path):
    trainer = short_run(tmp_path, steps=400, eval_every=400)
    summary = trainer.fit()[0]
    assert summary["final_scale"] != pytest.approx(2.5, abs=1e-3) and summary["scale_name"] == "alpha"
    assert summary["meta_parameters"]["alpha"] == pytest.approx(summary["final_scale"])
    alphas = [row["scale/alpha"] for row in MetricsLog.read(trainer.directories[0])]
    assert len(set(alphas)) > 1


def td3bc_actor_loss(algorithm, state, batch, alpha: float):
    """TD3+BC's actor loss of member 0 by hand: ``-alpha Q(s, pi(s)) / mean|Q| + mean (pi(s) - a)^2``."""
    one = member(batch, 0)
    pi = algorithm.actor.apply(member(state["actor"], 0), one["observations"])
    q = q1(algorithm.critic, member(state["critic"], 0), one["observations"], pi)
    return -alpha / q.abs().mean() * q.mean() + ((pi - one["actions"]) ** 2).mean()


def test_td3bc_alpha_stays_fixed(tmp_path, pen_trainer):
    """Past two of the iterations where ASPC moves its alpha (20, 40), TD3+BC's actor step still
    minimises its objective at the configured alpha."""
    spec = ProblemSpec(pen_trainer.info.observation_dim, pen_trainer.info.action_dim, 1.0, 1000)
    algorithm = TD3BC(TD3BCConfig(alpha=2.5), spec, 1, torch.device("cpu"))
    state = algorithm.init_state([0])
    sampler = MemberSampler(pen_trainer.buffer, 256, [0])
    for iteration in range(1, 42):
        state, _ = algorithm.update(state, sampler, iteration)
    batch = sampler.sample()
    with torch.no_grad():
        expected = td3bc_actor_loss(algorithm, state, batch, 2.5)
        assert (expected - td3bc_actor_loss(algorithm, state, batch, 2.4)).abs() > 1e-3  # alpha matters here
    metrics = algorithm.update_actor(state, batch, algorithm.frozen_inputs(state), 42)
    torch.testing.assert_close(metrics["actor_loss"][0], expected, rtol=1e-5, atol=1e-6)
    summary = short_run(tmp_path, algorithm="td3bc", steps=20, eval_every=20, eval_episodes=1).fit()[0]
    assert "final_scale" not in summary and summary["meta_parameters"] == {}


def test_alpha_decay_horizon_is_the_released_codes_million_iterations_whatever_the_run_length():
    spec = ProblemSpec(45, 24, 1.0, total_steps=30_000)
    algorithm = ASPC(ASPCConfig(), spec, 1, torch.device("cpu"))
    (alpha,) = algorithm.problem.meta_parameters.parameters.values()
    assert alpha.decay_updates == 1_000_000 // 20
    assert alpha.lr_at(alpha.decay_updates) == pytest.approx(2e-5)
    tied = ASPC(ASPCConfig(scale_lr_decay_steps="run"), spec, 1, torch.device("cpu"))
    assert next(iter(tied.problem.meta_parameters.parameters.values())).decay_updates == 30_000 // 20
    state = algorithm.init_state([0])
    assert MetaParameters.values(state["meta"]["raw"])["alpha"].item() == pytest.approx(2.5)
    assert state["meta"]["raw"]["alpha"].item() == pytest.approx(inverse_softplus(2.5))


def test_stacked_seeds_equal_separate_runs(tmp_path, pen_trainer):
    spec = ProblemSpec(pen_trainer.info.observation_dim, pen_trainer.info.action_dim, 1.0, 1000)
    device = torch.device("cpu")
    stacked = ASPC(ASPCConfig(scale_interval=2), spec, 2, device)
    state = stacked.init_state([3, 4])
    sampler = MemberSampler(pen_trainer.buffer, 64, [3, 4])
    for iteration in range(1, 13):
        state, _ = stacked.update(state, sampler, iteration)
    for k, seed in enumerate([3, 4]):
        single = ASPC(ASPCConfig(scale_interval=2), spec, 1, device)
        own = single.init_state([seed])
        own_sampler = MemberSampler(pen_trainer.buffer, 64, [seed])
        for iteration in range(1, 13):
            own, _ = single.update(own, own_sampler, iteration)
        for name in ("actor", "critic"):
            for key in own[name]:
                torch.testing.assert_close(state[name][key][k], own[name][key][0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(state["meta"]["raw"]["alpha"][k], own["meta"]["raw"]["alpha"][0], rtol=1e-4, atol=1e-6)


def test_run_writes_the_run_folder(tmp_path):
    trainer = short_run(tmp_path, seeds=2, steps=100, eval_every=50)
    summaries = trainer.fit()
    assert [s["seed"] for s in summaries] == [0, 1]
    for summary, directory in zip(summaries, trainer.directories):
        assert directory == tmp_path / "aspc" / "dapg__pen__expert-v0" / f"seed{summary['seed']}"
        for name in ("config.toml", "metrics.jsonl", "metrics.csv", "summary.json", "environment.json"):
            assert (directory / name).exists(), name
        assert list((directory / "checkpoints").glob("*.pt"))
        on_disk = json.loads((directory / "summary.json").read_text())
        for key in ("final_score", "final_score_rule", "scores", "final_scale", "scale_name", "meta_parameters", "steps",
                    "wall_seconds", "updates_per_second", "seed", "algorithm", "dataset"):
            assert key in on_disk, key
        assert on_disk["steps"] == 100 and len(on_disk["scores"]) == 2
        assert on_disk["final_score"] == pytest.approx(on_disk["scores"][-1]["score"])


def test_a_two_step_unroll_commits_two_actor_steps_per_alpha_update():
    """ASPC's problem with ``Unroll(2)``: each alpha update differentiates through two actor steps on
    its batch and commits both (40 iterations: 20 actor iterations, 2 of them alpha updates -> 22 steps)."""
    import dataclasses

    from member_checks import synthetic_buffer

    spec = ProblemSpec(11, 3, 1.0, 1000)
    sampler = MemberSampler(synthetic_buffer(), 64, [0])
    algorithm = ASPC(ASPCConfig(), spec, 1, torch.device("cpu"))
    algorithm.problem = dataclasses.replace(algorithm.problem, hypergradient=Unroll(2))
    state = algorithm.init_state([0])
    for iteration in range(1, 41):
        state, metrics = algorithm.update(state, sampler, iteration)
    assert state["actor_opt"]["count"] == 22 and state["meta"]["updates"] == 2
    assert torch.isfinite(metrics["grad/alpha"]).all() and metrics["grad/alpha"].item() != 0.0
    assert MetaParameters.values(state["meta"]["raw"])["alpha"].item() != pytest.approx(2.5, abs=1e-6)
