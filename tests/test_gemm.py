"""The GEMM routing (metaconstraint.engine.gemm): with oneDNN forced on, every float32 CPU product
of the update runs through oneDNN and the update computes what the default (MKL) path computes,
to float32 rounding: forward, gradients, gradients of gradients (the bilevel step through the
functional Adam step), vmap, jvp, a compiled graph and a few training iterations."""

import pytest
import torch

from member_checks import synthetic_buffer

from metaconstraint.engine import gemm
from metaconstraint.rl.networks import deterministic_actor, init_members, q1, twin_critic

pytestmark = pytest.mark.skipif(not gemm.onednn_available(), reason="this torch build has no oneDNN")
OBS, ACT, BATCH = 11, 3, 64


def count_calls(monkeypatch, name: str) -> dict:
    """Replace ``gemm.<name>`` by a wrapper counting its calls; the count as ``{"n": ...}``."""
    calls = {"n": 0}
    original = getattr(gemm, name)

    def counted(*args):
        calls["n"] += 1
        return original(*args)

    monkeypatch.setattr(gemm, name, counted)
    return calls


@pytest.fixture
def onednn_calls(monkeypatch):
    """Counts the 2-D products that ran through oneDNN (eager path)."""
    yield count_calls(monkeypatch, "_onednn_2d")
    gemm.set_gemm("default")


def both_modes(fn, mode="onednn"):
    """``fn()`` on the default path and with ``mode``; both results."""
    gemm.set_gemm("default")
    reference = fn()
    gemm.set_gemm(mode)
    try:
        routed = fn()
    finally:
        gemm.set_gemm("default")
    return reference, routed


def close(reference, routed, rtol=1e-5):
    """Equal to float32 rounding: every tensor within ``rtol`` of its own largest entry."""
    from torch.utils._pytree import tree_flatten

    expected, _ = tree_flatten(reference)
    actual, _ = tree_flatten(routed)
    assert len(expected) == len(actual)
    for want, got in zip(expected, actual):
        torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * float(want.abs().max()))


def networks(members=1):
    actor, critic = deterministic_actor(OBS, ACT, 1.0), twin_critic(OBS, ACT)
    squeeze = (lambda p: {k: v[0] for k, v in p.items()}) if members == 1 else (lambda p: p)
    return actor, critic, squeeze(init_members(actor, list(range(members)), "cpu")), squeeze(
        init_members(critic, list(range(members)), "cpu", salt=1)
    )


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, OBS, generator=g), torch.rand(BATCH, ACT, generator=g) * 2 - 1


def test_forward_and_gradients_equal_the_default_path(onednn_calls):
    actor, critic, actor_params, critic_params = networks()
    states, actions = batch()

    def run():
        q = critic.apply(critic_params, states, actions)
        actor_loss = lambda p: -q1(critic, critic_params, states, actor.apply(p, states)).mean()  # noqa: E731
        critic_grads = torch.func.grad(lambda p: critic.apply(p, states, actions).pow(2).mean())(critic_params)
        return q, actor.apply(actor_params, states), torch.func.grad(actor_loss)(actor_params), critic_grads

    reference, routed = both_modes(run)
    close(reference, routed)
    assert onednn_calls["n"] >= 4 * 2 + 3 * 3  # critic and actor layers, forward and backward


def test_second_order_through_a_functional_adam_step_equals_the_default_path(onednn_calls):
    """The bilevel step's shape: d/d(alpha) of an outer loss at theta - lr * Adam(grad_theta f(theta, alpha))."""
    actor, critic, actor_params, critic_params = networks()
    states, actions = batch()

    def run():
        alpha = torch.tensor(2.5, requires_grad=True)
        params = {k: v.clone().requires_grad_() for k, v in actor_params.items()}
        pi = actor.apply(params, states)
        q = q1(critic, critic_params, states, pi)
        inner = -alpha * q.mean() / q.abs().mean().detach() + (pi - actions).pow(2).mean()
        grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
        updated = {k: p - 3e-4 * g / (g.abs() + 1e-8) ** 0.5 for (k, p), g in zip(params.items(), grads)}
        outer = -q1(critic, critic_params, states, actor.apply(updated, states)).mean()
        (meta_grad,) = torch.autograd.grad(outer, alpha)
        return meta_grad

    reference, routed = both_modes(run)
    assert reference.abs() > 0
    close(reference, routed, rtol=1e-4)
    assert onednn_calls["n"] > 20


def test_vmap_over_members_and_jvp_equal_the_default_path(onednn_calls):
    actor, critic, actor_params, critic_params = networks(members=3)
    states, actions = batch()

    def run():
        q = torch.func.vmap(critic.apply, in_dims=(0, None, None))(critic_params, states, actions)
        grads = torch.func.vmap(torch.func.grad(lambda p: actor.apply(p, states).pow(2).sum()))(actor_params)
        one = {k: v[0] for k, v in actor_params.items()}
        tangents = {k: torch.ones_like(v) for k, v in one.items()}
        _, jvp = torch.func.jvp(lambda p: actor.apply(p, states), (one,), (tangents,))
        return q, grads, jvp

    reference, routed = both_modes(run)
    close(reference, routed)
    assert onednn_calls["n"] > 0


