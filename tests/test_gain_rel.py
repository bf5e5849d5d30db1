"""aspc-iql's default outer criterion ``gain-rel``: unit-free, invariant to the step's length, the
reward scale and the learned scale, and on a small problem the learned beta moves down as well as
up, to the same place from either side (what L1 on the AWR objective could not promise)."""

import pytest
import torch
import torch.nn.functional as F

from metaconstraint.engine import BilevelProblem, MetaParameter, MetaParameters, adam, bilevel_step, inner_step, member
from metaconstraint.objectives.awr import AWRObjective
from metaconstraint.outer_losses import PolicyContext, context_factory, resolve_outer_losses
from metaconstraint.outer_losses.direction import relative_gain_per_step
from metaconstraint.rl.networks import Network, gaussian_actor

F64 = torch.float64
OBS, ACT, B = 4, 2, 256


def stack(tree):
    if isinstance(tree, torch.Tensor):
        return tree.unsqueeze(0)
    if isinstance(tree, dict):
        return {k: stack(v) for k, v in tree.items()}
    return tree


def best_action(states):
    return torch.tanh(states[..., :ACT])


def quadratic_critic(scale=1.0, offset=5.0) -> Network:
    """Twin ``Q(s, a) = scale * (offset - ||a - tanh(s_:A)||^2)``: the best action is known."""

    def apply(params, states, actions):
        q = scale * (offset - (actions - best_action(states)).pow(2).sum(-1))
        return torch.stack([q, q], dim=-2)

    return Network(lambda generator: {}, apply)


def toy_problem(losses, beta, critic, meta_lr=0.05):
    """Data: actions 0.3 of the way to the best action plus noise (SD 0.5); advantages from the critic."""
    actor = gaussian_actor(OBS, ACT, 1.0, hidden=(16, 16))
    objective = AWRObjective(actor, critic)
    problem = BilevelProblem(
        inner_objective=objective.inner, optimizer=adam(1e-3), outer_losses=resolve_outer_losses(losses),
        meta_parameters=MetaParameters([MetaParameter("beta", init=beta, lr=meta_lr)]),
        make_context=context_factory(actor, critic, objective),
    )
    g = torch.Generator().manual_seed(0)
    states = torch.randn(B, OBS, generator=g, dtype=F64)
    actions = (0.3 * best_action(states) + 0.5 * torch.randn(B, ACT, generator=g, dtype=F64)).clamp(-1, 1)
    q = critic.apply({}, states, actions)[0]
    batch = {"observations": states, "actions": actions}
    frozen = {"advantages": q - q.mean(), "critic": {}}
    params = {k: v.to(F64) for k, v in actor.init(torch.Generator().manual_seed(1)).items()}
    return actor, objective, problem, stack(batch), stack(frozen), stack(params)


def learned_beta(losses, beta, iterations=300, warmup=100, critic=None):
    """The policy first fits the data at ``beta`` (``warmup`` plain steps), then every step is a bilevel
    step that moves beta and is committed. Returns beta's trajectory."""
    _, _, problem, batch, frozen, params = toy_problem(losses, beta, critic or quadratic_critic())
    opt_state = stack(problem.optimizer.init(member(params, 0)))
    meta_state = problem.meta_parameters.init(1, dtype=F64)
    fixed = {"beta": torch.tensor([beta], dtype=F64)}
    for _ in range(warmup):
        params, opt_state, _ = inner_step(problem, params, opt_state, fixed, batch, frozen)
    betas = []
    for _ in range(iterations):
        params, opt_state, meta_state, _, _ = bilevel_step(problem, params, opt_state, meta_state, batch, frozen, {})
        betas.append(F.softplus(meta_state["raw"]["beta"][0]).item())
    return betas


def test_learned_beta_moves_down_from_above_and_up_from_below_to_the_same_place():
    from_below = learned_beta(["gain-rel"], 0.05)
    from_above = learned_beta(["gain-rel"], 1.0)
    assert from_below[-1] > 2 * 0.05  # up ...
    assert from_above[-1] < 0.5 * 1.0  # ... and down
    assert from_below[-1] == pytest.approx(from_above[-1], rel=0.5)  # toward one beta from either side


def test_gain_rel_is_invariant_to_step_length_reward_scale_and_the_learned_scale():
    actor, objective, problem, batch, frozen, params = toy_problem(["gain-rel"], 0.5, quadratic_critic())
    params, batch, frozen = member(params, 0), member(batch, 0), member(frozen, 0)
    step = {k: 1e-5 * torch.randn(v.shape, generator=torch.Generator().manual_seed(2), dtype=F64) for k, v in params.items()}

    def value(multiple, critic, beta):
        updated = {k: params[k] + multiple * step[k] for k in params}
        context = PolicyContext(params, updated, {"beta": torch.tensor(beta, dtype=F64)}, batch, frozen,
                                actor=actor, critic=critic, objective=objective)
        return relative_gain_per_step(context).item()

    base = value(1.0, quadratic_critic(), 0.5)
    assert abs(base) > 1e-3
    assert value(0.5, quadratic_critic(), 0.5) == pytest.approx(base, rel=1e-3)  # half the step: same (to first order)
    assert value(1.0, quadratic_critic(scale=10.0), 0.5) == pytest.approx(base, rel=1e-9)  # rewards x10
    assert value(1.0, quadratic_critic(), 5.0) == base  # the learned scale is not read
    assert value(-1.0, quadratic_critic(), 0.5) == pytest.approx(-base, rel=1e-3)  # the direction is


def test_learned_beta_does_not_depend_on_the_reward_scale():
    scaled = learned_beta(["gain-rel"], 1.0, iterations=100, critic=quadratic_critic(scale=10.0, offset=5.0))
    plain = learned_beta(["gain-rel"], 1.0, iterations=100)
    # the advantages grow tenfold too, so the AWR step differs; the criterion itself must not add to that:
    # compare the meta-gradient's direction over the first updates instead of the end point
    assert (scaled[5] - 1.0) * (plain[5] - 1.0) > 0


def test_l1_on_the_same_problem_only_raises_beta():
    """The defect gain-rel replaces, on the same problem: the AWR objective's own look-ahead raises beta
    from both starting points (the larger beta, the larger the loss and so the step)."""
    from_below = learned_beta(["l1"], 0.05)
    from_above = learned_beta(["l1"], 1.0)
    assert from_below[-1] > 1.0 and from_above[-1] > 2.0
