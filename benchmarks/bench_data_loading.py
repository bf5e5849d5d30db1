"""Time ``load_transitions`` on a generated 1M-transition dataset (1000 episodes x 1000 steps).

The dataset has pen-like dimensions (observations 45, actions 24), random numbers, and Minari's
on-disk layout (one ``episode_k`` group per episode with observations (T+1, 45), actions (T, 24),
rewards, terminations, truncations; chunked like minari's writer). It is written to a temporary
root with minari's own writer and removed afterwards.

    python benchmarks/bench_data_loading.py [--episodes 1000] [--steps 1000] [--compare]

``--compare`` also times minari's ``iterate_episodes`` plus concatenation, for reference.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

DATASET_ID = "bench/pen-like/random-v0"


def write_dataset(root: Path, episodes: int, steps: int, obs_dim: int = 45, act_dim: int = 24) -> None:
    import minari
    from minari.data_collector import EpisodeBuffer

    rng = np.random.default_rng(0)
    obs_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), dtype=np.float64)
    act_space = gym.spaces.Box(-1.0, 1.0, (act_dim,), dtype=np.float32)
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    dataset = None
    batch = 50  # write in batches to keep memory flat
    for first in range(0, episodes, batch):
        buffers = []
        for e in range(first, min(first + batch, episodes)):
            terminations = np.zeros(steps, dtype=bool)
            truncations = np.zeros(steps, dtype=bool)
            truncations[-1] = True
            buffers.append(
                EpisodeBuffer(
                    id=e,
                    observations=rng.standard_normal((steps + 1, obs_dim)),
                    actions=rng.uniform(-1, 1, (steps, act_dim)).astype(np.float32),
                    rewards=rng.standard_normal(steps),
                    terminations=terminations,
                    truncations=truncations,
                )
            )
        if dataset is None:
            dataset = minari.create_dataset_from_buffers(
                DATASET_ID,
                buffers,
                observation_space=obs_space,
                action_space=act_space,
                algorithm_name="random numbers",
                author="metaconstraint benchmarks",
                author_email="bench@metaconstraint.invalid",
                code_permalink="https://example.invalid/metaconstraint",
                description="benchmark data",
            )
        else:
            dataset.update_dataset_from_buffer(buffers)


def transitions_bytes(transitions) -> int:
    return sum(v.nbytes for v in vars(transitions).values())


def main() -> None:
    import warnings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare", action="store_true", help="also time minari's iterate_episodes")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", module="minari")

    from metaconstraint.rl.data import load_dataset, load_transitions

    root = Path(tempfile.mkdtemp(prefix="mc-bench-data-"))
    try:
        start = time.perf_counter()
        write_dataset(root, args.episodes, args.steps)
        size = (root / DATASET_ID / "data" / "main_data.hdf5").stat().st_size
        print(f"wrote {args.episodes} x {args.steps} = {args.episodes * args.steps:,} transitions "
              f"({size / 1e6:.0f} MB) in {time.perf_counter() - start:.1f} s")
        os.environ["METACONSTRAINT_OFFLINE"] = "1"
        dataset = load_dataset(DATASET_ID)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            transitions = load_transitions(dataset)
            times.append(time.perf_counter() - start)
        n = transitions.rewards.shape[0]
        print(f"load_transitions: {n:,} transitions; first call {times[0]:.2f} s (fresh process, "
              f"includes first-touch page faults of ~{transitions_bytes(transitions) / 1e6:.0f} MB of "
              f"output), best of {len(times)} {min(times):.2f} s; runs {', '.join(f'{t:.2f}' for t in times)} s")
        if args.compare:
            start = time.perf_counter()
            episodes = list(dataset.iterate_episodes())
            observations = np.concatenate([e.observations[:-1] for e in episodes]).astype(np.float32)
            print(f"minari iterate_episodes + concatenate (observations only): "
                  f"{time.perf_counter() - start:.2f} s for {observations.shape[0]:,} rows")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
