"""Score finished checkpoints on each seed's evaluation episodes (docs/results.md, "The evaluation episodes").

Until the shared episodes (every seed plays episodes 0..E-1), seed k played the reset seeds
EVAL_SEED_BASE + 1000 k + e; this script replays those per-seed sets.

Usage, from docs/results/runs:  python ../episode_sets.py bc/dapg__pen__expert-v0/seed1 ...
"""
import sys

import metaconstraint.rl.evaluation as ev
from metaconstraint.checkpoint import evaluate_run

own = ev.episode_seeds
for run in sys.argv[1:]:
    row = {}
    for set_seed in (0, 1, 2):
        ev.episode_seeds = lambda members, episodes, s=set_seed: own(members, range(1000 * s + episodes.start, 1000 * s + episodes.stop))
        row[set_seed] = round(evaluate_run(run, 10)["mean"], 1)
    ev.episode_seeds = own
    print(run, row, flush=True)
