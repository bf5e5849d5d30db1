"""The offline dataset on the training device, and per-member sampling.

Each member (seed) draws its minibatch indices and its noise from its own ``torch.Generator``, so
member ``k`` of a stacked run sees exactly the stream a single run with that seed sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

FIELDS = ("observations", "actions", "rewards", "next_observations", "next_actions", "terminals")


@dataclass(frozen=True)
class StateNormalizer:
    """``(s - mean) / (std + eps)`` with the dataset's statistics (eps 1e-3, as TD3+BC)."""

    mean: Tensor
    std: Tensor

    @classmethod
    def fit(cls, observations: np.ndarray, eps: float = 1e-3, device="cpu") -> "StateNormalizer":
        mean = observations.mean(0, dtype=np.float64)
        std = observations.std(0, dtype=np.float64) + eps
        return cls(torch.as_tensor(mean, dtype=torch.float32, device=device), torch.as_tensor(std, dtype=torch.float32, device=device))

    @classmethod
    def identity(cls, dim: int, device="cpu") -> "StateNormalizer":
        return cls(torch.zeros(dim, device=device), torch.ones(dim, device=device))

    def __call__(self, states: Tensor) -> Tensor:
        return (states - self.mean) / self.std


class OfflineBuffer:
    """Transitions as float32 tensors on ``device`` (states already normalised)."""

    def __init__(self, transitions, normalizer: StateNormalizer, device="cpu"):
        self.normalizer = normalizer
        self.device = torch.device(device)
        data = {name: torch.as_tensor(np.asarray(getattr(transitions, name), dtype=np.float32), device=self.device) for name in FIELDS}
        data["observations"] = normalizer(data["observations"])
        data["next_observations"] = normalizer(data["next_observations"])
        self.data = data
        self.size = int(data["rewards"].shape[0])


class MemberSampler:
    """Minibatches ``(M, B, ...)``, Gaussian and uniform noise ``(M, ...)``, one generator per member."""

    def __init__(self, buffer: OfflineBuffer, batch_size: int, seeds: list[int]):
        self.buffer = buffer
        self.batch_size = batch_size
        self.generators = [torch.Generator(device=buffer.device).manual_seed(int(seed)) for seed in seeds]

    def _per_member(self, draw) -> Tensor:
        samples = [draw(g) for g in self.generators]
        return samples[0].unsqueeze(0) if len(samples) == 1 else torch.stack(samples)

    def sample(self) -> dict[str, Tensor]:
        n, b, device = self.buffer.size, self.batch_size, self.buffer.device
        index = self._per_member(lambda g: torch.randint(n, (b,), generator=g, device=device))
        # index_select on the flat indices: 3x faster on CPU than advanced indexing with (M, B)
        flat = index.reshape(-1)
        return {name: values.index_select(0, flat).view(*index.shape, *values.shape[1:]) for name, values in self.buffer.data.items()}

    def normal(self, *shape: int) -> Tensor:
        device = self.buffer.device
        return self._per_member(lambda g: torch.randn(shape, generator=g, device=device))

    def uniform(self, *shape: int) -> Tensor:
        """Uniform draws on ``[0, 1)``, ``(M, *shape)`` (e.g. dropout masks)."""
        device = self.buffer.device
        return self._per_member(lambda g: torch.rand(shape, generator=g, device=device))

    def get_state(self) -> list[Tensor]:
        return [g.get_state() for g in self.generators]

    def set_state(self, states: list[Tensor]) -> None:
        for g, s in zip(self.generators, states):
            g.set_state(s)
