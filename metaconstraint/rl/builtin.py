"""Built-in datasets: generated on first use, in seconds, by simulating scripted behaviour policies.

They make every command work on a machine with no network and no downloaded data. Each is a real
Gymnasium simulation (classic-control ``Pendulum-v1``: swing a pendulum up and hold it upright,
reward ``-(theta^2 + 0.1 theta_dot^2 + 0.001 u^2)`` per step, 200-step episodes) run with a
controller written here, at three quality levels:

- ``builtin/pendulum/expert-v0``: energy-pumping swing-up, then a PD controller near the top, with
  full torque (|u| <= 2); Gaussian action noise of std 0.1 (x the half-range).
- ``builtin/pendulum/medium-v0``: the same controller with a weak motor (|u| <= 0.5): it reaches
  the top later and holds it less well; same noise.
- ``builtin/pendulum/random-v0``: uniform random torques.

Each holds 100 episodes (20,000 transitions). Reference scores (recorded in the metadata):
``ref_min`` the uniform random policy's mean return, ``ref_max`` the noise-free expert
controller's, each over 100 seeded episodes, so the expert data scores about 100 and random about 0.
Generation is deterministic (fixed seeds); the sets are written once to
``$METACONSTRAINT_HOME/datasets/builtin/...`` and read from there afterwards.

A second domain, PointMaze (D4RL's Maze2d), is remade by the published recipe in
:mod:`metaconstraint.rl.pointmaze`: ``builtin/pointmaze/{umaze,medium,large}{,-dense}-v0``, 1M steps
each, generated on first use in about a minute with a progress bar.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable

import numpy as np

from metaconstraint.rl.pointmaze import POINTMAZE_DATASETS, PointMazeRecipe

__all__ = ["BUILTIN_DATASETS", "BuiltinDataset", "generate_builtin", "pendulum_controller", "pendulum_expert", "remake_note"]

PENDULUM_MAX_TORQUE = 2.0


def pendulum_controller(max_torque: float = PENDULUM_MAX_TORQUE, swing_gain: float = 2.0, kp: float = 15.0, kd: float = 3.0, window: float = 0.8):
    """A scripted policy for ``Pendulum-v1`` (observation ``(cos theta, sin theta, theta_dot)``, theta = 0 upright).

    Near the top (``|theta| < window``) a PD law ``u = -(kp theta + kd theta_dot)``; elsewhere
    energy pumping ``u = swing_gain * (E_top - E) * sign(theta_dot)`` with
    ``E = theta_dot^2 / 6 + 5 (cos theta - 1)`` (``E_top = 0``). ``u`` is clipped to ``+-max_torque``.
    """

    def act(observation: np.ndarray) -> np.ndarray:
        cos, sin, velocity = (float(x) for x in observation[:3])
        theta = np.arctan2(sin, cos)
        if abs(theta) < window:
            torque = -(kp * theta + kd * velocity)
        else:
            energy = velocity * velocity / 6.0 + 5.0 * (cos - 1.0)
            torque = swing_gain * (0.0 - energy) * (1.0 if velocity >= 0 else -1.0)
        return np.array([np.clip(torque, -max_torque, max_torque)], dtype=np.float32)

    return act


pendulum_expert = pendulum_controller()
"""The expert controller as a policy (``--policy metaconstraint.rl.builtin:pendulum_expert``)."""


@dataclasses.dataclass(frozen=True)
class BuiltinDataset:
    """How one built-in dataset is made."""

    env_id: str
    behaviour: Callable[[], Callable] | None  # None: uniform random actions
    expert: Callable[[], Callable]  # the policy whose return is ref_max_score
    noise: float
    episodes: int
    seed: int
    description: str
    reference_episodes: int = 100


BUILTIN_DATASETS: dict[str, BuiltinDataset | PointMazeRecipe] = {
    "builtin/pendulum/expert-v0": BuiltinDataset(
        "Pendulum-v1", pendulum_controller, pendulum_controller, 0.1, 100, 0,
        "Scripted swing-up + PD controller with full torque (|u| <= 2), action noise 0.1.",
    ),
    "builtin/pendulum/medium-v0": BuiltinDataset(
        "Pendulum-v1", lambda: pendulum_controller(max_torque=0.5), pendulum_controller, 0.1, 100, 1,
        "Scripted swing-up + PD controller with a weak motor (|u| <= 0.5), action noise 0.1.",
    ),
    "builtin/pendulum/random-v0": BuiltinDataset(
        "Pendulum-v1", None, pendulum_controller, 0.0, 100, 2,
        "Uniform random torques.",
    ),
    **POINTMAZE_DATASETS,
}
"""Built-in dataset id -> how it is made."""


def remake_note(dataset_id: str) -> str | None:
    """One line saying that ``dataset_id`` (or a part of ``a+b``) is a local remake of a published set, else None."""
    notes = []
    for part in dataset_id.split("+"):
        recipe = BUILTIN_DATASETS.get(part)
        if isinstance(recipe, PointMazeRecipe):
            notes.append(f"{part} is a local remake of {recipe.published} (same recipe, generated here; scores use references measured here)")
    return "; ".join(notes) or None


def generate_builtin(dataset_id: str, root: pathlib.Path, console=None, **options) -> pathlib.Path:
    """Simulate and write the built-in dataset ``dataset_id`` under ``root``; return its folder.

    Concurrent first uses are safe: each writes a complete copy beside and moves it into place,
    and the first to arrive is kept. PointMaze sets show a progress bar on ``console`` and take
    ``options`` of :func:`metaconstraint.rl.pointmaze.generate_pointmaze` (``steps``, ...).
    """
    from metaconstraint.rl.collect import collect_episodes, make_env_spec, measure_return, random_policy, write_dataset
    from metaconstraint.rl.envs import make_env

    recipe = BUILTIN_DATASETS[dataset_id]
    if isinstance(recipe, PointMazeRecipe):
        from metaconstraint.rl.pointmaze import generate_pointmaze

        return generate_pointmaze(dataset_id, root, console=console, **options)
    spec = make_env_spec(recipe.env_id)
    action_space = make_env(spec).action_space
    behaviour = random_policy(action_space, recipe.seed) if recipe.behaviour is None else recipe.behaviour()
    buffers = collect_episodes(spec, behaviour, episodes=recipe.episodes, noise=recipe.noise, seed=recipe.seed * 10_000)
    # the references are the same for every level of a task: fixed policies and seeds
    ref_min = float(measure_return(spec, random_policy(action_space, 12345), recipe.reference_episodes, 0).mean())
    ref_max = float(measure_return(spec, recipe.expert(), recipe.reference_episodes, 0).mean())
    description = (
        f"metaconstraint built-in dataset: {recipe.episodes} episodes of {spec.id} (horizon {spec.max_episode_steps}). "
        f"{recipe.description} References over {recipe.reference_episodes} episodes: random {ref_min:.6g}, "
        f"expert controller {ref_max:.6g}."
    )
    name = "uniform random" if recipe.behaviour is None else "scripted controller"
    return write_dataset(dataset_id, buffers, root, spec, ref_min, ref_max, name, description)
