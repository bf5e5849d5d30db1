"""Every episode of a dataset as flat :class:`Transitions` (Minari's HDF5 read directly, Dict
observations flattened, AntMaze's reward offset applied), and reward preprocessing for training."""

from __future__ import annotations

import dataclasses
import pathlib

import gymnasium as gym
import numpy as np

from metaconstraint.rl.data.errors import CORRUPT_ADVICE, READ_ERRORS, DatasetError, h5_reason
from metaconstraint.rl.data.info import dataset_info, dataset_spaces
from metaconstraint.rl.data.loading import CombinedDataset, as_dataset


@dataclasses.dataclass
class Transitions:
    """``N`` transitions, episodes concatenated in order; float32 unless noted.

    ``observations``/``next_observations`` ``(N, obs_dim)``, ``actions``/``next_actions``
    ``(N, act_dim)`` (``next_actions[t]`` is the dataset's action at ``t + 1``; at an episode's last
    step, that step's own action), ``rewards``/``terminals``/``timeouts`` ``(N,)`` (1.0 where the
    episode terminated / was truncated at this step), ``episode_returns`` ``(E,)`` float64 and
    ``episode_lengths`` ``(E,)`` int64.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    next_actions: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    episode_returns: np.ndarray
    episode_lengths: np.ndarray


def _finish(observations, next_observations, actions, rewards64, terminals, timeouts, lengths) -> Transitions:
    """Next actions, float32 rewards and per-episode returns from the filled arrays."""
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    nonempty = lengths > 0
    next_actions = np.empty_like(actions)
    next_actions[:-1] = actions[1:]
    ends = (starts + lengths - 1)[nonempty]
    next_actions[ends] = actions[ends]
    returns = np.zeros(len(lengths), dtype=np.float64)
    if nonempty.any():
        returns[nonempty] = np.add.reduceat(rewards64, starts[nonempty])
    return Transitions(
        observations=observations,
        actions=actions,
        rewards=rewards64.astype(np.float32),
        next_observations=next_observations,
        next_actions=next_actions,
        terminals=terminals,
        timeouts=timeouts,
        episode_returns=returns,
        episode_lengths=np.asarray(lengths, dtype=np.int64),
    )


def _assemble(dataset_id: str, episodes: list[tuple], obs_dim: int, act_dim: int) -> Transitions:
    """Transitions from per-episode ``(observations (T+1, ...), actions, rewards, terminations, truncations)``."""
    lengths = np.array([np.size(e[2]) for e in episodes], dtype=np.int64)
    n = int(lengths.sum())
    observations = np.empty((n, obs_dim), dtype=np.float32)
    next_observations = np.empty((n, obs_dim), dtype=np.float32)
    actions = np.empty((n, act_dim), dtype=np.float32)
    rewards = np.empty(n, dtype=np.float64)
    terminals = np.empty(n, dtype=np.float32)
    timeouts = np.empty(n, dtype=np.float32)
    s = 0
    for e, (obs, act, rew, term, trunc) in enumerate(episodes):
        t = int(lengths[e])
        obs, act = np.asarray(obs), np.asarray(act)
        if obs.shape[0] != t + 1 or act.shape[0] != t or obs.size != (t + 1) * obs_dim or act.size != t * act_dim:
            raise DatasetError(
                f"Episode {e} of dataset {dataset_id} is malformed: observations {obs.shape}, actions "
                f"{act.shape}, {t} rewards; expected ({t + 1}, {obs_dim}) and ({t}, {act_dim})."
            )
        obs = obs.reshape(t + 1, obs_dim)
        observations[s : s + t] = obs[:t]
        next_observations[s : s + t] = obs[1:]
        actions[s : s + t] = act.reshape(t, act_dim)
        rewards[s : s + t] = np.asarray(rew).reshape(t)
        terminals[s : s + t] = np.asarray(term).reshape(t)
        timeouts[s : s + t] = np.asarray(trunc).reshape(t)
        s += t
    return _finish(observations, next_observations, actions, rewards, terminals, timeouts, lengths)


def _iterated_episodes(dataset) -> list[tuple]:
    return [(e.observations, e.actions, e.rewards, e.terminations, e.truncations) for e in dataset.iterate_episodes()]


def _read_hdf5(file: pathlib.Path, indices: np.ndarray, obs_dim: int, act_dim: int) -> Transitions:
    """Transitions read straight from Minari's HDF5 layout with h5py's low-level API.

    Each episode's observations ``(T+1, ...)`` are read (cast to float32 by HDF5) into one buffer at
    the episode's offset; the next episode then overwrites the extra final row, which is kept aside,
    so ``next_observations`` is one shifted copy with the episode ends patched in.
    """
    import h5py
    from h5py import h5d, h5g, h5s

    names = ("observations", "actions", "rewards", "terminations", "truncations")
    with h5py.File(file, "r") as handle:
        where = "the episode index"
        try:
            groups, lengths = [], np.empty(len(indices), dtype=np.int64)
            for i, index in enumerate(indices):
                where = f"episode_{int(index)}"
                groups.append((where, h5g.open(handle.id, where.encode())))
                shape = h5d.open(groups[-1][1], b"actions").shape
                lengths[i] = shape[0] if shape else 0

            n = int(lengths.sum())
            buffer = np.empty((n + 1, obs_dim), dtype=np.float32)
            finals = np.empty((len(indices), obs_dim), dtype=np.float32)
            actions = np.empty((n, act_dim), dtype=np.float32)
            rewards = np.empty(n, dtype=np.float64)
            terminals = np.empty(n, dtype=np.float32)
            timeouts = np.empty(n, dtype=np.float32)
            s = 0
            for i, (where, group) in enumerate(groups):
                t = int(lengths[i])
                obs, act, rew, term, trunc = (h5d.open(group, name.encode()) for name in names)
                sizes = [int(np.prod(d.shape)) for d in (obs, act, rew, term, trunc)]
                if obs.shape[:1] != (t + 1,) or sizes != [(t + 1) * obs_dim, t * act_dim, t, t, t]:
                    found = ", ".join(f"{k} {d.shape}" for k, d in zip(names, (obs, act, rew, term, trunc)))
                    raise DatasetError(
                        f"{where} of the dataset file {file} is malformed ({found}); Minari's layout has "
                        f"observations ({t + 1}, {obs_dim}), actions ({t}, {act_dim}) and {t} rewards, "
                        f"terminations and truncations. {CORRUPT_ADVICE}"
                    )
                obs.read(h5s.ALL, h5s.ALL, buffer[s : s + t + 1])
                finals[i] = buffer[s + t]
                if t:
                    act.read(h5s.ALL, h5s.ALL, actions[s : s + t])
                    rew.read(h5s.ALL, h5s.ALL, rewards[s : s + t])
                    for flags_id, target in ((term, terminals), (trunc, timeouts)):
                        flags = np.empty(t, dtype=flags_id.dtype)
                        flags_id.read(h5s.ALL, h5s.ALL, flags)
                        target[s : s + t] = flags
                s += t
        except DatasetError:
            raise
        except READ_ERRORS as error:
            raise DatasetError(
                f"{where} of the dataset file {file} cannot be read ({h5_reason(error)}): the file is "
                f"truncated or corrupt, or not in Minari's layout. {CORRUPT_ADVICE}"
            ) from None

    observations = buffer[:n]
    next_observations = np.empty((n, obs_dim), dtype=np.float32)
    next_observations[:] = buffer[1 : n + 1]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    nonempty = lengths > 0
    next_observations[(starts + lengths - 1)[nonempty]] = finals[nonempty]
    return _finish(observations, next_observations, actions, rewards, terminals, timeouts, lengths)


def _read_hdf5_dict(file: pathlib.Path, indices: np.ndarray, obs_space: gym.spaces.Dict, obs_dim: int, act_dim: int, dataset_id: str) -> Transitions:
    """Transitions of Dict-observation episodes: each key's ``(T+1, ...)`` array read from the
    episode's ``observations/<key>`` and flattened by :func:`~metaconstraint.rl.observations.flatten_observations`."""
    import h5py

    from metaconstraint.rl.observations import flatten_observations, observation_keys

    keys = observation_keys(obs_space)
    episodes = []
    with h5py.File(file, "r") as handle:
        where = "the episode index"
        try:
            for index in indices:
                where = f"episode_{int(index)}"
                group = handle[where]
                stored = group["observations"]
                missing = [k for k in keys if not isinstance(stored, h5py.Group) or k not in stored]
                if missing:
                    raise DatasetError(
                        f"{where} of the dataset file {file} has no observations/{missing[0]}, which the Dict "
                        f"observation space names: the file is not in Minari's layout. {CORRUPT_ADVICE}"
                    )
                observations = flatten_observations({k: stored[k][()] for k in keys}, obs_space)
                episodes.append(
                    (observations, group["actions"][()], group["rewards"][()], group["terminations"][()], group["truncations"][()])
                )
        except DatasetError:
            raise
        except READ_ERRORS as error:
            raise DatasetError(
                f"{where} of the dataset file {file} cannot be read ({h5_reason(error)}): the file is "
                f"truncated or corrupt, or not in Minari's layout. {CORRUPT_ADVICE}"
            ) from None
    return _assemble(dataset_id, episodes, obs_dim, act_dim)


