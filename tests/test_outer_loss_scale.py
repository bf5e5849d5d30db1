"""How each outer loss's meta-gradient depends on the reward scale (issue: the direction alpha moves).

Multiplying every reward by ``c`` multiplies the converged critic by ``c``; here the critic's output
layer is scaled by ``c``, which does exactly that. The TD3+BC inner objective divides by
``sg(mean |Q|)``, so the virtual step, and with it L1, does not change; the paper's L2 and L3 and the
released code's EMA L2 (its average started at the policy's mean Q, as after a long run) grow with
``c^2``; the relative forms do not change. On this problem L1 and
the paper's L2 pull alpha in opposite directions, so the sign of their sum's meta-gradient is set by
the reward scale.
"""

from __future__ import annotations

import copy

import pytest
import torch

from metaconstraint.algorithms import ASPC, ASPCConfig, ProblemSpec
from metaconstraint.engine import bilevel_step
from metaconstraint.rl.networks import q1

OBS, ACT, BATCH = 6, 2, 64
SCALES = (0.1, 1.0, 10.0)


def _double(tree):
    if isinstance(tree, dict):
        return {k: _double(v) for k, v in tree.items()}
    return tree.double() if torch.is_tensor(tree) and tree.is_floating_point() else tree


@pytest.fixture(scope="module")
def warmed_up():
    """An ASPC actor after 8 real Adam steps (so Adam's moments are live) and a batch, float64."""
    torch.manual_seed(0)
    spec = ProblemSpec(OBS, ACT, 1.0, 1_000_000)
    algorithm = ASPC(ASPCConfig(), spec, 1, torch.device("cpu"))
    state = _double(algorithm.init_state([0]))

    def batch():
        return {
            "observations": torch.randn(1, BATCH, OBS, dtype=torch.float64),
            "actions": torch.rand(1, BATCH, ACT, dtype=torch.float64) * 2 - 1,
        }

    for iteration in range(2, 18, 2):
        algorithm.update_actor(state, batch(), algorithm.frozen_inputs(state), iteration)
    return spec, state, batch()


def meta_gradient(warmed_up, outer_losses: list[str], scale: float) -> float:
    """d(sum of ``outer_losses``)/d rho at the warmed-up state, with Q multiplied by ``scale``."""
    spec, state, batch = warmed_up
    algorithm = ASPC(ASPCConfig(outer_losses=outer_losses), spec, 1, torch.device("cpu"))
    state = copy.deepcopy(state)
    state["critic"]["w3"] = state["critic"]["w3"] * scale
    state["critic"]["b3"] = state["critic"]["b3"] * scale
    outer_state = _double(algorithm.problem.init_outer_state())
    if "l2-ema" in outer_state:  # as after a long run: the average has caught up with the policy's Q
        member = {name: {k: v[0] for k, v in state[name].items()} for name in ("actor", "critic")}
        states = batch["observations"][0]
        q = q1(algorithm.critic, member["critic"], states, algorithm.actor.apply(member["actor"], states))
        outer_state["l2-ema"]["ema"] = q.mean().reshape(1)
    *_, info = bilevel_step(
        algorithm.problem, state["actor"], state["actor_opt"], state["meta"], batch,
        algorithm.frozen_inputs(state), outer_state,
    )
    return info["grad/alpha"].item()


@pytest.mark.parametrize("loss", ["l1", "l2-rel", "l3-rel"])
def test_unit_free_terms_do_not_depend_on_the_reward_scale(warmed_up, loss):
    at_one = meta_gradient(warmed_up, [loss], 1.0)
    assert at_one != 0.0
    for scale in SCALES:
        assert meta_gradient(warmed_up, [loss], scale) == pytest.approx(at_one, rel=1e-6)


@pytest.mark.parametrize("loss", ["l2", "l2-ema", "l3"])
def test_q_damping_terms_grow_with_the_square_of_the_reward_scale(warmed_up, loss):
    at_one = meta_gradient(warmed_up, [loss], 1.0)
    assert at_one != 0.0
    for scale in SCALES:
        assert meta_gradient(warmed_up, [loss], scale) == pytest.approx(scale**2 * at_one, rel=1e-6)


@pytest.mark.parametrize(
    "damping, flips",
    [(["l2"], True), (["l2-ema"], True), (["l2", "l3"], True), (["l2-rel"], False), (["l2-rel", "l3-rel"], False)],
    ids=["paper L2", "EMA L2", "paper L2+L3", "relative L2", "relative L2+L3"],
)
def test_the_sign_of_the_meta_gradient_follows_the_reward_scale_unless_relative(warmed_up, damping, flips):
    l1, pull = meta_gradient(warmed_up, ["l1"], 1.0), meta_gradient(warmed_up, damping, 1.0)
    assert l1 * pull < 0, "on this problem L1 and the damping pull alpha in opposite directions"
    balance = abs(l1 / pull) ** 0.5  # the reward scale at which L1 and a c^2-growing damping cancel
    small, large = (meta_gradient(warmed_up, ["l1", *damping], factor * balance) for factor in (0.1, 10.0))
    assert (small * large < 0) == flips, (small, large)
