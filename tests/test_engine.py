"""The generic engine: optimizer parity, meta-gradients against finite differences and closed forms."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from metaconstraint.engine import (
    BilevelProblem,
    BilevelStep,
    MetaParameter,
    MetaParameters,
    OuterLoss,
    OuterLossError,
    Unroll,
    adam,
    adamw,
    bilevel_step,
    chain,
    clip_by_global_norm,
    cosine_decay,
    exponential_decay,
    inner_step,
    inverse_softplus,
    member,
    sgd,
    stack_members,
)
from metaconstraint.engine.optim import detach_tree

DTYPE = torch.float64


def make_params(seed: int, members: int | None = None):
    g = torch.Generator().manual_seed(seed)
    shape = lambda *s: s if members is None else (members, *s)  # noqa: E731
    return {
        "w1": torch.randn(*shape(5, 8), generator=g, dtype=DTYPE) * 0.5,
        "b1": torch.randn(*shape(8), generator=g, dtype=DTYPE) * 0.1,
        "w2": torch.randn(*shape(8, 3), generator=g, dtype=DTYPE) * 0.5,
        # a parameter whose gradient is exactly zero: the first input feature is constant 0
        "dead": torch.randn(*shape(3), generator=g, dtype=DTYPE),
    }


def forward(params, x):
    h = torch.tanh(x @ params["w1"] + params["b1"])
    return h @ params["w2"] + 0.0 * params["dead"]


def inner_objective(params, meta, batch, frozen):
    """A TD3+BC-shaped objective: -alpha * value(pi(x)) + ||pi(x) - y||^2."""
    out = forward(params, batch["x"])
    value = (out * frozen["direction"]).sum(-1).mean()
    return -meta["alpha"] * value + ((out - batch["y"]) ** 2).mean()


def outer_fit(ctx):
    return ((forward(ctx.updated_params, ctx.batch["x"]) - ctx.batch["y"]) ** 2).mean()


def outer_change(ctx):
    before = forward(ctx.params, ctx.batch["x"]).mean()
    after = forward(ctx.updated_params, ctx.batch["x"]).mean()
    return (after - before) ** 2


def make_batch(seed: int, members: int | None = None):
    g = torch.Generator().manual_seed(seed)
    shape = lambda *s: s if members is None else (members, *s)  # noqa: E731
    x = torch.randn(*shape(16, 5), generator=g, dtype=DTYPE)
    x[..., 0] = 0.0  # constant feature -> zero gradient rows of w1 and Adam's v = 0 there
    return {"x": x, "y": torch.randn(*shape(16, 3), generator=g, dtype=DTYPE)}


def make_problem(optimizer, members=1):
    return BilevelProblem(
        inner_objective=inner_objective,
        optimizer=optimizer,
        outer_losses=[OuterLoss("fit", outer_fit), OuterLoss("change", outer_change, weight=3.0)],
        meta_parameters=MetaParameters([MetaParameter("alpha", init=2.5, lr=1e-2)]),
        num_members=members,
    )


def test_adam_matches_torch_adam_for_100_steps():
    params = make_params(0)
    reference = {k: torch.nn.Parameter(v.clone()) for k, v in params.items()}
    torch_adam = torch.optim.Adam(reference.values(), lr=1e-2, betas=(0.8, 0.99), eps=1e-6)
    opt = adam(1e-2, betas=(0.8, 0.99), eps=1e-6)
    state = opt.init(params)
    for step in range(100):
        batch = make_batch(step)
        meta = {"alpha": torch.tensor(1.0, dtype=DTYPE)}
        loss = inner_objective(reference, meta, batch, {"direction": torch.ones(3, dtype=DTYPE)})
        torch_adam.zero_grad()
        loss.backward()
        grads = {k: p.grad.clone() for k, p in reference.items()}
        torch_adam.step()
        with torch.no_grad():
            params, state = opt.step(grads, state, params)
        # the differentiable path (used by the virtual step) gives the same numbers
    for k in params:
        torch.testing.assert_close(params[k], reference[k].detach(), rtol=1e-12, atol=1e-12)
    assert state["count"] == 100


def test_adam_differentiable_path_equals_fused_path_and_is_finite_at_zero_gradient():
    params = make_params(1)
    opt = adam(1e-3)
    state = opt.init(params)
    grads = {k: torch.randn_like(v) for k, v in params.items()}
    grads["dead"] = torch.zeros_like(params["dead"])
    with torch.no_grad():  # the real step donates its buffers: give it copies
        fused, _ = opt.step(grads, clone_tree(state), clone_tree(params))
    leaf = {k: v.clone().requires_grad_() for k, v in params.items()}
    diff, _ = opt.step(grads, state, leaf)
    for k in params:
        torch.testing.assert_close(diff[k].detach(), fused[k], rtol=1e-12, atol=1e-14)
    total = sum(v.sum() for v in diff.values())
    gradients = torch.autograd.grad(total, list(leaf.values()))
    assert all(torch.isfinite(g).all() for g in gradients)


def test_sgd_matches_torch_sgd_with_momentum():
    params = make_params(2)
    reference = {k: torch.nn.Parameter(v.clone()) for k, v in params.items()}
    torch_sgd = torch.optim.SGD(reference.values(), lr=0.05, momentum=0.9)
    opt = sgd(0.05, momentum=0.9)
    state = opt.init(params)
    for step in range(20):
        batch = make_batch(step)
        loss = inner_objective(reference, {"alpha": 1.0}, batch, {"direction": torch.ones(3, dtype=DTYPE)})
        torch_sgd.zero_grad()
        loss.backward()
        grads = {k: p.grad.clone() for k, p in reference.items()}
        torch_sgd.step()
        with torch.no_grad():
            params, state = opt.step(grads, state, params)
    for k in params:
        torch.testing.assert_close(params[k], reference[k].detach())


def outer_value_at(problem, params, opt_state, rho: float, batch, frozen):
    """The outer loss as a function of rho, in plain code (no engine), for finite differences."""
    alpha = F.softplus(torch.tensor(rho, dtype=DTYPE))
    leaf = {k: v.clone().requires_grad_() for k, v in params.items()}
    loss = inner_objective(leaf, {"alpha": alpha}, batch, frozen)
    grads = dict(zip(leaf, torch.autograd.grad(loss, list(leaf.values()))))
    with torch.no_grad():
        updated, _ = problem.optimizer.step(grads, clone_tree(opt_state), clone_tree(params))
        ctx = type("Ctx", (), {"params": params, "updated_params": updated, "batch": batch})
        return outer_fit(ctx) + 3.0 * outer_change(ctx)


@pytest.mark.parametrize("optimizer", [sgd(0.1), sgd(0.05, momentum=0.9), adam(3e-3)], ids=["sgd", "sgd-momentum", "adam"])
def test_meta_gradient_matches_central_finite_differences(optimizer):
    problem = make_problem(optimizer)
    frozen = {"direction": torch.tensor([1.0, -0.5, 0.25], dtype=DTYPE)}
    params = make_params(3)
    opt_state = optimizer.init(params)
    meta_state = problem.meta_parameters.init(1, dtype=DTYPE)
    values = {"alpha": torch.tensor(2.5, dtype=DTYPE)}
    for step in range(5):  # warm the optimizer state up with real steps
        batch = make_batch(100 + step)
        stacked = {k: v.unsqueeze(0) for k, v in params.items()}
        new, opt_state_s, _ = inner_step(
            problem, stacked, _stack_state(opt_state), {"alpha": values["alpha"].reshape(1)},
            {k: v.unsqueeze(0) for k, v in batch.items()}, {k: v.unsqueeze(0) for k, v in frozen.items()},
        )
        params, opt_state = member(new, 0), member(opt_state_s, 0)
    if "exp_avg_sq" in opt_state:
        assert (opt_state["exp_avg_sq"]["w1"][0] == 0).all()  # the dead feature's second moment is 0

    batch = make_batch(7)
    _, _, _, _, info = bilevel_step(
        problem,
        {k: v.unsqueeze(0) for k, v in params.items()},
        _stack_state(opt_state),
        meta_state,
        {k: v.unsqueeze(0) for k, v in batch.items()},
        {k: v.unsqueeze(0) for k, v in frozen.items()},
        {},
    )
    analytic = info["grad/alpha"][0].item()
    rho = inverse_softplus(2.5)
    h = 1e-5
    plus = outer_value_at(problem, params, opt_state, rho + h, batch, frozen).item()
    minus = outer_value_at(problem, params, opt_state, rho - h, batch, frozen).item()
    numeric = (plus - minus) / (2 * h)
    assert math.isfinite(analytic)
    assert abs(analytic - numeric) <= 1e-3 * abs(numeric), (analytic, numeric)
    assert abs(numeric) > 1e-6  # the check is not vacuous


def clone_tree(tree):
    if isinstance(tree, torch.Tensor):
        return tree.clone()
    if isinstance(tree, dict):
        return {k: clone_tree(v) for k, v in tree.items()}
    return tree


def _stack_state(state):
    return {k: (v if isinstance(v, int) else {n: t.unsqueeze(0) for n, t in v.items()}) for k, v in state.items()}


def test_meta_gradient_closed_form_quadratic():
    """f = 0.5||theta - alpha c||^2, one SGD step, outer 0.5||theta~ - t||^2:
    dL/drho = (theta~ - t) . (eta c) * sigmoid(rho)."""
    eta, rho0 = 0.3, 0.4
    theta = torch.tensor([[1.0, -2.0, 0.5]], dtype=DTYPE)
    c = torch.tensor([[0.3, 0.7, -1.1]], dtype=DTYPE)
    t = torch.tensor([[2.0, 0.0, 1.0]], dtype=DTYPE)
    problem = BilevelProblem(
        inner_objective=lambda p, m, b, f: 0.5 * ((p["theta"] - m["a"] * b["c"]) ** 2).sum(),
        optimizer=sgd(eta),
        outer_losses=[OuterLoss("target", lambda ctx: 0.5 * ((ctx.updated_params["theta"] - ctx.batch["t"]) ** 2).sum())],
        meta_parameters=MetaParameters([MetaParameter("a", init=F.softplus(torch.tensor(rho0)).item(), lr=0.1)]),
    )
    meta_state = problem.meta_parameters.init(1, dtype=DTYPE)
    meta_state["raw"]["a"] = torch.tensor([rho0], dtype=DTYPE)
    new_params, _, new_meta, _, info = bilevel_step(
        problem, {"theta": theta}, sgd(eta).init({"theta": theta}), meta_state, {"c": c, "t": t}, {}, {}
    )
    alpha = F.softplus(torch.tensor(rho0, dtype=DTYPE))
    updated = theta - eta * (theta - alpha * c)
    expected = ((updated - t) * eta * c).sum() * torch.sigmoid(torch.tensor(rho0, dtype=DTYPE))
    torch.testing.assert_close(info["grad/a"][0], expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(new_params["theta"], updated)  # the virtual step is committed
    assert new_meta["updates"] == 1 and new_meta["raw"]["a"][0] < rho0 + 0.11


def test_members_equal_a_loop_over_members():
    """Three members stacked (vmap) give each member exactly what it gets on its own."""
    members = 3
    optimizer = adam(1e-2)
    stacked_problem = make_problem(optimizer, members)
    single_problem = make_problem(optimizer, 1)
    params = make_params(10, members)
    frozen = {"direction": torch.randn(members, 3, dtype=DTYPE)}
    opt_state = optimizer.init(params)
    meta_state = stacked_problem.meta_parameters.init(members, dtype=DTYPE)
    singles = [
        (clone_tree(member(params, i)), optimizer.init(member(params, i)), single_problem.meta_parameters.init(1, dtype=DTYPE))
        for i in range(members)
    ]
    singles = [({k: v.unsqueeze(0) for k, v in p.items()}, _stack_state(o), m) for p, o, m in singles]
    for step in range(4):
        batch = make_batch(step, members)
        values = MetaParameters.values(meta_state["raw"])
        if step % 2 == 0:
            params, opt_state, _ = inner_step(stacked_problem, params, opt_state, detach_tree(values), batch, frozen)
        else:
            params, opt_state, meta_state, _, _ = bilevel_step(stacked_problem, params, opt_state, meta_state, batch, frozen, {})
        for i, (p, o, m) in enumerate(singles):
            b = {k: v[i : i + 1] for k, v in batch.items()}
            f = {k: v[i : i + 1] for k, v in frozen.items()}
            if step % 2 == 0:
                p, o, _ = inner_step(single_problem, p, o, detach_tree(MetaParameters.values(m["raw"])), b, f)
            else:
                p, o, m, _, _ = bilevel_step(single_problem, p, o, m, b, f, {})
            singles[i] = (p, o, m)
    for i, (p, _, m) in enumerate(singles):
        for k in p:
            torch.testing.assert_close(params[k][i], p[k][0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(meta_state["raw"]["alpha"][i], m["raw"]["alpha"][0], rtol=1e-10, atol=1e-12)
    assert stack_members([member(params, i) for i in range(members)])["w1"].shape == params["w1"].shape


def test_meta_parameter_schedule_and_softplus():
    p = MetaParameter("alpha", init=2.5, lr=2e-3, decay_updates=100)
    assert p.lr_at(0) == pytest.approx(2e-3)
    assert p.lr_at(100) == pytest.approx(2e-5)
    assert p.lr_at(50) == pytest.approx(2e-4)
    assert F.softplus(torch.tensor(inverse_softplus(2.5))).item() == pytest.approx(2.5)
    with pytest.raises(ValueError):
        inverse_softplus(0.0)


def test_stack_members_keeps_step_counters_and_rejects_disagreement():
    opt = adam(1e-3)
    trees = [opt.init(make_params(s)) for s in (0, 1)]
    stacked = stack_members(trees)
    assert stacked["count"] == 0 and stacked["exp_avg"]["w1"].shape == (2, 5, 8)
    trees[1]["count"] = 3
    with pytest.raises(ValueError, match="disagree"):
        stack_members(trees)


# ----------------------------------------------------------------------------- schedules, chain, AdamW
def torch_reference_grads(reference, step):
    loss = inner_objective(reference, {"alpha": 1.0}, make_batch(step), {"direction": torch.ones(3, dtype=DTYPE)})
    for p in reference.values():
        p.grad = None
    loss.backward()


def stacked_params(seed, members=1):
    return make_params(seed, members)


def assert_steps_match(opt, torch_step, members=1, steps=30):
    """``opt`` and a ``torch.optim`` reference fed the same gradients agree after every step (float64),
    from the second on from non-zero moments. Members: the reference runs each member alone."""
    params = stacked_params(20, members)
    references = [{k: torch.nn.Parameter(v[i].clone()) for k, v in params.items()} for i in range(members)]
    torch_optimizers = [torch_step(reference) for reference in references]
    state = opt.init(params)
    for step in range(steps):
        grads = {}
        for i, (reference, (torch_opt, before)) in enumerate(zip(references, torch_optimizers)):
            torch_reference_grads(reference, 100 * i + step)
            for k, p in reference.items():
                grads.setdefault(k, []).append(p.grad.clone())
            before()
            torch_opt.step()
        with torch.no_grad():
            params, state = opt.step({k: torch.stack(g) for k, g in grads.items()}, state, params)
        for i, reference in enumerate(references):
            for k in params:
                torch.testing.assert_close(params[k][i], reference[k].detach(), rtol=1e-12, atol=1e-13, msg=f"step {step} {k}")
    return state


def test_chain_clip_by_global_norm_then_adam_matches_clip_grad_norm_and_torch_adam():
    """Two members, each clipped by its own global norm (0.5: clipping is active on most steps)."""

    def reference(params):
        torch_adam = torch.optim.Adam(params.values(), lr=1e-2, betas=(0.8, 0.99), eps=1e-6)
        return torch_adam, lambda: torch.nn.utils.clip_grad_norm_(list(params.values()), 0.5)

    state = assert_steps_match(chain(clip_by_global_norm(0.5), adam(1e-2, betas=(0.8, 0.99), eps=1e-6)), reference, members=2)
    assert state["optimizer"]["count"] == 30 and state["transforms"] == ({},)


def test_adamw_matches_torch_adamw():
    def reference(params):
        return torch.optim.AdamW(params.values(), lr=1e-2, weight_decay=0.1), lambda: None

    assert_steps_match(adamw(1e-2, weight_decay=0.1), reference)


def test_a_schedule_inside_adam_matches_torch_adam_with_a_lambda_lr_schedule():
    """``adam(cosine_decay(...))`` reads its rate from its own step count, as ``LambdaLR`` stepped after
    every ``Adam.step``: also in the differentiable (out of place) path."""
    schedule = cosine_decay(1e-2, 25)

    def reference(params):
        torch_adam = torch.optim.Adam(params.values(), lr=1e-2)
        lambda_lr = torch.optim.lr_scheduler.LambdaLR(torch_adam, lambda k: schedule(k) / 1e-2)
        stepped = {"first": True}

        def before():  # LambdaLR steps after each optimizer step: here before the next one
            if not stepped.pop("first", False):
                lambda_lr.step()

        return torch_adam, before

    opt = adam(schedule)
    state = assert_steps_match(opt, reference, steps=30)
    assert opt.rate_at(state["count"]) == schedule(30) == 0.0
    leaf = {k: v.clone().requires_grad_() for k, v in stacked_params(3).items()}
    grads = {k: torch.randn_like(v) for k, v in leaf.items()}
    fused, _ = adam(schedule).step(grads, clone_tree(state), {k: v.detach().clone() for k, v in leaf.items()})
    differentiable, _ = adam(schedule).step(grads, state, leaf)
    for k in leaf:
        torch.testing.assert_close(differentiable[k].detach(), fused[k], rtol=1e-12, atol=1e-14)


def test_exponential_decay_is_the_meta_parameter_schedule():
    schedule = exponential_decay(2e-3, 0.01, 100)
    assert schedule(0) == 2e-3 and schedule(100) == pytest.approx(2e-5) and schedule(500) == schedule(100)
    assert MetaParameter("alpha", init=2.5, lr=2e-3, decay_updates=100).lr_at(37) == schedule(37)
    assert exponential_decay(2e-3, 0.01, None)(10**6) == 2e-3


def test_chain_needs_one_optimizer_last():
    with pytest.raises(TypeError, match="one optimizer last"):
        chain(adam(1e-3), clip_by_global_norm(1.0))


# ----------------------------------------------------------------------------- outer losses: one shape
def test_a_stateful_loss_declares_its_update_and_a_tuple_is_a_clear_error():
    problem = make_problem(sgd(0.1))
    counting = OuterLoss("count", outer_fit, 1.0, {"n": 0.0}, lambda ctx: {"n": ctx.state["n"] + 1})
    problem = BilevelProblem(problem.inner_objective, problem.optimizer, [counting], problem.meta_parameters)
    params, batch = make_params(3, 1), make_batch(7, 1)
    frozen = {"direction": torch.ones(1, 3, dtype=DTYPE)}
    step = bilevel_step(problem, params, sgd(0.1).init(params), problem.meta_parameters.init(1, dtype=DTYPE), batch,
                        frozen, problem.init_outer_state(dtype=DTYPE))
    assert isinstance(step, BilevelStep) and step.outer_state["count"]["n"].item() == 1.0
    with pytest.raises(OuterLossError, match="gives both init_state and next_state"):
        OuterLoss("half", outer_fit, 1.0, {"n": 0.0})
    pair = BilevelProblem(problem.inner_objective, problem.optimizer, [OuterLoss("pair", lambda ctx: (outer_fit(ctx), {}))],
                          problem.meta_parameters)
    with pytest.raises(OuterLossError, match="returned a tuple of 2; an outer loss returns one scalar tensor.*next_state"):
        bilevel_step(pair, params, sgd(0.1).init(params), problem.meta_parameters.init(1, dtype=DTYPE), batch, frozen, {})


# ----------------------------------------------------------------------------- K-step unroll
def outer_value_after_k_steps(problem, params, opt_state, rho: float, batch, frozen, steps: int):
    """The outer loss after ``steps`` real optimizer steps on the same batch, as a plain function of rho."""
    alpha = F.softplus(torch.tensor(rho, dtype=DTYPE))
    updated, state = clone_tree(params), clone_tree(opt_state)
    for _ in range(steps):
        leaf = {k: v.clone().requires_grad_() for k, v in updated.items()}
        loss = inner_objective(leaf, {"alpha": alpha}, batch, frozen)
        grads = dict(zip(leaf, torch.autograd.grad(loss, list(leaf.values()))))
        with torch.no_grad():
            updated, state = problem.optimizer.step(grads, state, updated)
    ctx = type("Ctx", (), {"params": params, "updated_params": updated, "batch": batch})
    return outer_fit(ctx) + 3.0 * outer_change(ctx)


@pytest.mark.parametrize("steps", [2, 3])
@pytest.mark.parametrize("optimizer", [sgd(0.05, momentum=0.9), adam(3e-3)], ids=["sgd-momentum", "adam"])
def test_k_step_meta_gradient_matches_central_finite_differences(optimizer, steps):
    """From a warmed-up state (with a parameter whose gradient is exactly zero), the K-step
    hypergradient equals central differences of the outer loss after K real steps, to 1e-6 relative;
    the K steps are committed (params and the optimizer's count)."""
    problem = dataclasses.replace(make_problem(optimizer), hypergradient=Unroll(steps))
    frozen = {"direction": torch.tensor([1.0, -0.5, 0.25], dtype=DTYPE)}
    params, opt_state = make_params(3), optimizer.init(make_params(3))
    for step in range(5):
        new = inner_step(problem, stack(params), _stack_state(opt_state), {"alpha": torch.tensor([2.5], dtype=DTYPE)},
                         stack(make_batch(100 + step)), stack(frozen))
        params, opt_state = member(new.params, 0), member(new.opt_state, 0)
    batch = make_batch(7)
    step = bilevel_step(problem, stack(params), _stack_state(opt_state), problem.meta_parameters.init(1, dtype=DTYPE),
                        stack(batch), stack(frozen), {})
    analytic = step.info["grad/alpha"][0].item()
    rho, h = inverse_softplus(2.5), 1e-5
    plus = outer_value_after_k_steps(problem, params, opt_state, rho + h, batch, frozen, steps).item()
    minus = outer_value_after_k_steps(problem, params, opt_state, rho - h, batch, frozen, steps).item()
    numeric = (plus - minus) / (2 * h)
    assert abs(numeric) > 1e-6 and math.isfinite(analytic)
    assert abs(analytic - numeric) <= 1e-6 * abs(numeric), (analytic, numeric)
    assert step.opt_state["count"] == 5 + steps
    committed = outer_value_after_k_steps(problem, params, opt_state, rho, batch, frozen, steps)
    expected_updated = clone_tree(params)
    alpha = {"alpha": torch.tensor([2.5], dtype=DTYPE)}
    state = _stack_state(opt_state)
    expected_updated = stack(expected_updated)
    for _ in range(steps):
        expected_updated, state, _ = inner_step(problem, expected_updated, state, alpha, stack(batch), stack(frozen))
    for k in params:
        torch.testing.assert_close(step.params[k], expected_updated[k], rtol=1e-10, atol=1e-12)
    assert math.isfinite(committed.item())


def test_k_step_meta_gradient_closed_form_quadratic():
    r"""f = 0.5||theta - a c||^2 with SGD (rate eta), K steps: theta_K = a c + (1 - eta)^K (theta_0 - a c), so
    for L = 0.5||theta_K - t||^2: dL/drho = (theta_K - t) . (1 - (1 - eta)^K) c * sigmoid(rho)."""
    eta, rho0 = 0.3, 0.4
    theta = torch.tensor([[1.0, -2.0, 0.5]], dtype=DTYPE)
    c = torch.tensor([[0.3, 0.7, -1.1]], dtype=DTYPE)
    t = torch.tensor([[2.0, 0.0, 1.0]], dtype=DTYPE)
    alpha = F.softplus(torch.tensor(rho0, dtype=DTYPE))
    for steps in (1, 2, 3, 5):
        problem = BilevelProblem(
            inner_objective=lambda p, m, b, f: 0.5 * ((p["theta"] - m["a"] * b["c"]) ** 2).sum(),
            optimizer=sgd(eta),
            outer_losses=[OuterLoss("target", lambda ctx: 0.5 * ((ctx.updated_params["theta"] - ctx.batch["t"]) ** 2).sum())],
            meta_parameters=MetaParameters([MetaParameter("a", init=alpha.item(), lr=0.1)]),
            hypergradient=Unroll(steps),
        )
        meta_state = problem.meta_parameters.init(1, dtype=DTYPE)
        meta_state["raw"]["a"] = torch.tensor([rho0], dtype=DTYPE)
        step = bilevel_step(problem, {"theta": theta}, sgd(eta).init({"theta": theta}), meta_state, {"c": c, "t": t}, {}, {})
        theta_k = alpha * c + (1 - eta) ** steps * (theta - alpha * c)
        expected = ((theta_k - t) * (1 - (1 - eta) ** steps) * c).sum() * torch.sigmoid(torch.tensor(rho0, dtype=DTYPE))
        torch.testing.assert_close(step.info["grad/a"][0], expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(step.params["theta"], theta_k)


def test_one_step_unroll_is_the_k_step_unroll_with_k_1_and_equal_under_func_grad():
    """``Unroll(1)`` is the default method; the traced form (nested torch.func.grad, taken under
    torch.compile) gives the eager (autograd) numbers, for K = 1 and K = 3."""
    from unittest.mock import patch

    assert make_problem(adam(1e-2)).hypergradient == Unroll(1)
    with pytest.raises(ValueError, match="positive number of inner steps"):
        Unroll(0)
    for steps in (1, 3):
        problem = dataclasses.replace(make_problem(adam(1e-2), members=2), hypergradient=Unroll(steps))
        params, batch = make_params(4, 2), make_batch(5, 2)
        frozen = {"direction": torch.randn(2, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(0))}
        results = []
        for traced in (False, True):
            opt_state = problem.optimizer.init(params)
            with patch("torch.compiler.is_compiling", return_value=traced):
                results.append(bilevel_step(problem, clone_tree(params), opt_state, problem.meta_parameters.init(2, dtype=DTYPE),
                                            batch, frozen, {}))
        eager, traced = results
        assert traced.opt_state["count"] == eager.opt_state["count"] == steps
        torch.testing.assert_close(traced.info, eager.info, rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(traced.params, eager.params, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(traced.meta_state["raw"], eager.meta_state["raw"], rtol=1e-12, atol=1e-14)


def stack(tree):
    return {k: v.unsqueeze(0) for k, v in tree.items()}
