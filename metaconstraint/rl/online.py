"""Online interaction for fine-tuning: an online replay buffer, minibatches mixed with the offline
data, and members' episodes that can be replayed exactly.

Mixing rule: *symmetric sampling* (Ball, Smith, Kostrikov & Levine, "Efficient Online Reinforcement
Learning with Offline Data", ICML 2023, RLPD): every minibatch takes a fixed share of its rows from
the offline dataset and the rest from the online buffer, whatever the two buffers' sizes. Their
share is one half; ``offline_fraction`` sets it.

Resuming exactly: MuJoCo environments do not pickle their simulator state, so a checkpoint holds
each member's current episode as its reset seed and the actions taken so far. Resuming resets the
episode with that seed and replays the actions; MuJoCo is deterministic, and the replayed
observation is checked against the saved one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metaconstraint.rl.buffer import FIELDS, MemberSampler, OfflineBuffer, StateNormalizer


class ReplayMismatch(RuntimeError):
    """Replaying a saved episode did not reproduce its observation (a non-deterministic environment)."""


def online_episode_seed(seed: int, episode: int) -> int:
    """Reset seed of online episode ``episode`` of the member with seed ``seed``.

    Drawn from ``SeedSequence((seed, episode))`` and offset by ``2**32``, so it never meets the
    evaluation episodes' seeds (``1_000_000 + e``, :mod:`metaconstraint.rl.evaluation`).
    """
    return (1 << 32) + int(np.random.SeedSequence((int(seed), int(episode))).generate_state(1)[0])


class OnlineBuffer:
    """Each member's online transitions, ``(M, capacity, ...)`` on the device, states normalised
    with the offline buffer's statistics.

    A transition is sampled once its next action is known (ReBRAC's critic reads it): at the next
    step of its episode, or at once when its episode ends, when it is the transition's own action
    as in the offline data (:class:`~metaconstraint.rl.data.Transitions`).
    """

    def __init__(self, members: int, capacity: int, observation_dim: int, action_dim: int, normalizer: StateNormalizer, device):
        self.device = torch.device(device)
        self.normalizer = normalizer
        shapes = {"observations": (observation_dim,), "actions": (action_dim,), "rewards": (), "next_observations": (observation_dim,),
                  "next_actions": (action_dim,), "terminals": ()}
        self.data = {name: torch.zeros(members, capacity, *shapes[name], device=self.device) for name in FIELDS}
        self.capacity = capacity
        self.sizes = [0] * members  # sampled transitions per member
        self.pending = [False] * members  # the transition at ``sizes[k]`` waits for its next action

    def _tensor(self, values) -> Tensor:
        return torch.as_tensor(np.asarray(values, dtype=np.float32), device=self.device)

    def complete(self, next_actions: np.ndarray) -> None:
        """The members' actions at this step ``(M, A)``: the next actions of their pending transitions."""
        members = [k for k, waiting in enumerate(self.pending) if waiting]
        if not members:
            return
        index = torch.tensor(members, device=self.device)
        slots = torch.tensor([self.sizes[k] for k in members], device=self.device)
        self.data["next_actions"][index, slots] = self._tensor(next_actions[members])
        for k in members:
            self.sizes[k] += 1
            self.pending[k] = False

    def add(self, observations, actions, rewards, next_observations, terminals, episode_over) -> None:
        """One transition per member (raw observations ``(M, obs_dim)``); ``episode_over`` ``(M,)``
        marks the members whose episode ended at this step."""
        members = len(self.sizes)
        if max(self.sizes) >= self.capacity:
            raise RuntimeError(f"the online buffer holds {self.capacity} transitions per member and is full.")
        index = torch.arange(members, device=self.device)
        slots = torch.tensor(self.sizes, device=self.device)
        values = {
            "observations": self.normalizer(self._tensor(observations)),
            "actions": self._tensor(actions),
            "rewards": self._tensor(rewards),
            "next_observations": self.normalizer(self._tensor(next_observations)),
            "next_actions": self._tensor(actions),  # replaced by the next step's action unless the episode ended
            "terminals": self._tensor(terminals),
        }
        for name, value in values.items():
            self.data[name][index, slots] = value
        for k in range(members):
            if episode_over[k]:
                self.sizes[k] += 1
            else:
                self.pending[k] = True

    def member_state(self, k: int) -> dict[str, Any]:
        """Member ``k``'s transitions (the pending one too) on the CPU, for its checkpoint."""
        stored = self.sizes[k] + int(self.pending[k])
        return {"data": {name: values[k, :stored].cpu().clone() for name, values in self.data.items()},
                "size": self.sizes[k], "pending": self.pending[k]}

    def load_member(self, k: int, saved: dict[str, Any]) -> None:
        stored = saved["size"] + int(saved["pending"])
        if stored > self.capacity:
            raise ValueError(f"the checkpoint holds {stored} online transitions, more than the buffer's {self.capacity}.")
        for name, values in saved["data"].items():
            self.data[name][k, :stored] = values.to(self.device)
        self.sizes[k], self.pending[k] = int(saved["size"]), bool(saved["pending"])


class MixedSampler(MemberSampler):
    """Minibatches of ``round(offline_fraction * B)`` offline rows followed by online rows, each member
    drawing both from its own generator (its stream does not depend on the other members)."""

    def __init__(self, offline: OfflineBuffer, online: OnlineBuffer, batch_size: int, seeds: list[int], offline_fraction: float):
        super().__init__(offline, batch_size, seeds)
        self.online = online
        self.offline_rows = int(round(offline_fraction * batch_size))

    def sample(self) -> dict[str, Tensor]:
        online_rows = self.batch_size - self.offline_rows
        device = self.buffer.device
        parts = []
        if self.offline_rows:
            n = self.buffer.size
            index = self._per_member(lambda g: torch.randint(n, (self.offline_rows,), generator=g, device=device))
            parts.append(_gather_rows(self.buffer.data, index.reshape(-1), index.shape))
        if online_rows:
            if min(self.online.sizes) == 0:
                raise RuntimeError("the online buffer is empty: collect transitions (a warm-up) before sampling from it.")
            draws = [torch.randint(size, (online_rows,), generator=g, device=device) for size, g in zip(self.online.sizes, self.generators)]
            index = torch.stack(draws)
            flat = (index + torch.arange(len(draws), device=device).unsqueeze(1) * self.online.capacity).reshape(-1)
            flat_data = {name: values.reshape(-1, *values.shape[2:]) for name, values in self.online.data.items()}
            parts.append(_gather_rows(flat_data, flat, index.shape))
        if len(parts) == 1:
            return parts[0]
        return {name: torch.cat([part[name] for part in parts], dim=1) for name in FIELDS}


def _gather_rows(data: dict[str, Tensor], flat_index: Tensor, shape: torch.Size) -> dict[str, Tensor]:
    return {name: values.index_select(0, flat_index).view(*shape, *values.shape[1:]) for name, values in data.items()}


@dataclass
class Episodes:
    """Members' online episodes in a vector environment without autoreset (one environment per
    member), each episode reset with :func:`online_episode_seed`.

    ``observations`` ``(M, obs_dim)`` are the current ones; ``actions[k]`` the actions member ``k``
    took in its current episode (what a checkpoint keeps to replay it).
    """

    env: Any
    seeds: list[int]
    episode: list[int] = field(default_factory=list)
    actions: list[list[np.ndarray]] = field(default_factory=list)
    returns: np.ndarray | None = None
    observations: np.ndarray | None = None

    def start(self) -> None:
        """Every member's episode 0."""
        members = len(self.seeds)
        self.episode = [0] * members
        self.actions = [[] for _ in range(members)]
        self.returns = np.zeros(members)
        observations, _ = self.env.reset(seed=[online_episode_seed(s, 0) for s in self.seeds])
        self.observations = np.asarray(observations, dtype=np.float32)

    def step(self, actions: np.ndarray) -> dict[str, Any]:
        """Step every member; members whose episode ended start their next one. Returns the
        transitions (``next_observations`` are the step's own, before any reset), ``episode_over``
        and ``finished``: ``[(k, undiscounted return)]`` of the episodes that ended."""
        observations = self.observations
        next_observations, rewards, terminated, truncated, _ = self.env.step(actions)
        next_observations = np.asarray(next_observations, dtype=np.float32)
        episode_over = np.asarray(terminated) | np.asarray(truncated)
        self.returns = self.returns + rewards
        for k, action in enumerate(actions):
            self.actions[k].append(np.array(action, dtype=np.float32))
        finished = [(k, float(self.returns[k])) for k in np.flatnonzero(episode_over)]
        self.observations = next_observations.copy()
        if episode_over.any():
            for k in np.flatnonzero(episode_over):
                self.episode[k] += 1
                self.actions[k] = []
                self.returns[k] = 0.0
            seeds = [online_episode_seed(s, e) for s, e in zip(self.seeds, self.episode)]
            reset, _ = self.env.reset(seed=seeds, options={"reset_mask": episode_over.astype(bool)})
            self.observations[episode_over] = np.asarray(reset, dtype=np.float32)[episode_over]
        return {
            "observations": observations, "actions": np.asarray(actions, dtype=np.float32), "rewards": np.asarray(rewards),
            "next_observations": next_observations, "terminals": np.asarray(terminated, dtype=np.float32),
            "episode_over": episode_over, "finished": finished,
        }

    def member_state(self, k: int) -> dict[str, Any]:
        """Member ``k``'s current episode as tensors (checkpoints load with ``weights_only``)."""
        actions = torch.from_numpy(np.stack(self.actions[k])) if self.actions[k] else torch.zeros(0, 0)
        return {"episode": self.episode[k], "actions": actions, "return": float(self.returns[k]),
                "observation": torch.from_numpy(self.observations[k].copy())}

    def restore(self, saved: list[dict[str, Any]]) -> None:
        """Reset each member's saved episode with its seed and replay its actions, one environment at a time."""
        members = len(self.seeds)
        self.episode = [int(s["episode"]) for s in saved]
        self.actions = [[np.asarray(a, dtype=np.float32) for a in s["actions"].numpy()] for s in saved]
        self.returns = np.array([float(s["return"]) for s in saved])
        seeds = [online_episode_seed(s, e) for s, e in zip(self.seeds, self.episode)]
        observations, _ = self.env.reset(seed=seeds)
        observations = np.asarray(observations, dtype=np.float32).copy()
        for k in range(members):
            environment = self.env.envs[k]
            for action in self.actions[k]:
                observation, *_ = environment.step(action)
                observations[k] = np.asarray(observation, dtype=np.float32)
            if not np.array_equal(observations[k], saved[k]["observation"].numpy()):
                raise ReplayMismatch(
                    f"replaying episode {self.episode[k]} of seed {self.seeds[k]} ({len(self.actions[k])} steps) did not "
                    f"reproduce the saved observation: the environment is not deterministic here, so the run cannot "
                    f"resume exactly."
                )
        self.observations = observations
