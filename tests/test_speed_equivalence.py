"""The optimised update (twin critics in one tensor set, functional fused Adam, per-member vmap,
device-side metrics) computes the same numbers as the plain eager one in benchmarks/eager_reference.py:
separate critic modules, per-module ``torch.optim.Adam``, targets updated parameter by parameter."""

from __future__ import annotations

import pytest
import torch

from benchmarks.eager_reference import EagerTD3BC
from metaconstraint.algorithms import ALGORITHMS
from metaconstraint.algorithms.base import ProblemSpec

OBS, ACT, B = 7, 3, 32
TOTAL_STEPS = 1000
DECAY_UPDATES = 1_000_000 // 20  # ASPC's alpha lr decays over 1M iterations whatever the run's length


def load_into(module: torch.nn.Module, params: dict, member: int, index: int | None = None) -> None:
    """Copy our ``(in, out)`` weights of one member (and one twin) into ``nn.Linear``/``LayerNorm`` modules."""
    pick = (lambda t: t[member]) if index is None else (lambda t: t[member, index])
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    norms = [m for m in module.modules() if isinstance(m, torch.nn.LayerNorm)]
    with torch.no_grad():
        for i, layer in enumerate(linears):
            layer.weight.copy_(pick(params[f"w{i}"]).T)
            layer.bias.copy_(pick(params[f"b{i}"]))
        for i, norm in enumerate(norms):
            norm.weight.copy_(pick(params[f"ln{i}.weight"]))
            norm.bias.copy_(pick(params[f"ln{i}.bias"]))


class FixedBatches:
    """A sampler that hands out pre-drawn batches and smoothing noise, for both implementations."""

    def __init__(self, batches, noises):
        self.batches, self.noises, self.i = batches, noises, 0

    def sample(self):
        return {k: v.unsqueeze(0) for k, v in self.batches[self.i].items()}

    def normal(self, *shape):
        noise = self.noises[self.i].unsqueeze(0)
        self.i += 1
        return noise


@pytest.fixture
def float64():
    """float64 throughout: Adam divides tiny gradients by their own scale, so float32 rounding
    shows up at ~1e-5 in a few weights and would blur a real difference."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def make_batches(steps: int):
    return [
        {
            "observations": torch.randn(B, OBS),
            "actions": torch.rand(B, ACT) * 2 - 1,
            "rewards": torch.randn(B),
            "next_observations": torch.randn(B, OBS),
            "next_actions": torch.rand(B, ACT) * 2 - 1,
            "terminals": (torch.rand(B) < 0.1).float(),
        }
        for _ in range(steps)
    ]


def run_both(name: str, steps: int, **eager_options):
    """``steps`` iterations of our ``name`` update and of the eager reference from the same weights,
    batches and smoothing noise; returns ``(our state, eager agent)``."""
    torch.manual_seed(0)
    cls = ALGORITHMS[name]
    algorithm = cls(cls.Config(), ProblemSpec(OBS, ACT, 1.0, TOTAL_STEPS), 1, torch.device("cpu"))
    state = algorithm.init_state([3])
    eager = EagerTD3BC(OBS, ACT, adaptive=name == "aspc", **eager_options)
    load_into(eager.actor, state["actor"], 0)
    load_into(eager.actor_target, state["target_actor"], 0)
    for twin, (critic, target) in enumerate(((eager.critic1, eager.critic1_target), (eager.critic2, eager.critic2_target))):
        load_into(critic, state["critic"], 0, twin)
        load_into(target, state["target_critic"], 0, twin)
    batches = make_batches(steps)
    noises = [torch.randn(B, ACT) for _ in range(steps)]
    sampler = FixedBatches(batches, noises)
    meta_grads = []
    for iteration in range(1, steps + 1):
        state, metrics = algorithm.update(state, sampler, iteration)
        if "grad/alpha" in metrics:
            meta_grads.append(metrics["grad/alpha"][0])
        b = batches[iteration - 1]
        eager.update((b["observations"], b["actions"], b["rewards"], b["next_observations"], b["terminals"]), noise=noises[iteration - 1])
    return state, eager, meta_grads


def assert_same_networks(state, eager, rtol=1e-9, atol=1e-10) -> None:
    expected = {
        "actor": [(eager.actor, None)],
        "critic": [(eager.critic1, 0), (eager.critic2, 1)],
        "target_critic": [(eager.critic1_target, 0), (eager.critic2_target, 1)],
        "target_actor": [(eager.actor_target, None)],
    }
    for key, modules in expected.items():
        for module, twin in modules:
            linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
            for i, layer in enumerate(linears):
                ours = state[key][f"w{i}"][0] if twin is None else state[key][f"w{i}"][0, twin]
                torch.testing.assert_close(ours, layer.weight.detach().T, rtol=rtol, atol=atol, msg=f"{key} w{i}")
                ours_b = state[key][f"b{i}"][0] if twin is None else state[key][f"b{i}"][0, twin]
                torch.testing.assert_close(ours_b, layer.bias.detach(), rtol=rtol, atol=atol, msg=f"{key} b{i}")
    # the weights moved: the comparison is not between two untouched initialisations
    assert not torch.equal(state["actor"]["w0"][0], state["target_actor"]["w0"][0])


def test_td3bc_update_equals_the_eager_reference_on_fixed_batches(float64):
    state, eager, _ = run_both("td3bc", 6)  # three critic-only and three actor+target iterations
    assert_same_networks(state, eager)


def test_aspc_update_equals_the_eager_reference_on_fixed_batches(float64):
    """40 iterations: 20 actor steps, two of them alpha updates (iterations 20 and 40), with the
    eager reference's second-order graph on every actor step and ours only on those two."""
    state, eager, meta_grads = run_both("aspc", 40, decay_updates=DECAY_UPDATES)
    assert len(meta_grads) == len(eager.alpha_grads) == 2
    for ours, theirs in zip(meta_grads, eager.alpha_grads):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=0.0)
    alpha = torch.nn.functional.softplus(state["meta"]["raw"]["alpha"][0])
    expected_alpha = torch.nn.functional.softplus(eager.raw_alpha.detach())
    torch.testing.assert_close(alpha, expected_alpha, rtol=1e-9, atol=1e-12)
    assert abs(alpha.item() - 2.5) > 1e-4  # alpha moved, twice
    assert state["meta"]["updates"] == 2
    assert_same_networks(state, eager, rtol=1e-8, atol=1e-10)
