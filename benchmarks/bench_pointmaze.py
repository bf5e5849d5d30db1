"""Time the built-in PointMaze generation against its yardstick, the bare simulator, in one run.

Rows (all in this process, same machine state):

- ``env.step``: the unwrapped ``PointMaze_<maze>-v3`` step with a constant action (the floor);
- ``simulate``: the recipe's behaviour (planner, waypoint controller, noise, clipping, storing);
- ``write``: cutting the trajectory into episodes and Minari's HDF5 writer, per episode;
- ``load``: ``load_transitions`` of the written set (Dict observations flattened), per step;
- ``references``: one rollout of each reference policy, per step.

    python benchmarks/bench_pointmaze.py [--maze umaze] [--steps 50000]
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import tempfile
import time

import gymnasium as gym
import numpy as np


def main() -> None:
    from metaconstraint.rl import data
    from metaconstraint.rl.collect import write_dataset
    from metaconstraint.rl.pointmaze import data_env_spec, eval_env_spec, measure_references, simulate, split_episodes

    parser = argparse.ArgumentParser()
    parser.add_argument("--maze", default="umaze", choices=["umaze", "medium", "large"])
    parser.add_argument("--steps", type=int, default=50_000)
    args = parser.parse_args()

    env = gym.make(data_env_spec(args.maze, "sparse", args.steps))
    env.reset(seed=0)
    core, action = env.unwrapped, np.zeros(2, dtype=np.float32)
    started = time.perf_counter()
    for _ in range(args.steps):
        core.step(action)
    floor = (time.perf_counter() - started) / args.steps
    env.close()

    started = time.perf_counter()
    trajectory = simulate(args.maze, args.steps)
    per_step = (time.perf_counter() - started) / args.steps

    root = pathlib.Path(tempfile.mkdtemp(prefix="bench-pointmaze-"))
    try:
        started = time.perf_counter()
        buffers = split_episodes(trajectory, "sparse")
        dataset_id = f"builtin/pointmaze/{args.maze}-v0"
        folder = write_dataset(dataset_id, buffers, root, data_env_spec(args.maze, "sparse"), 0.0, 1.0, "bench", "bench",
                               eval_spec=eval_env_spec(args.maze, "sparse"))
        write = (time.perf_counter() - started) / len(buffers)
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        import minari

        started = time.perf_counter()
        data.load_transitions(minari.MinariDataset(folder / "data"))
        load = (time.perf_counter() - started) / args.steps
    finally:
        shutil.rmtree(root, ignore_errors=True)

    episodes = 3
    started = time.perf_counter()
    measure_references(args.maze, episodes)
    horizon = eval_env_spec(args.maze, "sparse").max_episode_steps
    references = (time.perf_counter() - started) / (2 * episodes * horizon)

    print(f"{args.maze}, {args.steps:,} steps, {len(buffers):,} episodes")
    print(f"  env.step (yardstick)  {1e6 * floor:8.1f} us/step")
    print(f"  simulate              {1e6 * per_step:8.1f} us/step  ({per_step / floor:.2f} x the bare step)")
    print(f"  write (minari HDF5)   {1e3 * write:8.2f} ms/episode, {size / args.steps:.0f} bytes/step on disk")
    print(f"  load_transitions      {1e6 * load:8.2f} us/step")
    print(f"  references            {1e6 * references:8.1f} us/step")
    print(f"  => 1M steps: simulate {per_step * 1e6 / 60:.1f} min, write {write * len(buffers) * 1e6 / args.steps / 60:.1f} min per reward "
          f"variant, {size * 1e6 / args.steps / 2**20:.0f} MiB per set, load {load * 1e6:.0f} s")


if __name__ == "__main__":
    main()
