"""Does this MuJoCo simulate Adroit as the one behind docs/results did?

Rolls 100 steps of seeded uniform random actions from a seeded reset in AdroitHandPen-v1 and
AdroitHandDoor-v1 and prints, per environment, the first 12 hex digits of an MD5 of the
observations and the return. Run it under two installs and compare; with
``--compare A.json B.json`` it reads two saved outputs and prints the first step where they part.

    python docs/results/simulator_check.py --save /tmp/a.json     # under one mujoco
    python docs/results/simulator_check.py --save /tmp/b.json     # under another
    python docs/results/simulator_check.py --compare /tmp/a.json /tmp/b.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
from importlib import metadata
from pathlib import Path

import numpy as np

ENVIRONMENTS = ("AdroitHandPen-v1", "AdroitHandDoor-v1")
STEPS = 100


def rollout(env_id: str) -> tuple[np.ndarray, float]:
    """Observations ``(STEPS + 1, obs_dim)`` and the return of one seeded random-action episode."""
    import gymnasium as gym
    import gymnasium_robotics

    gym.register_envs(gymnasium_robotics)
    env = gym.make(env_id, max_episode_steps=STEPS)
    observation, _ = env.reset(seed=123)
    actions = np.random.default_rng(0).uniform(-1, 1, (STEPS, *env.action_space.shape)).astype(np.float32)
    observations, total = [observation], 0.0
    for action in actions:
        observation, reward, *_ = env.step(action)
        observations.append(observation)
        total += float(reward)
    env.close()
    return np.asarray(observations), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", help="write the observations and returns to this JSON file")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), help="two saved outputs to compare")
    args = parser.parse_args()
    if args.compare:
        a, b = (json.loads(Path(path).read_text()) for path in args.compare)
        print(f"mujoco {a['mujoco']} vs {b['mujoco']}")
        for env_id in ENVIRONMENTS:
            x, y = np.asarray(a[env_id]["observations"]), np.asarray(b[env_id]["observations"])
            differ = np.flatnonzero(np.abs(x - y).max(axis=1) > 0)
            where = f"first differing step {differ[0]}" if differ.size else "identical"
            print(f"{env_id}: {where}; return {a[env_id]['return']:.2f} vs {b[env_id]['return']:.2f}")
        return
    record = {"mujoco": metadata.version("mujoco")}
    for env_id in ENVIRONMENTS:
        observations, total = rollout(env_id)
        digest = hashlib.md5(observations.tobytes()).hexdigest()[:12]
        print(f"mujoco {record['mujoco']} {env_id}: observations {digest}, return {total:.2f}")
        record[env_id] = {"observations": observations.tolist(), "return": total}
    if args.save:
        Path(args.save).write_text(json.dumps(record))


if __name__ == "__main__":
    main()
