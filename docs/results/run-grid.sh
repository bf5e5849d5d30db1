#!/usr/bin/env bash
# HISTORY: the 20k comparison grid behind docs/results/history-20k.md (issue 4), staged so that seed 0 of every method
# finishes first. compare skips every run whose summary.json exists, so rerunning this script after
# an interruption (or in a later session) only trains what is missing. Run folders go to OUT
# (default: docs/results/runs, tracked in git without their checkpoints); the report is rebuilt
# into docs/results at the end.  Usage:  nice -n 19 bash docs/results/run-grid.sh [OUT]
# Since it ran, ASPC's alpha decay horizon defaults to 1M iterations (this grid's plain `aspc` used
# the run's length: `--alpha-lr-decay-steps run` below) and every seed plays the same evaluation
# episodes (here each seed played its own): a rerun of a missing run is no longer the same experiment.
set -u
cd "$(dirname "$0")/../.."
OUT=${1:-docs/results/runs}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 METACONSTRAINT_OFFLINE=1 MPLBACKEND=Agg
export MINARI_DATASETS_PATH=${MINARI_DATASETS_PATH:-$(cd .. && pwd)/shared/datasets}
D=D4RL/door/human-v2,dapg/pen/expert-v0,dapg/pen/medium-v0,dapg/pen/scarce-v0
# Every run of the grid so far used these versions, and a MuJoCo patch release changes pen trajectories
# (docs/results.md, "Software versions matter"): runs added under others would not be comparable.
PINNED="mujoco==4.0.0 gymnasium-robotics==1.4.2 gymnasium==1.4.0 minari==0.5.4 torch==2.13.0+cpu"
found=$(python -c "from importlib.metadata import version as v; print(' '.join(f'{p}=={v(p)}' for p in ['mujoco', 'gymnasium-robotics', 'gymnasium', 'minari', 'torch']))") || exit 1
if [ "$found" != "$PINNED" ]; then
  echo "run-grid.sh: this grid's runs used $PINNED; found $found. Install those versions first," >&2
  echo "e.g. pip install mujoco==4.0.0 mujoco-core==4.0.0 mujoco-studio==4.0.0 (one release, three packages)." >&2
  exit 2
fi
grid() { metaconstraint compare "$@" --datasets "$D" --steps 20000 --workers 2 --out "$OUT"; }
decay1M() { grid aspc --alpha-lr-decay-steps 1000000 --tag decay1M "$@"; }
# Within a stage the longest runs go first, so that the shortest fill the last worker's tail. After
# seed 0 of everything come ASPC and the two methods it must beat first (td3bc, its fixed-alpha
# counterpart, and bc), the cheap iql, then the rest; the decay1M variant (not one of the compared
# methods) comes last.
grid aspc td3bc wpc bc --seed 0 --seeds 1 --alpha-lr-decay-steps run
decay1M --seed 0 --seeds 1
grid rebrac a2pr iql --seed 0 --seeds 1
grid aspc td3bc bc iql --seed 1 --seeds 2 --alpha-lr-decay-steps run
grid wpc --seed 1 --seeds 2
grid rebrac a2pr --seed 1 --seeds 2
decay1M --seed 1 --seeds 2
metaconstraint report "$OUT" --out docs/results
