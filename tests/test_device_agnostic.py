"""The hot loop is device-agnostic: no CPU-only tensor creation, no host sync.

No GPU is lent to this project, so the update is run on torch's ``meta`` device, where tensors have
shapes but no data: a tensor created on the CPU by mistake meets the meta tensors and raises a
device mismatch, and a host sync (``.item()``, ``float(t)``, ``bool(t)``, ``.cpu()``) raises because
there is nothing to copy. What passes here creates every tensor where its inputs live, as
``--device cuda`` needs. The minibatch sampler is checked on CPU with a guard that rejects any
factory call without an explicit device."""

from unittest.mock import patch

import pytest
import torch
from torch.overrides import TorchFunctionMode

from metaconstraint.algorithms import ALGORITHMS
from metaconstraint.algorithms.base import ProblemSpec

META = torch.device("meta")
OBS, ACT, MEMBERS = 11, 3, 2


class MetaSampler:
    """MemberSampler's interface, minibatches and noise as data-less meta tensors ``(M, B, ...)``."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size

    def _empty(self, *shape):
        return torch.empty(MEMBERS, *shape, device=META)

    def sample(self):
        b = self.batch_size
        return {"observations": self._empty(b, OBS), "actions": self._empty(b, ACT), "rewards": self._empty(b),
                "next_observations": self._empty(b, OBS), "next_actions": self._empty(b, ACT), "terminals": self._empty(b)}

    def normal(self, *shape):
        return self._empty(*shape)

    def uniform(self, *shape):
        return self._empty(*shape)


def run_on_meta(name: str, iterations: int = 20, traced: bool = False) -> dict:
    """``iterations`` updates of ``name`` (2 stacked seeds; 20 covers actor steps and ASPC's alpha
    step) with the per-iteration bookkeeping of the training loop, all on the meta device."""
    from metaconstraint.monitor import Accumulator, DivergenceGuard

    cls = ALGORITHMS[name]
    algorithm = cls(cls.Config(), ProblemSpec(OBS, ACT, 1.0, 1000), MEMBERS, META)
    state = algorithm.init_state(list(range(MEMBERS)))
    sampler = MetaSampler(algorithm.batch_size)
    accumulator, guard = Accumulator(), DivergenceGuard(MEMBERS, META, 1e-6, 1e4)
    for iteration in range(1, iterations + 1):
        if traced:  # the branches torch.compile traces (func.grad, Adam out of place), run eagerly
            with patch("torch.compiler.is_compiling", return_value=True):
                state, metrics = algorithm.update(state, sampler, iteration)
        else:
            state, metrics = algorithm.update(state, sampler, iteration)
        accumulator.add(metrics)
        guard.observe(iteration, metrics, algorithm.constraint_scale(state))
    return state


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_an_update_creates_no_cpu_tensor_and_never_syncs(name):
    state = run_on_meta(name)
    tensors = [t for network in state.values() if isinstance(network, dict) for t in network.values() if isinstance(t, torch.Tensor)]
    assert tensors and all(t.device == META for t in tensors)


@pytest.mark.parametrize("name", ["td3bc", "aspc"])
def test_the_compiled_path_creates_no_cpu_tensor_and_never_syncs(name):
    run_on_meta(name, traced=True)


def test_the_meta_device_catches_a_cpu_tensor_and_a_sync():
    """The check above can fail: a CPU tensor or a host sync in the update raises on meta."""
    from metaconstraint.algorithms.adaptive import FixedScale
    from metaconstraint.algorithms.td3 import TD3Backbone

    with patch.object(FixedScale, "values", lambda self, state: {self.name: torch.full(self.read().shape, 2.5)}):
        with pytest.raises(RuntimeError, match="device"):
            run_on_meta("td3bc", iterations=2)
    sync = TD3Backbone.update_targets

    def syncing(self, state):
        float(state["actor"]["w0"].sum())
        return sync(self, state)

    with patch.object(TD3Backbone, "update_targets", syncing):
        with pytest.raises((RuntimeError, NotImplementedError)):
            run_on_meta("td3bc", iterations=2)


FACTORIES = {torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.randint, torch.arange,
             torch.tensor, torch.as_tensor, torch.eye, torch.linspace}


class ExplicitDevice(TorchFunctionMode):
    """Rejects tensor factories called without ``device=`` (they would land on the CPU)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and "device" not in kwargs:
            raise AssertionError(f"{func.__name__} without a device")
        return func(*args, **kwargs)


def test_the_sampler_draws_on_the_buffer_device():
    import numpy as np
    from types import SimpleNamespace

    from metaconstraint.rl.buffer import MemberSampler, OfflineBuffer, StateNormalizer

    rng = np.random.default_rng(0)
    data = SimpleNamespace(**{name: rng.standard_normal((50, *dims), dtype=np.float32) for name, dims in (
        ("observations", (OBS,)), ("actions", (ACT,)), ("rewards", ()), ("next_observations", (OBS,)),
        ("next_actions", (ACT,)), ("terminals", ()))})
    sampler = MemberSampler(OfflineBuffer(data, StateNormalizer.identity(OBS)), 8, [0, 1])
    with ExplicitDevice():
        batch, noise, uniform = sampler.sample(), sampler.normal(ACT), sampler.uniform(4)
    assert batch["observations"].shape == (2, 8, OBS) and noise.shape == (2, ACT) and uniform.shape == (2, 4)
    with pytest.raises(AssertionError, match="without a device"), ExplicitDevice():
        torch.zeros(3)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_exploring_online_creates_no_cpu_tensor(name):
    cls = ALGORITHMS[name]
    algorithm = cls(cls.Config(), ProblemSpec(OBS, ACT, 1.0, 1000), MEMBERS, META)
    state = algorithm.init_state(list(range(MEMBERS)))
    actions = algorithm.explore(state, torch.empty(MEMBERS, 1, OBS, device=META), 0.1, MetaSampler(algorithm.batch_size))
    assert actions.shape == (MEMBERS, 1, ACT) and actions.device == META


def test_the_online_buffer_and_the_mixed_sampler_work_on_the_buffer_device():
    import numpy as np
    from types import SimpleNamespace

    from metaconstraint.rl.buffer import OfflineBuffer, StateNormalizer
    from metaconstraint.rl.online import MixedSampler, OnlineBuffer

    rng = np.random.default_rng(0)
    data = SimpleNamespace(**{name: rng.standard_normal((50, *dims), dtype=np.float32) for name, dims in (
        ("observations", (OBS,)), ("actions", (ACT,)), ("rewards", ()), ("next_observations", (OBS,)),
        ("next_actions", (ACT,)), ("terminals", ()))})
    normalizer = StateNormalizer.identity(OBS)
    online = OnlineBuffer(MEMBERS, 10, OBS, ACT, normalizer, "cpu")
    sampler = MixedSampler(OfflineBuffer(data, normalizer), online, 8, [0, 1], 0.5)
    with ExplicitDevice():
        for ended in (False, True):
            online.complete(np.zeros((MEMBERS, ACT)))
            online.add(np.zeros((MEMBERS, OBS)), np.zeros((MEMBERS, ACT)), np.zeros(MEMBERS), np.zeros((MEMBERS, OBS)),
                       np.zeros(MEMBERS), np.array([ended] * MEMBERS))
        batch = sampler.sample()
    assert batch["observations"].shape == (MEMBERS, 8, OBS) and online.sizes == [2, 2]
