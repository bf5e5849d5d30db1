"""Small stand-ins for real datasets, simulated in the real environments, so the default suite makes
its own data (no downloaded or shared datasets).

A stand-in keeps what the code paths read from the real set: its Minari id, its environment, its
evaluation horizon and its D4RL reference scores (so scores normalise as the real ones do); its
episodes are a few of a simple behaviour policy (uniform random actions unless one is given), and
its metadata says that it is a test stand-in. Tests about the real data themselves are marked
``real_data`` (see conftest.py) and read the real sets instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from metaconstraint.rl.collect import collect_episodes, make_env_spec, random_policy, write_dataset
from metaconstraint.rl.envs import make_env

PEN_REFS = (96.262799, 3076.8331017826877)  # D4RL's pen references (random, expert)
DOOR_REFS = (-56.512833, 2880.5693087298737)  # D4RL's door references


@dataclass(frozen=True)
class StandIn:
    """How to simulate the stand-in of one dataset: ``episodes`` episodes of ``horizon`` steps."""

    env_id: str
    horizon: int  # the real set's evaluation horizon (pen 100, door 200)
    episodes: int
    refs: tuple[float, float]


# The datasets the default suite trains on, by id: a few hundred transitions each.
STAND_INS = {
    "dapg/pen/expert-v0": StandIn("AdroitHandPen-v1", 100, 6, PEN_REFS),
    "dapg/door/expert-v0": StandIn("AdroitHandDoor-v1", 200, 3, DOOR_REFS),
    "D4RL/door/human-v2": StandIn("AdroitHandDoor-v1", 200, 3, DOOR_REFS),
}
PEN_HUMAN = StandIn("AdroitHandPen-v1", 100, 5, PEN_REFS)  # D4RL/pen/human-v2: not obtainable here


def simulate_dataset(root: Path, dataset_id: str, env_id: str, horizon: int, episodes: int,
                     refs: tuple[float, float], policy=None, seed: int = 0) -> list:
    """Write ``dataset_id`` under the Minari root ``root``: ``episodes`` episodes of ``env_id`` with
    horizon ``horizon`` (also the evaluation horizon), episode ``e`` reset with seed ``seed + e``,
    actions from ``policy`` (a flat observation -> action function; default uniform random).
    Returns the episodes' Minari ``EpisodeBuffer`` s."""
    spec = make_env_spec(env_id, horizon)
    if policy is None:
        policy = random_policy(make_env(spec).action_space, seed)
    buffers = collect_episodes(spec, policy, episodes=episodes, seed=seed)
    description = f"test stand-in: {episodes} episodes of {horizon} steps in {env_id}, simulated by the metaconstraint tests"
    write_dataset(dataset_id, buffers, root, spec, refs[0], refs[1], "metaconstraint test policy", description)
    return buffers


def simulate_stand_in(root: Path, dataset_id: str, stand_in: StandIn | None = None) -> Path:
    """Write the stand-in of ``dataset_id`` (from :data:`STAND_INS` unless given) under ``root``."""
    s = stand_in or STAND_INS[dataset_id]
    simulate_dataset(root, dataset_id, s.env_id, s.horizon, s.episodes, s.refs)
    return root
