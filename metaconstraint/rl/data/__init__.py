"""Offline datasets: names, local roots, loading through Minari, flat transitions, D4RL scores.

Names: a short name (D4RL's ``pen-human``, ``antmaze-umaze-diverse``, ``maze2d-large``, optionally
with D4RL's ``-v0``/``-v1``/``-v2`` suffix; Minari's MuJoCo locomotion sets as ``hopper-medium`` for
``mujoco/hopper/medium-v0``; the built-in sets as ``pendulum-medium``), a full Minari id
(``namespace/.../name-vN``), or several of these joined by ``+`` (``a+b``: their transitions pooled,
evaluated and normalised as the first, e.g. ``hopper-medium+hopper-expert``).
Roots searched, in order: ``$MINARI_DATASETS_PATH`` (Minari's default ``~/.minari/datasets`` when
unset), then ``$METACONSTRAINT_HOME/datasets`` (default ``~/.cache/metaconstraint/datasets``).
A ``builtin/...`` dataset missing from every root is generated into the second root
(:mod:`metaconstraint.rl.builtin`); any other is downloaded through Minari, unless the machine is
offline (``METACONSTRAINT_OFFLINE=1``, or the remote's host does not answer a short connect probe).

Domains: Box observations are used as they are; Dict observations (AntMaze, PointMaze) are
flattened as :mod:`metaconstraint.rl.observations` says, in the transitions and in the evaluation
environment alike. AntMaze rewards are shifted by -1 for training (the convention of the offline-RL
literature since IQL: 0 at the goal, -1 elsewhere); evaluation scores use the environment's own
reward, as the D4RL reference scores do. ``load_transitions(..., reward_offset=0.0)`` turns it off.

Modules, each depending only on those above it: ``errors``; ``names`` (short names and the id
grammar, no file system); ``roots`` (where datasets live here); ``resolve`` (a name to its id, the
catalogue); ``network`` (can a download work now); ``loading`` (open, generate or download);
``info`` (spaces, horizon, reference scores); ``transitions`` (flat arrays for training);
``eval_env`` and ``describe``. This package exports what users call; the rest stays in its module.
"""

from metaconstraint.rl.data.describe import describe_dataset
from metaconstraint.rl.data.errors import DatasetError, DatasetUnavailableError, UnknownDatasetError
from metaconstraint.rl.data.eval_env import make_eval_env
from metaconstraint.rl.data.info import ANTMAZE_REWARD_OFFSET, DatasetInfo, dataset_info, default_reward_offset, normalized_score
from metaconstraint.rl.data.loading import CombinedDataset, download_dataset, generate_missing_builtin, load_dataset
from metaconstraint.rl.data.names import D4RL_SHORT_NAMES, MUJOCO_SHORT_NAMES, short_names
from metaconstraint.rl.data.resolve import known_datasets, resolve_dataset_id
from metaconstraint.rl.data.roots import dataset_roots, find_local_dataset
from metaconstraint.rl.data.transitions import Transitions, load_transitions, preprocess_rewards, reward_mean

__all__ = [
    "ANTMAZE_REWARD_OFFSET",
    "CombinedDataset",
    "D4RL_SHORT_NAMES",
    "MUJOCO_SHORT_NAMES",
    "DatasetError",
    "DatasetInfo",
    "DatasetUnavailableError",
    "Transitions",
    "UnknownDatasetError",
    "dataset_info",
    "dataset_roots",
    "default_reward_offset",
    "describe_dataset",
    "download_dataset",
    "find_local_dataset",
    "generate_missing_builtin",
    "known_datasets",
    "load_dataset",
    "load_transitions",
    "make_eval_env",
    "normalized_score",
    "preprocess_rewards",
    "reward_mean",
    "resolve_dataset_id",
    "short_names",
]
