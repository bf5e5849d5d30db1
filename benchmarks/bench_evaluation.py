"""Evaluation's share of a run's wall time, with the Trainer's own evaluation and update.

For each dataset and member count: seconds per evaluation (``Trainer.evaluate``: ``M * E``
vectorised environments, one batched policy call per environment step, the dataset's horizon),
the update rate on that dataset's shapes, and the share of a default run (``--steps`` 1,000,000,
an evaluation every 5,000 iterations and at the end, 10 episodes) spent evaluating:
``evaluations * t_eval / (evaluations * t_eval + steps / rate)``. Evaluations and update blocks are
interleaved, medians kept.

    OMP_NUM_THREADS=1 MINARI_DATASETS_PATH=../shared/datasets \\
        python benchmarks/bench_evaluation.py --datasets dapg/pen/expert-v0 D4RL/door/human-v2 --seeds 1 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from metaconstraint.config import build_configs
from metaconstraint.rl.buffer import MemberSampler
from metaconstraint.training import Trainer


def measure(algorithm: str, dataset: str, members: int, episodes: int, iterations: int, repeats: int, out: str):
    run, algorithm_config = build_configs(
        {"algorithm": algorithm, "dataset": dataset, "seeds": members, "eval_episodes": episodes, "out": out}
    )
    trainer = Trainer(run, algorithm_config, notify=lambda message: None)
    algo = trainer.algorithm
    state = algo.init_state(trainer.seeds)
    sampler = MemberSampler(trainer.buffer, algo.batch_size, trainer.seeds)
    counter = 0

    def train(n: int) -> float:
        nonlocal state, counter
        start = time.perf_counter()
        for _ in range(n):
            counter += 1
            state, _ = algo.update(state, sampler, counter)
        return n / (time.perf_counter() - start)

    def evaluate() -> float:
        start = time.perf_counter()
        trainer.evaluate(state)
        return time.perf_counter() - start

    train(40)
    evaluate()  # warm-up: environment construction, first reset
    rates, evals = [], []
    for _ in range(repeats):
        rates.append(train(iterations))
        evals.append(evaluate())
    return trainer.dataset_id, trainer.info, statistics.median(rates), statistics.median(evals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithm", default="aspc")
    parser.add_argument("--datasets", nargs="+", default=["dapg/pen/expert-v0", "D4RL/door/human-v2"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=1_000_000, help="Run length the share is computed for.")
    parser.add_argument("--eval-every", type=int, default=5000)
    parser.add_argument("--iterations", type=int, default=200, help="Update iterations per timed block.")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    evaluations = args.steps // args.eval_every + (args.steps % args.eval_every != 0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {args.algorithm}, {args.episodes} episodes per "
          f"evaluation, {evaluations} evaluations in a {args.steps:,}-iteration run\n")
    print("| dataset | seeds | environments | horizon | s per evaluation | updates/s | training s (run) | evaluation s (run) | evaluation share |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as out:
        for dataset in args.datasets:
            for members in args.seeds:
                dataset_id, info, rate, seconds = measure(
                    args.algorithm, dataset, members, args.episodes, args.iterations, args.repeats, out
                )
                train_total, eval_total = args.steps / rate, evaluations * seconds
                horizon = info.eval_horizon or "-"
                print(
                    f"| {dataset_id} | {members} | {members * args.episodes} | {horizon} | {seconds:.2f} | {rate:.1f} | "
                    f"{train_total:,.0f} | {eval_total:,.0f} | {eval_total / (eval_total + train_total):.1%} |"
                )


if __name__ == "__main__":
    main()
