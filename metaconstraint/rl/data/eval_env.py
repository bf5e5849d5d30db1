"""The environment a dataset's policies are evaluated in."""

from __future__ import annotations

import gymnasium as gym

from metaconstraint.rl.data.errors import DatasetError
from metaconstraint.rl.data.info import dataset_info
from metaconstraint.rl.data.loading import CombinedDataset, as_dataset
from metaconstraint.rl.envs import without_model_file


def make_eval_env(dataset, num_envs: int = 1, autoreset: bool = True) -> gym.vector.SyncVectorEnv:
    """``num_envs`` copies of the dataset's evaluation env (its ``eval_env_spec``, with that horizon);
    Dict observations are flattened as in the transitions. A combined dataset evaluates in its first part's.
    ``autoreset=False``: ended environments wait for ``reset(options={"reset_mask": ...})`` (online episodes)."""
    from metaconstraint.rl.observations import FlattenObservation

    dataset = as_dataset(dataset)
    if isinstance(dataset, CombinedDataset):
        dataset_info(dataset)  # the parts must agree
        return make_eval_env(dataset.parts[0], num_envs, autoreset)
    if num_envs < 1:
        raise ValueError(f"num_envs must be at least 1, got {num_envs}")

    def make() -> gym.Env:
        env = without_model_file(dataset.recover_environment(eval_env=True))
        return FlattenObservation(env) if isinstance(env.observation_space, gym.spaces.Dict) else env

    try:
        mode = gym.vector.AutoresetMode.NEXT_STEP if autoreset else gym.vector.AutoresetMode.DISABLED
        return gym.vector.SyncVectorEnv([make for _ in range(num_envs)], autoreset_mode=mode)
    except (gym.error.Error, ValueError, ImportError, AttributeError) as error:
        raise DatasetError(
            f"The evaluation environment of dataset {dataset.id} cannot be created ({error}). Check that "
            f"the package providing it (e.g. gymnasium-robotics for Adroit, AntMaze, PointMaze, Kitchen) "
            f"is installed."
        ) from None
