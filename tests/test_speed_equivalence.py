"""The optimised update (twin critics in one tensor set, functional fused Adam, per-member vmap,
device-side metrics) computes the same numbers as the plain eager one in benchmarks/eager_reference.py:
separate critic modules, per-module ``torch.optim.Adam``, targets updated parameter by parameter."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from metaconstraint.algorithms import ALGORITHMS
from metaconstraint.algorithms.base import ProblemSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from eager_reference import EagerTD3BC  # noqa: E402

OBS, ACT, B = 7, 3, 32


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


def test_td3bc_update_equals_the_eager_reference_on_fixed_batches(float64):
    torch.manual_seed(0)
    algorithm = ALGORITHMS["td3bc"](ALGORITHMS["td3bc"].Config(), ProblemSpec(OBS, ACT, 1.0, 1000), 1, torch.device("cpu"))
    state = algorithm.init_state([3])
    eager = EagerTD3BC(OBS, ACT)
    load_into(eager.actor, state["actor"], 0)
    load_into(eager.actor_target, state["target_actor"], 0)
    for twin, (critic, target) in enumerate(((eager.critic1, eager.critic1_target), (eager.critic2, eager.critic2_target))):
        load_into(critic, state["critic"], 0, twin)
        load_into(target, state["target_critic"], 0, twin)

    steps = 6  # three critic-only and three actor+target iterations
    batches = [
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
    noises = [torch.randn(B, ACT) for _ in range(steps)]
    sampler = FixedBatches(batches, noises)
    for iteration in range(1, steps + 1):
        state, _ = algorithm.update(state, sampler, iteration)
        b = batches[iteration - 1]
        eager.update((b["observations"], b["actions"], b["rewards"], b["next_observations"], b["terminals"]), noise=noises[iteration - 1])

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
                torch.testing.assert_close(ours, layer.weight.detach().T, rtol=1e-9, atol=1e-10, msg=f"{key} w{i}")
                ours_b = state[key][f"b{i}"][0] if twin is None else state[key][f"b{i}"][0, twin]
                torch.testing.assert_close(ours_b, layer.bias.detach(), rtol=1e-9, atol=1e-10, msg=f"{key} b{i}")
    # the weights moved: the comparison is not between two untouched initialisations
    assert not torch.equal(state["actor"]["w0"][0], state["target_actor"]["w0"][0])
