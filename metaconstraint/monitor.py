"""What the training loop watches on the device: metric sums and divergence.

Both keep their records as tensors on the training device and are read back only when metrics are
flushed (which syncs anyway), so an iteration never waits for the host.

- :class:`Accumulator`: running sums of each metric over the open logging window.
- :class:`DivergenceGuard`: the first iteration at which a metric became NaN or infinite, or the
  learned scale left ``[scale_min, scale_max]``, per member.
- :func:`non_finite_tensors`: the state's tensors holding a NaN or infinity, by path.
- :func:`divergence_message`: what a diverged run says (which quantity, when, which members).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from metaconstraint.runs import SCALE_PREFIX

__all__ = ["Accumulator", "DivergenceGuard", "TrainingDiverged", "named_leaves", "non_finite_tensors"]


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite value or an insane constraint scale.

    ``quantity`` and ``iteration`` name the first bad value; ``seeds`` the members it hit.
    """

    def __init__(self, message: str, quantity: str, iteration: int, seeds: list[int]):
        super().__init__(message)
        self.quantity, self.iteration, self.seeds = quantity, iteration, seeds


@dataclass
class Accumulator:
    """Running sums of per-iteration metrics, on the device (no host sync until ``drain``)."""

    sums: dict[str, Tensor] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, metrics: dict[str, Tensor]) -> None:
        for name, value in metrics.items():
            if name in self.sums:
                self.sums[name] += value
                self.counts[name] += 1
            else:
                self.sums[name] = value.detach().clone().float()
                self.counts[name] = 1

    def drain(self) -> dict[str, np.ndarray]:
        means = {name: (total / self.counts[name]).cpu().numpy() for name, total in self.sums.items()}
        self.sums, self.counts = {}, {}
        return means

    def member(self, k: int) -> dict[str, Any]:
        """Member ``k``'s open window (copies), for a checkpoint."""
        return {"sums": {n: s[k].clone() for n, s in self.sums.items()}, "counts": dict(self.counts)}

    @classmethod
    def stacked(cls, members: list[dict[str, Any]], device) -> "Accumulator":
        names = list(members[0]["sums"])
        sums = {n: torch.stack([m["sums"][n] for m in members]).to(device) for n in names}
        return cls(sums, dict(members[0]["counts"]))


class DivergenceGuard:
    """The first iteration at which each watched quantity went bad, per member, kept on the device.

    ``observe`` (every iteration, no host sync) marks a metric that is NaN or infinite, and the
    learned scale (watched as ``scale_name``, e.g. ``"scale/beta"``) when it leaves
    ``[scale_min, scale_max]`` or is not finite. For each set of metric names an iteration reports,
    ``first[names]`` is ``(Q, M)`` with 0 for "never" (iterations are 1-based). ``bad`` (at a
    metrics flush, which syncs anyway) reads it back.
    """

    def __init__(self, num_members: int, device: torch.device, scale_min: float, scale_max: float, scale_name: str = "scale"):
        self.num_members, self.device = num_members, device
        self.scale_min, self.scale_max, self.scale_name = scale_min, scale_max, scale_name
        self.first: dict[tuple[str, ...], Tensor] = {}

    def observe(self, iteration: int, metrics: dict[str, Tensor], scale: Tensor | None) -> None:
        values = list(metrics.values())
        names = tuple(metrics)
        if scale is not None:
            scale = scale.detach()
            sane = (scale >= self.scale_min) & (scale <= self.scale_max)  # NaN fails both
            values.append(torch.where(sane, scale, math.nan))
            names += (self.scale_name,)
        if not values:
            return
        bad = ~torch.isfinite(torch.stack(values))
        first = self.first.get(names)
        if first is None:
            first = self.first[names] = torch.zeros((len(names), self.num_members), dtype=torch.long, device=self.device)
        first.masked_fill_((first == 0) & bad, iteration)

    def bad(self) -> list[tuple[int, str, list[int]]]:
        """``(first iteration, quantity, member indices hit then)`` of every bad quantity, earliest first."""
        earliest: dict[str, np.ndarray] = {}
        for names, first in self.first.items():
            first = first.cpu().numpy()
            for q, name in enumerate(names):
                row = np.where(first[q] > 0, first[q], np.iinfo(np.int64).max)
                earliest[name] = np.minimum(earliest[name], row) if name in earliest else row
        found = []
        for name, row in earliest.items():
            step = int(row.min())
            if step != np.iinfo(np.int64).max:
                found.append((step, name, [int(k) for k in np.flatnonzero(row == step)]))
        return sorted(found)


def named_leaves(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(path, leaf)`` of a tree of dicts, lists and tuples: ``"actor.params[0]"``."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from named_leaves(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            yield from named_leaves(value, f"{prefix}[{i}]")
    else:
        yield prefix, tree


def non_finite_tensors(state: Any) -> list[str]:
    """Paths of the floating-point tensors of ``state`` holding a NaN or infinity (one host sync)."""
    named = [(path, t) for path, t in named_leaves(state) if isinstance(t, Tensor) and t.is_floating_point()]
    if not named:
        return []
    finite = torch.stack([torch.isfinite(t).all() for _, t in named]).cpu().tolist()
    return [path for (path, _), ok in zip(named, finite) if not ok]


def divergence_message(
    guard: DivergenceGuard, broken: list[str], iteration: int, scale: Tensor | None, who: Callable[[list[int]], str]
) -> tuple[str, str, int, list[int] | None]:
    """``(what happened, quantity, iteration, member indices)`` for the guard's earliest bad quantity,
    else for the state's first non-finite tensor ``broken[0]`` (indices ``None``: every member);
    ``who(indices)`` names members ("seeds 3, 4")."""
    found = guard.bad()
    if found:
        step, quantity, hit = found[0]
        if quantity == guard.scale_name:
            now = ", ".join(f"{float(scale[k]):.4g}" for k in hit) if scale is not None else "?"
            what = (
                f"the learned scale ({quantity.removeprefix(SCALE_PREFIX)}) left its sane range [alpha_min, alpha_max] = "
                f"[{guard.scale_min:g}, {guard.scale_max:g}] at iteration {step} ({who(hit)}; now {now})"
            )
        else:
            what = f"{quantity} became non-finite (NaN or Inf) at iteration {step} ({who(hit)})"
        others = [f"{name} (from iteration {s})" for s, name, _ in found[1:4]]
        if others:
            what += "; also " + ", ".join(others)
    else:
        step, quantity, hit = iteration, broken[0], None
        what = f"the state became non-finite by iteration {iteration}"
    if broken:
        what += f". Non-finite now: {', '.join(broken[:4])}" + (f" and {len(broken) - 4} more" if len(broken) > 4 else "")
    return what, quantity, step, hit