def test_other_devices_and_dtypes_keep_torch_matmul(onednn_calls):
    """Only float32 CPU tensors are routed: float64 and other devices (a GPU; here the meta device)
    take torch.matmul unchanged."""
    gemm.set_gemm("onednn")
    a, b = torch.randn(5, 7, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    assert torch.equal(gemm.matmul(a, b), a @ b)
    out = gemm.matmul(torch.empty(5, 7, device="meta"), torch.empty(2, 7, 3, device="meta"))
    assert out.device.type == "meta" and out.shape == (2, 5, 3)
    assert onednn_calls["n"] == 0


def test_auto_times_each_product_shape_once_and_agrees(monkeypatch):
    timings = count_calls(monkeypatch, "best_time")
    monkeypatch.setattr(gemm, "_choice", {})
    actor, _, actor_params, _ = networks()
    states, _ = batch()
    loss = lambda p: actor.apply(p, states).pow(2).sum()  # noqa: E731
    reference, routed = both_modes(lambda: torch.func.grad(loss)(actor_params), mode="auto")
    close(reference, routed)
    first = timings["n"]
    assert first > 0 and set(gemm.choices().values()) <= {"aten", "onednn"}
    both_modes(lambda: torch.func.grad(loss)(actor_params), mode="auto")
    assert timings["n"] == first  # cached per process


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="gemm must be one of"):
        gemm.set_gemm("openblas!")


def test_the_graph_pass_reroutes_float32_products_and_keeps_the_rest():
    """GemmGraphPass on a traced (already differentiated) graph: float32 mm and bmm become the oneDNN
    ops, a float64 mm stays, and the graph computes the same values."""
    from torch.fx.experimental.proxy_tensor import make_fx

    def products(a, w, x, y, d, e):
        return a @ w, torch.bmm(x, y), d @ e

    args = (torch.randn(8, 5), torch.randn(5, 4), torch.randn(2, 8, 5), torch.randn(2, 5, 4),
            torch.randn(3, 3, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64))
    graph_module = make_fx(products, tracing_mode="fake")(*args)
    gemm.set_gemm("onednn")
    try:
        gemm.GemmGraphPass()(graph_module.graph)
    finally:
        gemm.set_gemm("default")
    graph_module.recompile()
    targets = [node.target for node in graph_module.graph.nodes if node.op == "call_function"]
    assert torch.ops.metaconstraint.onednn_mm.default in targets and torch.ops.metaconstraint.onednn_bmm.default in targets
    assert targets.count(torch.ops.aten.mm.default) == 1  # the float64 one
    close(products(*args), graph_module(*args))


@pytest.mark.slow
def test_compiled_graphs_call_onednn_and_agree():
    """With oneDNN forced, the compiled forward and backward call the oneDNN op (inductor post-grad
    pass) and compute what the compiled default path computes."""
    from torch._inductor.utils import run_and_get_code

    actor, critic, actor_params, critic_params = networks()
    states, actions = batch()

    def step(actor_params, critic_params):
        loss = lambda p: -q1(critic, critic_params, states, actor.apply(p, states)).mean()  # noqa: E731
        return torch.func.grad_and_value(loss)(actor_params)

    results, codes = {}, {}
    for mode in ("default", "onednn"):
        gemm.set_gemm(mode)
        try:
            torch._dynamo.reset()
            compiled = torch.compile(step, options=gemm.compile_options() or None)
            results[mode], codes[mode] = run_and_get_code(compiled, actor_params, critic_params)
        finally:
            gemm.set_gemm("default")
    close(results["default"], results["onednn"])
    assert "onednn_mm" in "".join(codes["onednn"]) and "onednn_mm" not in "".join(codes["default"])


def train(mode: str, name: str, members: int, iterations: int) -> dict:
    from metaconstraint.algorithms import ALGORITHMS
    from metaconstraint.algorithms.base import ProblemSpec
    from metaconstraint.rl.buffer import MemberSampler

    gemm.set_gemm(mode)
    try:
        cls = ALGORITHMS[name]
        algorithm = cls(cls.Config(), ProblemSpec(OBS, ACT, 1.0, 1000), members, torch.device("cpu"))
        seeds = list(range(members))
        sampler = MemberSampler(synthetic_buffer(obs_dim=OBS, action_dim=ACT), algorithm.batch_size, seeds)
        state = algorithm.init_state(seeds)
        for iteration in range(1, iterations + 1):
            state, _ = algorithm.update(state, sampler, iteration)
    finally:
        gemm.set_gemm("default")
    return state


@pytest.mark.parametrize(("name", "members"), [("aspc", 1), ("aspc", 2), ("td3bc", 1)])
def test_training_iterations_equal_the_default_path(onednn_calls, name, members):
    """22 iterations (11 actor steps, ASPC's alpha step through the functional Adam step at 20 and the
    actor step with the new alpha after it), one seed and two stacked (vmap): the same networks and
    alpha as the default path, to float32 rounding. (Longer runs drift apart further, as any change of
    summation order does: Adam divides by the root of tiny second moments and amplifies rounding.)"""
    reference, routed = train("default", name, members, 22), train("onednn", name, members, 22)
    assert onednn_calls["n"] > 0
    for key in ("actor", "critic", "target_actor", "target_critic"):
        for param, value in reference[key].items():
            torch.testing.assert_close(routed[key][param], value, rtol=1e-4, atol=2e-5, msg=f"{key} {param}")
    if name == "aspc":
        assert routed["meta"]["updates"] == 1
        torch.testing.assert_close(routed["meta"]["raw"], reference["meta"]["raw"], rtol=1e-4, atol=1e-6)
