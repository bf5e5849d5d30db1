"""Whether a run's minibatch fits in memory, checked before anything is allocated.

A batch far too large for the machine (``batch_size = 100000000``) is otherwise allocated piece
by piece until the operating system kills the process (exit 137, no message). One iteration holds
the batch's tensors and the networks' activations for every sample of every member (seed):

.. math:: \\text{bytes} \\approx M \\cdot B \\cdot \\big(4\\,(2 d_s + 2 d_a + 2) + c\\big)

for ``M`` members, batch ``B``, ``d_s``-dimensional states and ``d_a``-dimensional actions
(float32: states, next states, actions, next actions, reward, terminal), and ``c`` bytes of
activations per sample (:data:`ACTIVATION_BYTES_PER_SAMPLE`, measured).
"""

from __future__ import annotations

from pathlib import Path

import torch

# Activations per sample and member of one iteration, measured as peak resident memory (ru_maxrss) of
# 20 iterations (one bilevel step) at batch 16,384 minus batch 2,048, over the 14,336 extra samples, pen
# shapes, one thread: aspc 53 KB, aspc-iql 28 KB, rebrac 24 KB. ASPC's (the heaviest of the three,
# rounded down): a batch refused for it would not fit for the others by more than a factor of ~2.
ACTIVATION_BYTES_PER_SAMPLE = 50_000


def batch_bytes(batch_size: int, members: int, observation_dim: int, action_dim: int) -> int:
    """Estimated bytes one iteration needs for its minibatch and the activations computed from it."""
    per_sample = 4 * (2 * observation_dim + 2 * action_dim + 2) + ACTIVATION_BYTES_PER_SAMPLE
    return int(batch_size) * int(members) * per_sample


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def available_memory(device: torch.device) -> int | None:
    """Bytes free for this process on ``device`` (``None`` where it cannot be told): a CUDA device's
    free memory; on the host ``MemAvailable`` of ``/proc/meminfo``, lowered to the cgroup's limit
    (containers: the limit is where the kernel kills)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    cgroup = Path("/sys/fs/cgroup")
    for limit_file, usage_file in (("memory.max", "memory.current"), ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        limit, usage = _read_int(cgroup / limit_file), _read_int(cgroup / usage_file)
        if limit is not None and usage is not None and available is not None:
            available = min(available, max(0, limit - usage))
    return available


def batch_memory_problem(batch_size: int, members: int, observation_dim: int, action_dim: int, transitions: int,
                         device: torch.device) -> str | None:
    """Why a minibatch of ``batch_size`` per member cannot fit on ``device`` (a message naming the
    key, what it needs and what there is), or ``None`` where it fits or the memory is unknown."""
    available = available_memory(device)
    needed = batch_bytes(batch_size, members, observation_dim, action_dim)
    if available is None or needed <= available:
        return None
    fits = max(1, available // max(1, needed // batch_size))
    seeds = f" x {members} seeds" if members > 1 else ""
    return (
        f"batch_size = {batch_size:,}{seeds} needs about {needed / 2**30:,.1f} GiB per iteration (the minibatch and the "
        f"networks' activations for each sample), but {device} has {available / 2**30:,.1f} GiB available; the dataset "
        f"holds {transitions:,} transitions. Use a batch_size of at most about {fits:,} (the papers use 256; ReBRAC 1024)."
    )


def check_batch_fits(batch_size: int | None, members: int, info, device: torch.device) -> None:
    """Raise :class:`~metaconstraint.config.ConfigError` where :func:`batch_memory_problem` finds one
    (``info``: the dataset's :class:`~metaconstraint.rl.data.DatasetInfo`; no batch size: nothing to check)."""
    from metaconstraint.config import ConfigError

    if batch_size is None:
        return
    problem = batch_memory_problem(batch_size, members, info.observation_dim, info.action_dim, info.total_steps, device)
    if problem:
        raise ConfigError(problem)
