"""Making Minari datasets from any Gymnasium environment and a behaviour policy.

A *policy* maps one flat observation ``(obs_dim,)`` (Dict observations flattened as in
:mod:`metaconstraint.rl.observations`) to an action ``(act_dim,)``. Collection runs it in the
environment, optionally with Gaussian action noise

    a = clip(pi(s) + S * (high - low) / 2 * N(0, I), low, high)                        (act_dim,)

and writes the episodes as a Minari dataset whose metadata holds the evaluation spec (the
environment with its horizon) and the reference scores that normalise returns,
``score = 100 * (R - ref_min) / (ref_max - ref_min)``: ``ref_min`` is the measured mean return of
the uniform random policy, ``ref_max`` a given expert return or the measured mean return of the
behaviour policy without noise. The dataset appears in its root only when complete (it is written
beside it and moved in).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import pathlib
import shutil
import tempfile
import warnings
from typing import Any, Callable, Iterator

import gymnasium as gym
import numpy as np

from metaconstraint.rl.data import DatasetError
from metaconstraint.rl.data.names import well_formed
from metaconstraint.rl.envs import make_env
from metaconstraint.rl.observations import FlatteningError, flatten_observations, observation_keys

__all__ = [
    "CollectError",
    "CollectResult",
    "Policy",
    "collect_dataset",
    "collect_episodes",
    "import_policy",
    "make_env_spec",
    "measure_return",
    "random_policy",
    "write_dataset",
]

Policy = Callable[[np.ndarray], np.ndarray]
REFERENCE_SEED_OFFSET = 1_000_000  # reference episodes use seeds seed + this + e, apart from the data's


class CollectError(DatasetError):
    """A collection that cannot run; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class CollectResult:
    """What was collected: the dataset's id and folder, its size, references and episode returns ``(E,)``."""

    dataset_id: str
    folder: pathlib.Path
    env_id: str
    eval_horizon: int | None
    episodes: int
    steps: int
    ref_min_score: float
    ref_max_score: float
    returns: np.ndarray


# ----------------------------------------------------------------------------------------- environments
def make_env_spec(env_id: str, max_episode_steps: int | None = None) -> gym.envs.registration.EnvSpec:
    """The registered spec of ``env_id`` (gymnasium-robotics ids included; ``module:Env-vN`` imports
    ``module`` first), with ``max_episode_steps`` replacing its horizon when given."""
    if ":" not in env_id and env_id not in gym.registry:
        with contextlib.suppress(ImportError):  # registers AntMaze, PointMaze, Adroit, ...
            import gymnasium_robotics

            gym.register_envs(gymnasium_robotics)
    if ":" in env_id:
        module, _, env_id = env_id.partition(":")
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise CollectError(f"cannot import the module {module!r} that should register {env_id}: {error}.") from None
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as error:
        from metaconstraint.suggest import unknown_name

        advice = "Use a registered Gymnasium id such as Pendulum-v1, Hopper-v5 or AntMaze_UMaze-v4."
        reason = str(error).split(" Did you mean")[0]  # gymnasium's own guess, replaced by ours
        raise CollectError(unknown_name("environment", env_id, gym.registry, why=reason, list_known=False, advice=advice)) from None
    if max_episode_steps is not None:
        if max_episode_steps < 1:
            raise CollectError(f"--max-episode-steps must be at least 1, got {max_episode_steps}.")
        spec = dataclasses.replace(spec, max_episode_steps=int(max_episode_steps))
    if spec.max_episode_steps is None:
        raise CollectError(
            f"{env_id} has no episode horizon (max_episode_steps), so episodes and evaluations might never end: "
            f"give --max-episode-steps."
        )
    return spec


def _check_spaces(env: gym.Env, env_id: str) -> None:
    if not isinstance(env.action_space, gym.spaces.Box):
        raise CollectError(f"{env_id} has a {type(env.action_space).__name__} action space; only continuous (Box) actions are supported.")
    try:
        observation_keys(env.observation_space)
    except FlatteningError as error:
        raise CollectError(f"{env_id}: {error}") from None


# ----------------------------------------------------------------------------------------- policies
def random_policy(action_space: gym.spaces.Box, seed: int = 0) -> Policy:
    """Uniform actions in ``action_space``, from its own seeded generator."""
    rng = np.random.default_rng(seed)
    low, high = np.asarray(action_space.low, np.float64), np.asarray(action_space.high, np.float64)

    def act(observation: np.ndarray) -> np.ndarray:
        return rng.uniform(low, high).astype(action_space.dtype)

    return act


