"""The baselines (wpc, a2pr, rebrac, bc, td3bc's classic critic): each update does what its definition
says on hand-built batches, stacked seeds equal separate runs, and every algorithm trains and
evaluates through the CLI on a small pen stand-in (tests/simulated.py)."""

import json

import pytest
import torch
from typer.testing import CliRunner

from metaconstraint.algorithms import A2PR, BC, ProblemSpec, TD3BC, WPC, A2PRConfig, BCConfig, ReBRAC, ReBRACConfig, TD3BCConfig, WPCConfig
from metaconstraint.algorithms.a2pr import vae_loss
from metaconstraint.algorithms.bc import bc_loss
from metaconstraint.objectives.a2pr import a2pr_bc_target
from metaconstraint.objectives.wpc import wpc_weights
from metaconstraint.cli import app
from metaconstraint.config import build_configs
from metaconstraint.engine import member
from metaconstraint.rl.networks import q1
from metaconstraint.training import Trainer
from member_checks import train_stacked_and_alone

PEN = "dapg/pen/expert-v0"
ENV = {"METACONSTRAINT_OFFLINE": "1"}
OBS, ACT, B = 5, 3, 8
SPEC = ProblemSpec(OBS, ACT, 1.0, 1000)
CPU = torch.device("cpu")
runner = CliRunner()