def _concatenate(parts: list[Transitions]) -> Transitions:
    return Transitions(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(Transitions)})


def load_transitions(dataset, reward_offset: float | None = None) -> Transitions:
    """Every episode of ``dataset`` as flat ``Transitions`` (HDF5 read directly; other storages via minari).

    Dict observations are flattened (:mod:`metaconstraint.rl.observations`). ``reward_offset`` is
    added to every reward (and so to the episode returns); ``None`` takes the dataset's default
    (:func:`default_reward_offset`: -1 for AntMaze, else 0). A combined dataset pools its parts.
    """
    from minari.dataset.minari_storage import is_image_space

    from metaconstraint.rl.observations import flat_dim, flatten_observations

    dataset = as_dataset(dataset)
    if isinstance(dataset, CombinedDataset):
        if reward_offset is None:
            reward_offset = dataset_info(dataset).reward_offset
        return _concatenate([load_transitions(part, reward_offset) for part in dataset.parts])
    obs_space, act_space = dataset_spaces(dataset)
    obs_dim, act_dim = flat_dim(obs_space), int(np.prod(act_space.shape))
    if reward_offset is None:
        reward_offset = dataset_info(dataset).reward_offset
    storage = dataset.storage
    direct = getattr(storage, "FORMAT", None) == "hdf5" and not (
        storage.jpeg_encoding and (is_image_space(obs_space) or is_image_space(act_space))
    )
    if not direct:
        episodes = [(flatten_observations(e[0], obs_space), *e[1:]) for e in _iterated_episodes(dataset)]
        transitions = _assemble(dataset.id, episodes, obs_dim, act_dim)
    else:
        file = pathlib.Path(storage.data_path) / "main_data.hdf5"
        indices = np.asarray(dataset.episode_indices)
        try:
            if isinstance(obs_space, gym.spaces.Dict):
                transitions = _read_hdf5_dict(file, indices, obs_space, obs_dim, act_dim, dataset.id)
            else:
                transitions = _read_hdf5(file, indices, obs_dim, act_dim)
        except DatasetError:
            raise
        except READ_ERRORS as error:  # opening the file itself failed
            raise DatasetError(
                f"The dataset file {file} cannot be read ({h5_reason(error)}): it is truncated or corrupt. "
                f"{CORRUPT_ADVICE}"
            ) from None
    if reward_offset:
        transitions.rewards += np.float32(reward_offset)
        transitions.episode_returns += reward_offset * transitions.episode_lengths
    return transitions


def reward_mean(transitions: Transitions) -> float:
    """The mean reward that centring subtracts (0 for no transitions)."""
    return float(transitions.rewards.astype(np.float64).mean()) if len(transitions.rewards) else 0.0


def preprocess_rewards(transitions: Transitions, center: bool = False, scale: float = 1.0) -> Transitions:
    """Training rewards ``scale * (r - mean r)`` (``center``, the mean of :func:`reward_mean`) or ``scale * r``;
    episode returns follow.

    Scores are unaffected: evaluation reads the environment's own reward. TD3+BC's actor objective
    divides by ``mean |Q|`` and so ignores ``scale``; ASPC's L2/L3 outer losses do not
    (:mod:`metaconstraint.outer_losses.builtin`), which is what the option is for.
    """
    rewards = transitions.rewards.astype(np.float64)
    mean = reward_mean(transitions) if center else 0.0
    returns = scale * (transitions.episode_returns - mean * transitions.episode_lengths)
    return dataclasses.replace(
        transitions, rewards=(scale * (rewards - mean)).astype(np.float32), episode_returns=returns
    )