def import_policy(path: str) -> Policy:
    """The callable ``function`` of ``module:function`` (``module.sub:function`` also works)."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise CollectError(f"--policy {path!r}: a Python policy is written module:function (e.g. mypolicies:expert).")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001  (any error while importing user code)
        raise CollectError(f"--policy {path}: cannot import {module_name} ({type(error).__name__}: {error}).") from None
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise CollectError(f"--policy {path}: {module_name} has no attribute {attribute}.")
        target = getattr(target, part)
    if not callable(target):
        raise CollectError(f"--policy {path}: {attribute} is a {type(target).__name__}, not a function.")
    return target


def _action(policy: Policy, observation: np.ndarray, space: gym.spaces.Box, noise: float, rng: np.random.Generator) -> np.ndarray:
    try:
        action = policy(observation)
    except Exception as error:  # noqa: BLE001  (user code: say where it failed, no traceback)
        name = getattr(policy, "__name__", "policy")
        raise CollectError(
            f"the policy {name} failed on an observation of shape {observation.shape} ({type(error).__name__}: {error}). "
            f"A policy is a function observation (obs_dim,) -> action (act_dim,)."
        ) from None
    try:
        action = np.asarray(action, dtype=np.float64).reshape(space.shape)
    except (TypeError, ValueError) as error:
        raise CollectError(f"the policy returned {type(action).__name__} {action!r:.60}, not an action of the space {space} ({error}).") from None
    if noise:
        action = action + noise * (space.high - space.low) / 2.0 * rng.standard_normal(space.shape)
    if not np.all(np.isfinite(action)):
        raise CollectError(f"the policy returned a non-finite action ({action}).")
    return np.clip(action, space.low, space.high).astype(space.dtype)


# ----------------------------------------------------------------------------------------- running
def collect_episodes(
    spec,
    policy: Policy,
    episodes: int | None = None,
    steps: int | None = None,
    noise: float = 0.0,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list:
    """Run ``policy`` in ``gym.make(spec)`` for ``episodes`` episodes or exactly ``steps`` steps (the
    last episode is truncated there); episode ``e`` resets with seed ``seed + e``. Returns Minari
    ``EpisodeBuffer`` s holding the raw (unflattened) observations. ``progress(steps, episodes)``
    is called after every episode."""
    from minari.data_collector import EpisodeBuffer

    if (episodes is None) == (steps is None):
        raise CollectError("give either a number of episodes (--episodes) or of steps (--steps), not both.")
    if (episodes is not None and episodes < 1) or (steps is not None and steps < 1):
        raise CollectError(f"--episodes and --steps must be at least 1 (got {episodes or steps}).")
    if noise < 0 or not np.isfinite(noise):
        raise CollectError(f"--noise must be a finite number >= 0, got {noise}.")
    env = make_env(spec)
    try:
        _check_spaces(env, spec.id)
        obs_space, act_space = env.observation_space, env.action_space
        rng = np.random.default_rng(seed)
        buffers, total = [], 0
        while (episodes is not None and len(buffers) < episodes) or (steps is not None and total < steps):
            e = len(buffers)
            observation, _ = env.reset(seed=seed + e)
            record: dict[str, list] = {"observations": [observation], "actions": [], "rewards": [], "terminations": [], "truncations": []}
            done = False
            while not done:
                action = _action(policy, flatten_observations(observation, obs_space), act_space, noise, rng)
                observation, reward, terminated, truncated, _ = env.step(action)
                total += 1
                truncated = bool(truncated) or (steps is not None and total >= steps and not terminated)
                for key, value in zip(record, (observation, action, float(reward), bool(terminated), truncated)):
                    record[key].append(value)
                done = terminated or truncated
            buffers.append(EpisodeBuffer(id=e, seed=seed + e, **{k: _stack(v) for k, v in record.items()}))
            if progress:
                progress(total, len(buffers))
        return buffers
    finally:
        env.close()


def _stack(values: list) -> Any:
    if values and isinstance(values[0], dict):
        return {k: np.stack([v[k] for v in values]) for k in values[0]}
    return np.asarray(values)


def measure_return(spec, policy: Policy, episodes: int, seed: int = 0) -> np.ndarray:
    """Undiscounted returns ``(episodes,)`` of ``policy`` (no noise) in ``gym.make(spec)``, episode
    ``e`` reset with seed ``seed + REFERENCE_SEED_OFFSET + e``."""
    buffers = collect_episodes(spec, policy, episodes=episodes, seed=seed + REFERENCE_SEED_OFFSET)
    return np.array([float(np.sum(b.rewards)) for b in buffers])


# ----------------------------------------------------------------------------------------- writing
@contextlib.contextmanager
def _minari_root(root: pathlib.Path) -> Iterator[None]:
    """Minari writes into ``$MINARI_DATASETS_PATH``: point it at ``root`` for the duration."""
    before = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = before


def write_dataset(
    dataset_id: str,
    buffers: list,
    root: pathlib.Path,
    spec,
    ref_min_score: float,
    ref_max_score: float,
    algorithm_name: str,
    description: str,
    eval_spec=None,
) -> pathlib.Path:
    """Write ``buffers`` as the Minari dataset ``dataset_id`` under ``root`` (``env_spec`` is ``spec``,
    ``eval_env_spec`` is ``eval_spec``, default ``spec``) and return its folder. It is written in a hidden folder beside
    and moved into place whole; if another process put the same id there first, theirs is kept."""
    import minari

    root = pathlib.Path(root)
    final = root.joinpath(*dataset_id.split("/"))
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = pathlib.Path(tempfile.mkdtemp(prefix=".collect-", dir=root))
    except OSError as error:
        raise CollectError(f"cannot write into the dataset root {root}: {error.strerror or error}.") from None
    try:
        with _minari_root(staging), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # minari warns about unset author/permalink fields
            minari.create_dataset_from_buffers(
                dataset_id=dataset_id,
                buffer=buffers,
                env=spec,
                eval_env=spec if eval_spec is None else eval_spec,
                algorithm_name=algorithm_name,
                author="metaconstraint",
                author_email="metaconstraint@users.invalid",
                code_permalink="https://github.com/metaconstraint/metaconstraint",
                description=description,
                ref_min_score=float(ref_min_score),
                ref_max_score=float(ref_max_score),
            )
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staging.joinpath(*dataset_id.split("/")), final)
        except OSError:
            if not (final / "data").is_dir():
                raise
    except OSError as error:
        raise CollectError(f"cannot write the dataset {dataset_id} into {root}: {error.strerror or error}.") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


# ----------------------------------------------------------------------------------------- the command
def collect_dataset(
    env_id: str,
    dataset_id: str,
    policy: Policy | str,
    root: pathlib.Path,
    episodes: int | None = None,
    steps: int | None = None,
    noise: float = 0.0,
    seed: int = 0,
    expert_score: float | None = None,
    reference_episodes: int = 10,
    max_episode_steps: int | None = None,
    policy_name: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CollectResult:
    """Collect a dataset with ``policy`` (a :data:`Policy` or ``"random"``) and write it under ``root``.

    References: ``ref_min_score`` is the mean return of the random policy over
    ``reference_episodes`` episodes; ``ref_max_score`` is ``expert_score`` if given, else the
    behaviour policy's mean return without noise (a random behaviour policy needs ``expert_score``).
    """
    if not well_formed(dataset_id) or dataset_id.count("/") < 2 or "+" in dataset_id:
        raise CollectError(f"--id {dataset_id!r}: a collected dataset's id has the form NAMESPACE/ENV/NAME-vN, e.g. mine/pendulum/expert-v0.")
    if dataset_id.split("/", 1)[0] in ("D4RL", "builtin", "mujoco"):
        raise CollectError(f"--id {dataset_id}: the namespace {dataset_id.split('/', 1)[0]} is reserved for published or built-in datasets; use your own.")
    root = pathlib.Path(os.path.abspath(os.path.expanduser(str(root))))
    if (root.joinpath(*dataset_id.split("/")) / "data").exists():
        raise CollectError(f"{dataset_id} already exists in {root}: delete {root.joinpath(*dataset_id.split('/'))} or choose another --id.")
    if reference_episodes < 1:
        raise CollectError(f"--reference-episodes must be at least 1, got {reference_episodes}.")
    spec = make_env_spec(env_id, max_episode_steps)
    probe = make_env(spec)
    try:
        _check_spaces(probe, spec.id)
        act_space = probe.action_space
    finally:
        probe.close()
    is_random = isinstance(policy, str) and policy == "random"
    if is_random and expert_score is None:
        raise CollectError(
            "--policy random measures only the random reference (ref_min_score); give the expert reference with "
            "--expert-score RETURN so that scores can be normalised."
        )
    behaviour = random_policy(act_space, seed) if is_random else policy
    buffers = collect_episodes(spec, behaviour, episodes, steps, noise, seed, progress)
    ref_min = float(measure_return(spec, random_policy(act_space, seed + 1), reference_episodes, seed).mean())
    ref_max = float(expert_score) if expert_score is not None else float(measure_return(spec, behaviour, reference_episodes, seed).mean())
    if not np.isfinite(ref_max) or ref_max == ref_min:
        raise CollectError(
            f"the references would not normalise scores (random {ref_min:.4g}, expert {ref_max:.4g}): give --expert-score "
            f"with the return of a good policy."
        )
    name = policy_name or ("random" if is_random else getattr(policy, "__name__", "policy"))
    description = (
        f"{len(buffers)} episodes of {spec.id} (horizon {spec.max_episode_steps}) collected by `metaconstraint datasets "
        f"collect` with the policy {name}, action noise {noise:g}, seed {seed}. References: random {ref_min:.6g} "
        f"(measured over {reference_episodes} episodes), expert {ref_max:.6g} "
        f"({'given' if expert_score is not None else f'measured, behaviour policy without noise, {reference_episodes} episodes'})."
    )
    folder = write_dataset(dataset_id, buffers, root, spec, ref_min, ref_max, name, description)
    returns = np.array([float(np.sum(b.rewards)) for b in buffers])
    return CollectResult(
        dataset_id=dataset_id,
        folder=folder,
        env_id=spec.id,
        eval_horizon=spec.max_episode_steps,
        episodes=len(buffers),
        steps=int(sum(len(b.rewards) for b in buffers)),
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        returns=returns,
    )