def hand_batch(seed=0, members=1):
    """A hand-built batch ``(M, B, ...)`` with distinct values everywhere."""
    g = torch.Generator().manual_seed(seed)
    batch = {
        "observations": torch.randn(members, B, OBS, generator=g),
        "actions": torch.rand(members, B, ACT, generator=g) * 2 - 1,
        "rewards": torch.randn(members, B, generator=g),
        "next_observations": torch.randn(members, B, OBS, generator=g),
        "next_actions": torch.rand(members, B, ACT, generator=g) * 2 - 1,
        "terminals": torch.tensor([[0.0, 1.0] * (B // 2)] * members),
    }
    return batch


def constant_value(state, value):
    """Make V(s) = ``value`` for every state: last layer weights 0, bias ``value``."""
    last = max(int(k[1:]) for k in state["value"] if k.startswith("w"))
    state["value"][f"w{last}"].zero_()
    state["value"][f"b{last}"].fill_(value)


# ----------------------------------------------------------------------------- wPC
def test_wpc_weights_are_one_exactly_where_q_exceeds_v():
    q = torch.tensor([1.0, 2.0, 3.0, -1.0, 0.5])
    v = torch.tensor([0.0, 2.0, 4.0, -2.0, 0.5000001])
    assert wpc_weights(q, v).tolist() == [1.0, 0.0, 0.0, 1.0, 0.0]  # ties and below: 0


def test_wpc_actor_loss_clones_only_actions_better_than_the_value():
    algorithm = WPC(WPCConfig(), SPEC, 1, CPU)
    state = algorithm.init_state([0])
    batch = hand_batch()
    one = member(batch, 0)
    q_data = q1(algorithm.critic, member(state["critic"], 0), one["observations"], one["actions"])
    constant_value(state, q_data.median().item())  # V between the Q's: some samples above, some below
    frozen = member(algorithm.frozen_inputs(state), 0)
    params = member(state["actor"], 0)
    weights = (q_data > q_data.median()).float()
    assert 0 < weights.sum() < B

    pi = algorithm.actor.apply(params, one["observations"])
    q_pi = q1(algorithm.critic, frozen["critic"], one["observations"], pi)
    expected = -2.5 / q_pi.abs().mean() * q_pi.mean() + (weights[:, None] * (pi - one["actions"]) ** 2).mean()
    loss = algorithm.objective.inner(params, {"alpha": torch.tensor(2.5)}, one, frozen)
    torch.testing.assert_close(loss, expected)

    # the dataset action of a zero-weight sample does not matter; that of a weighted one does
    for index, matters in ((int(weights.argmin()), False), (int(weights.argmax()), True)):
        moved = {**one, "actions": one["actions"].clone()}
        moved["actions"][index] = -moved["actions"][index]
        changed = algorithm.objective.inner(params, {"alpha": torch.tensor(2.5)}, moved, frozen)
        assert (changed != loss).item() is matters


def test_wpc_value_regresses_onto_the_critic_target():
    algorithm = WPC(WPCConfig(value_lr=3e-2), SPEC, 1, CPU)
    state = algorithm.init_state([0])
    batch = hand_batch()
    bootstrap = {"target": torch.full((1, B), 4.0), "next_actions": batch["next_actions"]}
    for _ in range(150):
        metrics = algorithm.update_value(state, batch, bootstrap)
    values = algorithm.value.apply(member(state["value"], 0), batch["observations"][0])
    torch.testing.assert_close(values, torch.full((B,), 4.0), atol=0.05, rtol=0)
    assert metrics["value_loss"].item() < 1e-2


# ----------------------------------------------------------------------------- A2PR
def test_a2pr_target_is_the_vae_action_where_its_advantage_is_higher():
    reconstructed = torch.tensor([[0.1, 0.1], [0.2, 0.2], [0.3, 0.3], [0.4, 0.4]])
    dataset = torch.tensor([[-0.1, -0.1], [-0.2, -0.2], [-0.3, -0.3], [-0.4, -0.4]])
    values = torch.tensor([1.0, 1.0, 1.0, 1.0])
    q_reconstructed = torch.tensor([2.0, 0.5, 1.0, 0.0])  # advantages  1.0, -0.5, 0.0, -1.0
    q_data = torch.tensor([1.5, 0.8, 1.0, 0.9])  # advantages  0.5, -0.2, 0.0, -0.1
    target, weights = a2pr_bc_target(reconstructed, dataset, q_reconstructed, q_data, values, mask=0.4)
    torch.testing.assert_close(target, torch.stack([reconstructed[0], dataset[1], reconstructed[2], dataset[3]]))
    # mask * (1[Q(s,r) >= V] + 1[Q(s,a) > V])
    torch.testing.assert_close(weights, torch.tensor([0.8, 0.0, 0.4, 0.0]))


def test_a2pr_actor_loss_matches_its_definition():
    algorithm = A2PR(A2PRConfig(mask=0.7), SPEC, 1, CPU)
    state = algorithm.init_state([0])
    batch = member(hand_batch(), 0)
    batch["vae_noise"] = torch.randn(B, 2 * ACT, generator=torch.Generator().manual_seed(5))
    frozen = member(algorithm.frozen_inputs(state), 0)
    critic = frozen["critic"]
    states, actions = batch["observations"], batch["actions"]
    q_data = q1(algorithm.critic, critic, states, actions)
    constant_value(state, q_data.median().item())
    params = member(state["actor"], 0)

    pi = algorithm.actor.apply(params, states)
    q_pi = q1(algorithm.critic, critic, states, pi)
    r, _, _ = algorithm.vae.apply(frozen["vae"], states, pi, batch["vae_noise"])
    v = torch.full((B,), q_data.median().item())
    q_r = q1(algorithm.critic, critic, states, r)
    target = torch.where((q_r - v >= q_data - v)[:, None], r, actions)
    m = 0.7 * ((q_r >= v).float() + (q_data > v).float())
    expected = -2.5 / q_pi.abs().mean() * q_pi.mean() + (m[:, None] * (pi - target) ** 2).mean()
    torch.testing.assert_close(algorithm.objective.inner(params, {"alpha": torch.tensor(2.5)}, batch, frozen), expected)
    assert 0 < (m > 0).sum() < B  # both branches are exercised


def test_a2pr_vae_fits_only_the_gated_actions_and_value_takes_the_smaller_target():
    actions = torch.rand(B, ACT) * 2 - 1
    mean, log_std = torch.zeros(B, 2 * ACT), torch.zeros(B, 2 * ACT)  # KL = 0
    far = actions + 1.0
    assert vae_loss(far, mean, log_std, actions, torch.zeros(B)).item() == 0.0
    torch.testing.assert_close(vae_loss(far, mean, log_std, actions, torch.full((B,), 2.0)), torch.tensor(2.0))
    import math

    mu, sigma = 0.5, 2.0  # 0.5 * KL(N(mu, sigma^2) || N(0, 1)) per latent dimension, averaged
    kl = -0.5 * (1 + 2 * math.log(sigma) - mu**2 - sigma**2)
    loss = vae_loss(actions, torch.full((B, 2 * ACT), mu), torch.full((B, 2 * ACT), math.log(sigma)), actions, torch.ones(B))
    assert loss.item() == pytest.approx(0.5 * kl)

    algorithm = A2PR(A2PRConfig(), SPEC, 1, CPU)
    state = algorithm.init_state([0])
    batch = hand_batch()
    g = torch.Generator().manual_seed(2)
    for value in state["critic"].values():  # the online critic moves away from its target copy
        value.add_(0.1 * torch.randn(value.shape, generator=g))
    bootstrap = algorithm.td3.bootstrap(state, batch, torch.zeros(1, B, ACT))
    one = member(batch, 0)
    online = algorithm.critic.apply(member(state["critic"], 0), one["next_observations"], bootstrap["next_actions"][0]).min(0).values
    online_target = one["rewards"] + 0.99 * (1 - one["terminals"]) * online
    expected = torch.minimum(bootstrap["target"][0], online_target)
    assert (online_target < bootstrap["target"][0]).any() and (online_target > bootstrap["target"][0]).any()
    loss, _ = algorithm._member_value_loss(member(state["value"], 0), member(state["critic"], 0), one, member(bootstrap, 0))
    values = algorithm.value.apply(member(state["value"], 0), one["observations"])
    torch.testing.assert_close(loss, (values - expected).pow(2).mean())


# ----------------------------------------------------------------------------- ReBRAC
def test_rebrac_critic_target_subtracts_the_next_action_bc_penalty():
    algorithm = ReBRAC(ReBRACConfig(critic_bc_coef=0.5), SPEC, 1, CPU)
    assert algorithm.config.batch_size == 1024 and algorithm.config.normalize_states is False
    state = algorithm.init_state([0])
    batch = hand_batch()
    noise = torch.randn(1, B, ACT, generator=torch.Generator().manual_seed(1))
    bootstrap = algorithm.td3.bootstrap(state, batch, noise)
    one = member(batch, 0)
    smoothing = (noise[0] * 0.2).clamp(-0.5, 0.5)
    next_actions = (algorithm.actor.apply(member(state["target_actor"], 0), one["next_observations"]) + smoothing).clamp(-1, 1)
    next_q = algorithm.critic.apply(member(state["target_critic"], 0), one["next_observations"], next_actions).min(0).values
    penalty = 0.5 * ((next_actions - one["next_actions"]) ** 2).sum(-1)
    expected = one["rewards"] + 0.99 * (1 - one["terminals"]) * (next_q - penalty)
    torch.testing.assert_close(bootstrap["target"][0], expected)
    assert (penalty > 0).all()


def test_rebrac_actor_loss_has_the_bc_term_and_the_normalised_min_q():
    algorithm = ReBRAC(ReBRACConfig(actor_bc_coef=0.3), SPEC, 1, CPU)
    state = algorithm.init_state([0])
    assert "w3" in state["actor"]  # 3 x 256 actor
    assert any(k.startswith("ln") for k in state["critic"])  # LayerNorm critic
    one = member(hand_batch(), 0)
    params, critic = member(state["actor"], 0), member(state["critic"], 0)
    pi = algorithm.actor.apply(params, one["observations"])
    q = algorithm.critic.apply(critic, one["observations"], pi).min(0).values
    expected = (0.3 * ((pi - one["actions"]) ** 2).sum(-1) - q / q.abs().mean()).mean()
    meta = {k: v[0] for k, v in algorithm.scale.values(state).items()}
    torch.testing.assert_close(algorithm.objective.inner(params, meta, one, {"critic": critic}), expected)


# ----------------------------------------------------------------------------- BC and TD3+BC
def test_bc_loss_is_plain_mse_and_the_update_is_one_adam_step_on_it():
    pi, a = torch.tensor([[0.0, 1.0], [0.5, -0.5]]), torch.tensor([[1.0, 1.0], [0.0, 0.5]])
    assert bc_loss(pi, a).item() == pytest.approx((1 + 0 + 0.25 + 1) / 4)

    algorithm = BC(BCConfig(actor_lr=1e-2), SPEC, 1, CPU)
    state = algorithm.init_state([0])
    reference = {k: v[0].clone().requires_grad_() for k, v in state["actor"].items()}
    optimizer = torch.optim.Adam(list(reference.values()), lr=1e-2)
    batch = hand_batch()

    class Fixed:  # a sampler that returns the hand-built batch
        def sample(self):
            return batch

    for iteration in range(1, 4):
        state, metrics = algorithm.update(state, Fixed(), iteration)
        optimizer.zero_grad()
        loss = ((algorithm.actor.apply(reference, batch["observations"][0]) - batch["actions"][0]) ** 2).mean()
        loss.backward()
        optimizer.step()
        torch.testing.assert_close(metrics["actor_loss"][0], loss.detach())
    for k in reference:
        torch.testing.assert_close(state["actor"][k][0], reference[k].detach(), rtol=1e-5, atol=1e-6)


def test_td3bc_offers_the_classic_critic():
    robust = TD3BC(TD3BCConfig(), SPEC, 1, CPU).init_state([0])["critic"]
    classic = TD3BC(TD3BCConfig(critic="classic"), SPEC, 1, CPU).init_state([0])["critic"]
    assert sorted(classic) == ["b0", "b1", "b2", "w0", "w1", "w2"]
    assert classic["w0"].shape == (1, 2, OBS + ACT, 256) and classic["w2"].shape == (1, 2, 256, 1)
    assert "ln2.weight" in robust and robust["w3"].shape == (1, 2, 256, 1)


# ----------------------------------------------------------------------------- on a real dataset
@pytest.fixture(scope="module")
def pen_buffer(tmp_path_factory):
    run, config = build_configs({"algorithm": "td3bc", "dataset": PEN, "steps": 10, "out": tmp_path_factory.mktemp("pen")})
    trainer = Trainer(run, config)
    return trainer.buffer, ProblemSpec(trainer.info.observation_dim, trainer.info.action_dim, 1.0, 1000)


@pytest.mark.parametrize("cls,config", [
    (WPC, WPCConfig()), (A2PR, A2PRConfig()), (ReBRAC, ReBRACConfig(batch_size=64)), (BC, BCConfig()),
], ids=["wpc", "a2pr", "rebrac", "bc"])
def test_stacked_seeds_equal_separate_runs(pen_buffer, cls, config):
    buffer, spec = pen_buffer
    state, alone = train_stacked_and_alone(cls, config, buffer, spec, [3, 4], 4, CPU)
    for k, own in enumerate(alone):
        for name in ("actor", "critic", "value", "vae"):
            for key in own.get(name, {}):
                torch.testing.assert_close(state[name][key][k], own[name][key][0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("algorithm", ["wpc", "a2pr", "rebrac", "bc"])
def test_every_baseline_trains_and_evaluates_from_the_cli(tmp_path, algorithm):
    args = ["run", algorithm, "--dataset", PEN, "--steps", "100", "--eval-every", "50", "--eval-episodes", "2", "--out", str(tmp_path)]
    result = runner.invoke(app, args, env=ENV, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    folder = tmp_path / algorithm / "dapg__pen__expert-v0" / "seed0"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["algorithm"] == algorithm and summary["steps"] == 100
    assert [s["step"] for s in summary["scores"]] == [50, 100]
    assert "final_scale" not in summary
    # the recorded score is the saved policy's: scoring the final checkpoint again on the run's
    # seeded evaluation episodes gives it back
    again = runner.invoke(app, ["evaluate", str(folder), "--json"], env=ENV, catch_exceptions=False)
    assert again.exit_code == 0, again.output
    rescored = json.loads(again.output)
    assert rescored["step"] == 100 and rescored["episodes"] == 2
    assert rescored["mean"] == pytest.approx(summary["final_score"], rel=1e-9, abs=1e-9)


@pytest.mark.real_data(PEN)
def test_bc_beats_random_on_pen_expert(tmp_path):
    """The D4RL score of a random policy is 0 by definition; a short BC run is far above it."""
    run, config = build_configs(
        {"algorithm": "bc", "dataset": PEN, "steps": 1000, "eval_every": 1000, "eval_episodes": 5, "out": tmp_path}
    )
    summary = Trainer(run, config).fit()[0]
    assert summary["final_score"] > 50, summary["scores"]


def test_tagged_grid_cells_have_their_own_folders_records_and_labels(tmp_path):
    from metaconstraint.grid import CellOutcome, expand_grid, run_cell, write_grid_record
    from metaconstraint.report import collect_runs

    options = {"steps": 20, "eval_every": 20, "eval_episodes": 1, "out": str(tmp_path)}
    (plain,) = expand_grid(["bc"], [PEN], 1, run_options=options)
    (tagged,) = expand_grid(["bc"], [PEN], 1, run_options={**options, "tag": "lr1e-2"})
    outcomes = [CellOutcome(values, "done", summary=run_cell(values)) for values in (plain, tagged)]
    assert sorted(p.parent.name for p in tmp_path.rglob("summary.json")) == ["seed0", "seed0-lr1e-2"]
    write_grid_record(tmp_path, outcomes, {"algorithms": ["bc"]})
    failed = CellOutcome({**tagged, "seed": 1}, "failed", error="boom")
    write_grid_record(tmp_path, [failed], {"algorithms": ["bc"]})  # merged, keyed by tag too
    cells = json.loads((tmp_path / "grid.json").read_text())["cells"]
    assert sorted((c["seed"], c["tag"] or "", c["status"]) for c in cells) == [(0, "", "done"), (0, "lr1e-2", "done"), (1, "lr1e-2", "failed")]
    labels = sorted((r.algorithm, r.seed, r.status) for r in collect_runs(tmp_path))
    assert labels == [("bc", 0, "done"), ("bc (lr1e-2)", 0, "done"), ("bc (lr1e-2)", 1, "failed")]


@pytest.mark.slow
def test_compare_tag_keeps_differently_configured_runs_apart(tmp_path):
    common = ["--datasets", PEN, "--seeds", "1", "--steps", "20", "--eval-every", "20", "--eval-episodes", "1", "--workers", "1"]
    result = runner.invoke(app, ["compare", "bc", *common, "--out", str(tmp_path)], env=ENV, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    tagged = ["compare", "bc", *common, "--tag", "lr1e-2", "--out", str(tmp_path)]
    result = runner.invoke(app, tagged, env=ENV, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    folders = sorted(p.parent.name for p in tmp_path.rglob("summary.json"))
    assert folders == ["seed0", "seed0-lr1e-2"]
    grid = json.loads((tmp_path / "grid.json").read_text())
    assert sorted((c["algorithm"], c["tag"] or "") for c in grid["cells"]) == [("bc", ""), ("bc", "lr1e-2")]
    result = runner.invoke(app, ["report", str(tmp_path)], env=ENV, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    header = (tmp_path / "results.md").read_text()
    assert "| bc | bc (lr1e-2) |" in header
