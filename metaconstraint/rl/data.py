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
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import pathlib
import re
import socket
import threading
import urllib.parse
import urllib.request
from typing import Any

import gymnasium as gym
import numpy as np

__all__ = [
    "ANTMAZE_REWARD_OFFSET",
    "CombinedDataset",
    "D4RL_SHORT_NAMES",
    "MUJOCO_SHORT_NAMES",
    "short_names",
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
    "preprocess_rewards",
    "make_eval_env",
    "normalized_score",
    "resolve_dataset_id",
]


# ----------------------------------------------------------------------------------------- errors
class DatasetError(Exception):
    """A dataset cannot be used; the message says which one, why, and what to do."""


class UnknownDatasetError(DatasetError):
    """The name is neither a known short name, a well-formed Minari id, nor a local dataset."""


class DatasetUnavailableError(DatasetError):
    """The dataset is not in any local root and cannot be downloaded."""


# ----------------------------------------------------------------------------------------- names
def _short_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for env in ("pen", "door", "hammer", "relocate"):
        for quality in ("human", "cloned", "expert"):
            names[f"{env}-{quality}"] = f"D4RL/{env}/{quality}-v2"
    for maze in ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse"):
        names[f"antmaze-{maze}"] = f"D4RL/antmaze/{maze}-v1"
    for maze in ("umaze", "medium", "large"):
        names[f"maze2d-{maze}"] = f"D4RL/pointmaze/{maze}-v2"
        names[f"maze2d-{maze}-dense"] = f"D4RL/pointmaze/{maze}-dense-v2"
    for maze in ("open", "umaze", "medium", "large"):  # Minari's own names for the same sets
        names[f"pointmaze-{maze}"] = f"D4RL/pointmaze/{maze}-v2"
        names[f"pointmaze-{maze}-dense"] = f"D4RL/pointmaze/{maze}-dense-v2"
    for task in ("complete", "partial", "mixed"):
        names[f"kitchen-{task}"] = f"D4RL/kitchen/{task}-v2"
    return names


D4RL_SHORT_NAMES: dict[str, str] = _short_names()
"""D4RL short name -> Minari id (``"pen-human"`` -> ``"D4RL/pen/human-v2"``)."""

# Every dataset Minari publishes in its D4RL namespace: the namespace is closed, so a D4RL id
# outside it is a typo (versions are not checked: a newer one may appear remotely).
_D4RL_IDS: tuple[str, ...] = (
    *D4RL_SHORT_NAMES.values(),
    "D4RL/pointmaze/open-v2",
    "D4RL/pointmaze/open-dense-v2",
    "D4RL/minigrid/fourrooms-v0",
    "D4RL/minigrid/fourrooms-random-v0",
)
MUJOCO_ENVS = ("halfcheetah", "hopper", "walker2d", "ant")
MUJOCO_SHORT_NAMES: dict[str, str] = {
    **{f"{env}-{quality}": f"mujoco/{env}/{quality}-v0" for env in MUJOCO_ENVS for quality in ("expert", "medium", "simple")},
    **{f"{env}-medium-expert": f"mujoco/{env}/medium-v0+mujoco/{env}/expert-v0" for env in MUJOCO_ENVS},
}
"""Short name -> id of Minari's MuJoCo locomotion sets (``"hopper-medium"`` -> ``"mujoco/hopper/medium-v0"``).
These are Minari's own sets, not D4RL's (Minari has none of D4RL's locomotion sets), so D4RL's
versioned names (``hopper-medium-v2``) are not accepted for them. ``<env>-medium-expert`` pools
medium and expert, as D4RL's medium-expert sets do."""


def _builtin_short_names() -> dict[str, str]:
    from metaconstraint.rl.builtin import BUILTIN_DATASETS

    names = {}
    for dataset_id in BUILTIN_DATASETS:
        _, task, name = dataset_id.split("/")
        short = f"{task}-{_versionless(name)}"
        if short not in D4RL_SHORT_NAMES and short not in MUJOCO_SHORT_NAMES:  # pointmaze-umaze stays Minari's
            names[short] = dataset_id
    return names


_VERSION_RE = re.compile(r"^(?P<name>.+)-v(?P<version>\d+)$")
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_][-\w.]*$")
_LAST_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_][-\w.]*?-v\d+$")


def _well_formed(dataset_id: str) -> bool:
    """``namespace/.../name-vN`` with at least one namespace level."""
    parts = dataset_id.split("/")
    if len(parts) < 2 or any(p in ("", ".", "..") for p in parts):
        return False
    return all(_SEGMENT_RE.match(p) for p in parts[:-1]) and bool(_LAST_SEGMENT_RE.match(parts[-1]))


def _versionless(dataset_id: str) -> str:
    match = _VERSION_RE.match(dataset_id)
    return match.group("name") if match else dataset_id


def short_names() -> dict[str, str]:
    """Every short name -> its id: D4RL's, Minari's MuJoCo locomotion sets, the built-in sets."""
    return {**D4RL_SHORT_NAMES, **MUJOCO_SHORT_NAMES, **_builtin_short_names()}


def _builtin_ids() -> tuple[str, ...]:
    from metaconstraint.rl.builtin import BUILTIN_DATASETS

    return tuple(BUILTIN_DATASETS)


def _suggestions(name: str, n: int = 4) -> list[str]:
    candidates = list(dict.fromkeys([*short_names(), *_D4RL_IDS, *_builtin_ids(), *_all_local_ids()]))
    lowered = {c.lower(): c for c in candidates}
    matches = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)
    return [lowered[m] for m in matches]


def _unknown(name: str, problem: str) -> UnknownDatasetError:
    close = _suggestions(name)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    roots = ", ".join(str(r) for r in dataset_roots())
    return UnknownDatasetError(
        f"Unknown dataset '{name}': {problem}.{hint} A dataset is named by a short name "
        f"(such as pen-human, door-expert, antmaze-umaze, maze2d-large, hopper-medium or pendulum-medium), "
        f"by a full Minari id (namespace/name-vN, such as D4RL/door/human-v2, mujoco/hopper/expert-v0 or "
        f"builtin/pendulum/medium-v0), by the id of a dataset in a local root ({roots}), or by several "
        f"of these joined with '+'. `metaconstraint datasets list` shows them all."
    )


def resolve_dataset_id(name: str) -> str:
    """The Minari id for ``name``: a short name maps through :func:`short_names`, a full id is kept;
    ``a+b`` resolves each part (``"hopper-medium+hopper-expert"`` -> ``"mujoco/hopper/medium-v0+mujoco/hopper/expert-v0"``)."""
    if not isinstance(name, str) or not name.strip():
        raise UnknownDatasetError(
            f"No dataset name given ({name!r}): use a D4RL short name such as pen-human or a Minari id "
            f"such as D4RL/door/human-v2; `metaconstraint datasets list` shows them all."
        )
    name = name.strip()
    if "+" in name:
        parts = [p.strip() for p in name.split("+")]
        if any(not p for p in parts):
            raise _unknown(name, "a combined dataset joins two or more names with '+', as in hopper-medium+hopper-expert")
        return "+".join(resolve_dataset_id(p) for p in parts)
    if "/" in name:
        if not _well_formed(name):
            raise _unknown(name, "a Minari id has the form namespace/name-vN (for example D4RL/door/human-v2)")
        namespace = name.split("/", 1)[0]
        if namespace.lower() == "d4rl" and find_local_dataset(name) is None:
            if namespace != "D4RL":
                raise _unknown(name, "Minari ids are case-sensitive and its namespace is spelled D4RL")
            if _versionless(name) not in {_versionless(i) for i in _D4RL_IDS}:
                raise _unknown(name, "Minari's D4RL namespace has no dataset of that name")
        if namespace == "builtin" and name not in _builtin_ids() and find_local_dataset(name) is None:
            raise _unknown(name, f"the built-in datasets are {', '.join(_builtin_ids())}")
        return name
    key = name.lower()
    names = short_names()
    if key in names:
        return names[key]
    match = _VERSION_RE.match(key)
    if match and match.group("name") in D4RL_SHORT_NAMES:
        return D4RL_SHORT_NAMES[match.group("name")]
    if find_local_dataset(name) is not None:  # a local dataset without a namespace
        return name
    if match and match.group("name") in MUJOCO_SHORT_NAMES:
        raise _unknown(
            name,
            f"Minari has no D4RL locomotion sets; its own MuJoCo set is {match.group('name')} "
            f"({MUJOCO_SHORT_NAMES[match.group('name')]}), generated anew and scored against its own references",
        )
    raise _unknown(name, "it is not a short name, and a full Minari id contains '/'")


# ----------------------------------------------------------------------------------------- roots
def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _minari_root() -> pathlib.Path:
    configured = os.environ.get("MINARI_DATASETS_PATH")
    if configured:
        return pathlib.Path(os.path.abspath(os.path.expanduser(configured)))
    return pathlib.Path.home() / ".minari" / "datasets"


def _cache_root() -> pathlib.Path:
    home = os.environ.get("METACONSTRAINT_HOME")
    base = pathlib.Path(os.path.abspath(os.path.expanduser(home))) if home else pathlib.Path.home() / ".cache" / "metaconstraint"
    return base / "datasets"


def dataset_roots() -> list[pathlib.Path]:
    """Roots searched for local datasets, in order: Minari's root, then the project's cache root."""
    roots: list[pathlib.Path] = []
    for root in (_minari_root(), _cache_root()):
        if root not in roots:
            roots.append(root)
    return roots


def find_local_dataset(dataset_id: str) -> pathlib.Path | None:
    """The dataset's folder (the one holding ``data/``) in the first root that has it, else None."""
    parts = dataset_id.split("/")
    if not dataset_id or any(p in ("", ".", "..") for p in parts):
        return None
    for root in dataset_roots():
        folder = root.joinpath(*parts)
        if (folder / "data").is_dir():
            return folder
    return None


def _local_ids(root: pathlib.Path, max_depth: int = 6) -> list[str]:
    """Ids of the datasets under ``root`` (folders holding ``data/``), as Minari lists them."""
    found: list[str] = []

    def walk(folder: pathlib.Path, depth: int) -> None:
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            return
        for child in children:
            if (child / "data").is_dir():
                dataset_id = child.relative_to(root).as_posix()
                if _VERSION_RE.match(child.name):
                    found.append(dataset_id)
            elif depth < max_depth:
                walk(child, depth + 1)

    if root.is_dir():
        walk(root, 1)
    return found


def _all_local_ids() -> list[str]:
    return list(dict.fromkeys(i for root in dataset_roots() for i in _local_ids(root)))


def known_datasets() -> list[tuple[str, str, bool]]:
    """``(short name or "", Minari id, is_local)`` for every short name (D4RL, MuJoCo, built-in), then
    the built-in sets without one (the PointMaze remakes, each after the set it remakes), then every other
    local dataset. A built-in set that is not local yet is generated on first use."""
    from metaconstraint.rl.builtin import BUILTIN_DATASETS

    local = set(_all_local_ids())
    names = short_names()
    rows = [(short, dataset_id, all(p in local for p in dataset_id.split("+"))) for short, dataset_id in names.items()]
    mapped = set(names.values())
    for dataset_id in _builtin_ids():
        if dataset_id not in mapped:  # right after the last row of the set it remakes, if any
            published = getattr(BUILTIN_DATASETS[dataset_id], "published", None)
            at = max((i + 1 for i, row in enumerate(rows) if row[1] == published), default=len(rows))
            rows.insert(at, ("", dataset_id, dataset_id in local))
    mapped.update(_builtin_ids())
    rows += [("", dataset_id, True) for dataset_id in sorted(local) if dataset_id not in mapped]
    return rows


# ----------------------------------------------------------------------------------------- network
_PROBE_TIMEOUT = 1.5  # seconds for the connect probe; the whole check stays under ~2 s


def _remote_endpoint() -> tuple[str, int, str]:
    """``(host, port, description)`` of where minari downloads from (or of the proxy in between)."""
    remote = os.environ.get("MINARI_REMOTE", "hf://farama-minari")
    kind = remote.split("://", 1)[0] if "://" in remote else "hf"
    if kind == "gcp":
        url = "https://storage.googleapis.com"
    else:
        url = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    parsed = urllib.parse.urlsplit(url)
    scheme = parsed.scheme or "https"
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (443 if scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxied = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if proxied.hostname:
            return proxied.hostname, proxied.port or 80, f"the proxy {proxied.hostname}:{proxied.port or 80} (for {host})"
    return host, port, f"{host}:{port}"


def _can_connect(host: str, port: int, timeout: float) -> str | None:
    """None if a TCP connection opens within ``timeout``; otherwise why not. DNS is bounded too."""
    outcome: dict[str, Any] = {}

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome["ok"] = True
        except OSError as error:
            outcome["error"] = error

    thread = threading.Thread(target=attempt, name="metaconstraint-network-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if outcome.get("ok"):
        return None
    if "error" in outcome:
        return str(outcome["error"]) or type(outcome["error"]).__name__
    return f"no answer within {timeout:g} s"


def _offline_reason() -> str | None:
    """Why a download cannot work right now, or None if the remote answers."""
    if _truthy(os.environ.get("METACONSTRAINT_OFFLINE")):
        return "METACONSTRAINT_OFFLINE=1 is set, so no download was attempted"
    remote = os.environ.get("MINARI_REMOTE", "hf://farama-minari")
    if remote.startswith("hf://") and _truthy(os.environ.get("HF_HUB_OFFLINE")):
        return "HF_HUB_OFFLINE=1 is set, so no download was attempted"
    host, port, description = _remote_endpoint()
    problem = _can_connect(host, port, _PROBE_TIMEOUT)
    if problem is not None:
        return f"this machine cannot reach {description}, where minari downloads from ({problem})"
    return None


QUICKSTART_DATASET = "builtin/pendulum/medium-v0"


def _unavailable(dataset_id: str, reason: str) -> DatasetUnavailableError:
    configured = os.environ.get("MINARI_DATASETS_PATH")
    roots = dataset_roots()
    where = (
        f"MINARI_DATASETS_PATH={configured}"
        if configured
        else f"MINARI_DATASETS_PATH is not set, so minari's default {roots[0]}"
    )
    searched = " and ".join(str(r / dataset_id) for r in roots)
    return DatasetUnavailableError(
        f"Dataset {dataset_id} is not available: it is not in any local root ({where}; searched "
        f"{searched}) and {reason}. To get it, run `minari download {dataset_id}` (or "
        f"`metaconstraint datasets download {dataset_id}`) on a machine with network access and copy "
        f"the dataset folder into MINARI_DATASETS_PATH here, or point MINARI_DATASETS_PATH at a folder "
        f"that already has it. To work fully offline, use a built-in dataset, generated on this machine "
        f"in seconds: `metaconstraint run aspc --dataset {QUICKSTART_DATASET} --steps 3000` "
        f"(`metaconstraint datasets list` shows them all)."
    )


# ----------------------------------------------------------------------------------------- loading
_CORRUPT_ADVICE = "Delete the dataset folder and download or collect it again."
_READ_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError)


def _h5_reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _check_hdf5(file: pathlib.Path, metadata: dict) -> None:
    """Open ``file`` once and check it holds the episodes its metadata promises."""
    import h5py

    advice = _CORRUPT_ADVICE
    if not file.is_file():
        raise DatasetError(f"The dataset file {file} is missing: the dataset was not written completely. {advice}")
    if file.stat().st_size == 0:
        raise DatasetError(f"The dataset file {file} is empty (0 bytes): it was not written completely. {advice}")
    try:
        with h5py.File(file, "r") as handle:
            episodes = [k for k in handle.keys() if k.startswith("episode_")]
            expected = metadata.get("total_episodes")
            if expected is not None and len(episodes) != int(expected):
                raise DatasetError(
                    f"The dataset file {file} holds {len(episodes)} episodes but its metadata.json says "
                    f"{expected}: the file is incomplete. {advice}"
                )
            if episodes:
                handle[f"episode_{len(episodes) - 1}"]["rewards"][()]
    except DatasetError:
        raise
    except _READ_ERRORS as error:
        raise DatasetError(
            f"The dataset file {file} cannot be read as HDF5 ({_h5_reason(error)}): it is truncated or "
            f"corrupt. {advice}"
        ) from None


def _open_local(dataset_id: str, folder: pathlib.Path):
    import minari

    data = folder / "data"
    metadata_file = data / "metadata.json"
    if not metadata_file.is_file():
        raise DatasetError(
            f"The dataset folder {data} has no metadata.json: it is empty or was not written completely. "
            f"Delete {folder} and download or collect {dataset_id} again."
        )
    try:
        metadata = json.loads(metadata_file.read_text())
    except (OSError, ValueError) as error:
        raise DatasetError(
            f"The dataset metadata {metadata_file} cannot be read ({error}). "
            f"Delete {folder} and download or collect {dataset_id} again."
        ) from None
    if metadata.get("data_format", "hdf5") == "hdf5":
        _check_hdf5(data / "main_data.hdf5", metadata)
    try:
        dataset = minari.MinariDataset(data)
    except Exception as error:  # minari raises ValueError/AssertionError/KeyError for bad metadata
        raise DatasetError(f"minari cannot open the dataset at {data}: {error}") from None
    if dataset.id != dataset_id:
        raise DatasetError(
            f"The dataset at {folder} says it is {dataset.id}, not {dataset_id} (its metadata.json "
            f"dataset_id disagrees with its folder). Move it to the folder of its id, or fix the id."
        )
    return dataset


@dataclasses.dataclass(frozen=True)
class CombinedDataset:
    """Datasets used as one (``a+b``): their transitions pooled in order; evaluation environment,
    horizon and reference scores are the first part's (every part must share its spaces and
    evaluation environment id)."""

    id: str
    parts: tuple

    @property
    def total_episodes(self) -> int:
        return sum(int(p.total_episodes) for p in self.parts)

    @property
    def total_steps(self) -> int:
        return sum(int(p.total_steps) for p in self.parts)


def load_dataset(name: str, download: bool = True):
    """The ``minari.MinariDataset`` for ``name``: local if any root has it, else generated (built-in
    sets) or downloaded if possible. ``a+b`` gives a :class:`CombinedDataset` of the parts."""
    import minari

    dataset_id = resolve_dataset_id(name)
    if "+" in dataset_id:
        return CombinedDataset(dataset_id, tuple(load_dataset(part, download) for part in dataset_id.split("+")))
    folder = find_local_dataset(dataset_id)
    if folder is None and dataset_id in _builtin_ids():
        from metaconstraint.rl.builtin import generate_builtin

        folder = generate_builtin(dataset_id, _cache_root())
    if folder is None:
        if not download:
            raise _unavailable(dataset_id, "download=False was given")
        reason = _offline_reason()
        if reason is not None:
            raise _unavailable(dataset_id, reason)
        try:
            minari.download_dataset(dataset_id)
        except Exception as error:  # network errors, unknown remote id, incompatible version
            raise _unavailable(dataset_id, f"the download through minari failed ({error})") from None
        folder = find_local_dataset(dataset_id)
        if folder is None:
            leftover = _minari_root() / dataset_id
            extra = f" (a folder {leftover} without data/ blocks it; delete it and retry)" if leftover.exists() else ""
            raise _unavailable(dataset_id, f"minari's download did not leave it in {_minari_root()}{extra}")
    return _open_local(dataset_id, folder)


def generate_missing_builtin(name: str, console=None) -> list[str]:
    """Generate every built-in part of ``name`` that no root has yet (progress on ``console``); return
    their ids. The CLI calls this before its own status display, so the generation shows its bar."""
    generated = []
    for dataset_id in resolve_dataset_id(name).split("+"):
        if dataset_id in _builtin_ids() and find_local_dataset(dataset_id) is None:
            from metaconstraint.rl.builtin import generate_builtin

            generate_builtin(dataset_id, _cache_root(), console=console)
            generated.append(dataset_id)
    return generated


def download_dataset(name: str) -> list[tuple[str, pathlib.Path, str]]:
    """Make ``name`` local: ``(id, folder, how)`` per part, ``how`` one of ``"local"`` (already
    there), ``"generated"`` (built-in) or ``"downloaded"`` (through Minari). Offline, raises
    :class:`DatasetUnavailableError` at once."""
    rows = []
    for dataset_id in resolve_dataset_id(name).split("+"):
        before = find_local_dataset(dataset_id)
        dataset = load_dataset(dataset_id)
        how = "local" if before is not None else ("generated" if dataset_id in _builtin_ids() else "downloaded")
        rows.append((dataset_id, pathlib.Path(dataset.storage.data_path).parent, how))
    return rows


def _as_dataset(dataset):
    return load_dataset(dataset) if isinstance(dataset, str) else dataset


# ----------------------------------------------------------------------------------------- info
@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What training and evaluation need to know about a dataset (spaces, scores, horizon, size)."""

    dataset_id: str
    env_id: str
    observation_dim: int
    action_dim: int
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    max_action: float
    ref_min_score: float | None
    ref_max_score: float | None
    eval_horizon: int | None
    total_episodes: int
    total_steps: int
    observation_keys: tuple[str, ...] = ()  # Dict observations: keys in flattening order
    reward_offset: float = 0.0  # added to rewards for training by default (AntMaze: -1)


def _spec_dict(metadata: dict, key: str) -> dict | None:
    raw = metadata.get(key)
    if not raw:
        return None
    try:
        return json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return None


def _spaces(dataset) -> tuple[gym.Space, gym.spaces.Box]:
    """The observation space (a Box, or a Dict of Boxes that is flattened) and the Box action space."""
    from metaconstraint.rl.observations import FlatteningError, observation_keys

    obs_space, act_space = dataset.observation_space, dataset.action_space
    if not isinstance(act_space, gym.spaces.Box):
        raise DatasetError(
            f"Dataset {dataset.id} has a {type(act_space).__name__} action space ({act_space}); only continuous "
            f"(Box) action spaces are supported."
        )
    try:
        observation_keys(obs_space)
    except FlatteningError as error:
        raise DatasetError(f"Dataset {dataset.id} has an observation space that is not supported: {error}") from None
    return obs_space, act_space


ANTMAZE_REWARD_OFFSET = -1.0
"""Added to AntMaze rewards for training (IQL's convention, used by the offline-RL literature since)."""


def default_reward_offset(env_id: str) -> float:
    """The reward offset training applies by default: ``ANTMAZE_REWARD_OFFSET`` for AntMaze, else 0."""
    return ANTMAZE_REWARD_OFFSET if env_id.startswith("AntMaze") else 0.0


def dataset_info(dataset) -> DatasetInfo:
    """Spaces, D4RL reference scores, evaluation env id and horizon, and size of ``dataset``."""
    from metaconstraint.rl.observations import flat_dim, observation_keys

    dataset = _as_dataset(dataset)
    if isinstance(dataset, CombinedDataset):
        return _combined_info(dataset)
    obs_space, act_space = _spaces(dataset)
    metadata = dataset.storage.metadata
    eval_spec = _spec_dict(metadata, "eval_env_spec")
    env_spec = _spec_dict(metadata, "env_spec")
    spec = eval_spec or env_spec or {}
    horizon = spec.get("max_episode_steps")
    low = np.asarray(act_space.low, dtype=np.float64).reshape(-1)
    high = np.asarray(act_space.high, dtype=np.float64).reshape(-1)
    ref_min, ref_max = metadata.get("ref_min_score"), metadata.get("ref_max_score")
    env_id = str(spec.get("id") or "")
    return DatasetInfo(
        dataset_id=dataset.id,
        env_id=env_id,
        observation_dim=flat_dim(obs_space),
        action_dim=int(np.prod(act_space.shape)),
        action_low=tuple(float(x) for x in low),
        action_high=tuple(float(x) for x in high),
        max_action=float(np.max(np.abs(high))) if high.size else 0.0,
        ref_min_score=None if ref_min is None else float(ref_min),
        ref_max_score=None if ref_max is None else float(ref_max),
        eval_horizon=None if horizon is None else int(horizon),
        total_episodes=int(dataset.total_episodes),
        total_steps=int(dataset.total_steps),
        observation_keys=observation_keys(obs_space),
        reward_offset=default_reward_offset(env_id),
    )


def _combined_info(dataset: CombinedDataset) -> DatasetInfo:
    infos = [dataset_info(part) for part in dataset.parts]
    first = infos[0]
    for info in infos[1:]:
        differ = [
            f"{what} ({getattr(first, key)} vs {getattr(info, key)})"
            for key, what in (
                ("env_id", "evaluation environment"),
                ("observation_dim", "observation size"),
                ("observation_keys", "observation keys"),
                ("action_dim", "action size"),
                ("action_low", "action bounds"),
                ("action_high", "action bounds"),
            )
            if getattr(first, key) != getattr(info, key)
        ]
        if differ:
            raise DatasetError(
                f"Datasets {first.dataset_id} and {info.dataset_id} cannot be combined: they differ in "
                f"{', '.join(differ)}. Only datasets of the same environment can be pooled with '+'."
            )
    return dataclasses.replace(
        first,
        dataset_id=dataset.id,
        total_episodes=sum(i.total_episodes for i in infos),
        total_steps=sum(i.total_steps for i in infos),
    )


def normalized_score(info: DatasetInfo, returns) -> np.ndarray:
    """D4RL score ``100 * (R - ref_min) / (ref_max - ref_min)`` of undiscounted returns ``R`` (any shape)."""
    lo, hi = info.ref_min_score, info.ref_max_score
    if lo is None or hi is None or hi == lo:
        raise DatasetError(
            f"Dataset {info.dataset_id} has no usable D4RL reference scores (ref_min_score={lo}, "
            f"ref_max_score={hi} in its metadata), so returns cannot be normalised."
        )
    return 100.0 * (np.asarray(returns, dtype=np.float64) - lo) / (hi - lo)


def describe_dataset(name) -> dict[str, Any]:
    """What ``datasets info`` shows: size, spaces, evaluation spec, reference scores, and the
    distribution of episode returns (raw rewards, no offset), normalised too where references exist."""
    dataset = _as_dataset(name)
    info = dataset_info(dataset)
    parts = dataset.parts if isinstance(dataset, CombinedDataset) else (dataset,)
    returns = load_transitions(dataset, reward_offset=0.0).episode_returns
    quantiles = (0.0, 0.25, 0.5, 0.75, 1.0)

    def stats(values: np.ndarray) -> dict[str, float]:
        if values.size == 0:
            return {}
        q = np.quantile(values, quantiles)
        return {"mean": float(values.mean()), "std": float(values.std()), "min": float(q[0]), "q25": float(q[1]),
                "median": float(q[2]), "q75": float(q[3]), "max": float(q[4])}

    counts, edges = np.histogram(returns, bins=10) if returns.size else (np.zeros(0), np.zeros(0))
    has_refs = info.ref_min_score is not None and info.ref_max_score is not None and info.ref_min_score != info.ref_max_score
    metadata = parts[0].storage.metadata
    return {
        "dataset_id": info.dataset_id,
        "parts": [p.id for p in parts],
        "folders": [str(pathlib.Path(p.storage.data_path).parent) for p in parts],
        "episodes": info.total_episodes,
        "steps": info.total_steps,
        "observation_space": str(parts[0].observation_space),
        "observation_dim": info.observation_dim,
        "observation_keys": list(info.observation_keys),
        "action_space": str(parts[0].action_space),
        "env_id": info.env_id,
        "eval_horizon": info.eval_horizon,
        "ref_min_score": info.ref_min_score,
        "ref_max_score": info.ref_max_score,
        "reward_offset": info.reward_offset,
        "returns": stats(returns),
        "normalized_returns": stats(normalized_score(info, returns)) if has_refs else {},
        "histogram": {"counts": [int(c) for c in counts], "edges": [float(e) for e in edges]},
        "algorithm_name": metadata.get("algorithm_name"),
        "description": metadata.get("description"),
    }


# ----------------------------------------------------------------------------------------- transitions
@dataclasses.dataclass
class Transitions:
    """``N`` transitions, episodes concatenated in order; float32 unless noted.

    ``observations``/``next_observations`` ``(N, obs_dim)``, ``actions``/``next_actions``
    ``(N, act_dim)`` (``next_actions[t]`` is the dataset's action at ``t + 1``; at an episode's last
    step, that step's own action), ``rewards``/``terminals``/``timeouts`` ``(N,)`` (1.0 where the
    episode terminated / was truncated at this step), ``episode_returns`` ``(E,)`` float64 and
    ``episode_lengths`` ``(E,)`` int64.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    next_actions: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    episode_returns: np.ndarray
    episode_lengths: np.ndarray


def _finish(observations, next_observations, actions, rewards64, terminals, timeouts, lengths) -> Transitions:
    """Next actions, float32 rewards and per-episode returns from the filled arrays."""
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    nonempty = lengths > 0
    next_actions = np.empty_like(actions)
    next_actions[:-1] = actions[1:]
    ends = (starts + lengths - 1)[nonempty]
    next_actions[ends] = actions[ends]
    returns = np.zeros(len(lengths), dtype=np.float64)
    if nonempty.any():
        returns[nonempty] = np.add.reduceat(rewards64, starts[nonempty])
    return Transitions(
        observations=observations,
        actions=actions,
        rewards=rewards64.astype(np.float32),
        next_observations=next_observations,
        next_actions=next_actions,
        terminals=terminals,
        timeouts=timeouts,
        episode_returns=returns,
        episode_lengths=np.asarray(lengths, dtype=np.int64),
    )


def _assemble(dataset_id: str, episodes: list[tuple], obs_dim: int, act_dim: int) -> Transitions:
    """Transitions from per-episode ``(observations (T+1, ...), actions, rewards, terminations, truncations)``."""
    lengths = np.array([np.size(e[2]) for e in episodes], dtype=np.int64)
    n = int(lengths.sum())
    observations = np.empty((n, obs_dim), dtype=np.float32)
    next_observations = np.empty((n, obs_dim), dtype=np.float32)
    actions = np.empty((n, act_dim), dtype=np.float32)
    rewards = np.empty(n, dtype=np.float64)
    terminals = np.empty(n, dtype=np.float32)
    timeouts = np.empty(n, dtype=np.float32)
    s = 0
    for e, (obs, act, rew, term, trunc) in enumerate(episodes):
        t = int(lengths[e])
        obs, act = np.asarray(obs), np.asarray(act)
        if obs.shape[0] != t + 1 or act.shape[0] != t or obs.size != (t + 1) * obs_dim or act.size != t * act_dim:
            raise DatasetError(
                f"Episode {e} of dataset {dataset_id} is malformed: observations {obs.shape}, actions "
                f"{act.shape}, {t} rewards; expected ({t + 1}, {obs_dim}) and ({t}, {act_dim})."
            )
        obs = obs.reshape(t + 1, obs_dim)
        observations[s : s + t] = obs[:t]
        next_observations[s : s + t] = obs[1:]
        actions[s : s + t] = act.reshape(t, act_dim)
        rewards[s : s + t] = np.asarray(rew).reshape(t)
        terminals[s : s + t] = np.asarray(term).reshape(t)
        timeouts[s : s + t] = np.asarray(trunc).reshape(t)
        s += t
    return _finish(observations, next_observations, actions, rewards, terminals, timeouts, lengths)


def _iterated_episodes(dataset) -> list[tuple]:
    return [(e.observations, e.actions, e.rewards, e.terminations, e.truncations) for e in dataset.iterate_episodes()]


def _read_hdf5(file: pathlib.Path, indices: np.ndarray, obs_dim: int, act_dim: int) -> Transitions:
    """Transitions read straight from Minari's HDF5 layout with h5py's low-level API.

    Each episode's observations ``(T+1, ...)`` are read (cast to float32 by HDF5) into one buffer at
    the episode's offset; the next episode then overwrites the extra final row, which is kept aside,
    so ``next_observations`` is one shifted copy with the episode ends patched in.
    """
    import h5py
    from h5py import h5d, h5g, h5s

    names = ("observations", "actions", "rewards", "terminations", "truncations")
    with h5py.File(file, "r") as handle:
        where = "the episode index"
        try:
            groups, lengths = [], np.empty(len(indices), dtype=np.int64)
            for i, index in enumerate(indices):
                where = f"episode_{int(index)}"
                groups.append((where, h5g.open(handle.id, where.encode())))
                shape = h5d.open(groups[-1][1], b"actions").shape
                lengths[i] = shape[0] if shape else 0

            n = int(lengths.sum())
            buffer = np.empty((n + 1, obs_dim), dtype=np.float32)
            finals = np.empty((len(indices), obs_dim), dtype=np.float32)
            actions = np.empty((n, act_dim), dtype=np.float32)
            rewards = np.empty(n, dtype=np.float64)
            terminals = np.empty(n, dtype=np.float32)
            timeouts = np.empty(n, dtype=np.float32)
            s = 0
            for i, (where, group) in enumerate(groups):
                t = int(lengths[i])
                obs, act, rew, term, trunc = (h5d.open(group, name.encode()) for name in names)
                sizes = [int(np.prod(d.shape)) for d in (obs, act, rew, term, trunc)]
                if obs.shape[:1] != (t + 1,) or sizes != [(t + 1) * obs_dim, t * act_dim, t, t, t]:
                    found = ", ".join(f"{k} {d.shape}" for k, d in zip(names, (obs, act, rew, term, trunc)))
                    raise DatasetError(
                        f"{where} of the dataset file {file} is malformed ({found}); Minari's layout has "
                        f"observations ({t + 1}, {obs_dim}), actions ({t}, {act_dim}) and {t} rewards, "
                        f"terminations and truncations. {_CORRUPT_ADVICE}"
                    )
                obs.read(h5s.ALL, h5s.ALL, buffer[s : s + t + 1])
                finals[i] = buffer[s + t]
                if t:
                    act.read(h5s.ALL, h5s.ALL, actions[s : s + t])
                    rew.read(h5s.ALL, h5s.ALL, rewards[s : s + t])
                    for flags_id, target in ((term, terminals), (trunc, timeouts)):
                        flags = np.empty(t, dtype=flags_id.dtype)
                        flags_id.read(h5s.ALL, h5s.ALL, flags)
                        target[s : s + t] = flags
                s += t
        except DatasetError:
            raise
        except _READ_ERRORS as error:
            raise DatasetError(
                f"{where} of the dataset file {file} cannot be read ({_h5_reason(error)}): the file is "
                f"truncated or corrupt, or not in Minari's layout. {_CORRUPT_ADVICE}"
            ) from None

    observations = buffer[:n]
    next_observations = np.empty((n, obs_dim), dtype=np.float32)
    next_observations[:] = buffer[1 : n + 1]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    nonempty = lengths > 0
    next_observations[(starts + lengths - 1)[nonempty]] = finals[nonempty]
    return _finish(observations, next_observations, actions, rewards, terminals, timeouts, lengths)


def _read_hdf5_dict(file: pathlib.Path, indices: np.ndarray, obs_space: gym.spaces.Dict, obs_dim: int, act_dim: int, dataset_id: str) -> Transitions:
    """Transitions of Dict-observation episodes: each key's ``(T+1, ...)`` array read from the
    episode's ``observations/<key>`` and flattened by :func:`~metaconstraint.rl.observations.flatten_observations`."""
    import h5py

    from metaconstraint.rl.observations import flatten_observations, observation_keys

    keys = observation_keys(obs_space)
    episodes = []
    with h5py.File(file, "r") as handle:
        where = "the episode index"
        try:
            for index in indices:
                where = f"episode_{int(index)}"
                group = handle[where]
                stored = group["observations"]
                missing = [k for k in keys if not isinstance(stored, h5py.Group) or k not in stored]
                if missing:
                    raise DatasetError(
                        f"{where} of the dataset file {file} has no observations/{missing[0]}, which the Dict "
                        f"observation space names: the file is not in Minari's layout. {_CORRUPT_ADVICE}"
                    )
                observations = flatten_observations({k: stored[k][()] for k in keys}, obs_space)
                episodes.append(
                    (observations, group["actions"][()], group["rewards"][()], group["terminations"][()], group["truncations"][()])
                )
        except DatasetError:
            raise
        except _READ_ERRORS as error:
            raise DatasetError(
                f"{where} of the dataset file {file} cannot be read ({_h5_reason(error)}): the file is "
                f"truncated or corrupt, or not in Minari's layout. {_CORRUPT_ADVICE}"
            ) from None
    return _assemble(dataset_id, episodes, obs_dim, act_dim)


def _concatenate(parts: list[Transitions]) -> Transitions:
    return Transitions(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(Transitions)})


def load_transitions(dataset, reward_offset: float | None = None) -> Transitions:
    """Every episode of ``dataset`` as flat ``Transitions`` (HDF5 read directly; other storages via minari).

    Dict observations are flattened (:mod:`metaconstraint.rl.observations`). ``reward_offset`` is
    added to every reward (and so to the episode returns); ``None`` takes the dataset's default
    (:func:`default_reward_offset`: -1 for AntMaze, else 0). A combined dataset pools its parts.
    """
    from minari.dataset.minari_storage import is_image_space

    from metaconstraint.rl.observations import flat_dim, flatten_observations

    dataset = _as_dataset(dataset)
    if isinstance(dataset, CombinedDataset):
        if reward_offset is None:
            reward_offset = dataset_info(dataset).reward_offset
        return _concatenate([load_transitions(part, reward_offset) for part in dataset.parts])
    obs_space, act_space = _spaces(dataset)
    obs_dim, act_dim = flat_dim(obs_space), int(np.prod(act_space.shape))
    if reward_offset is None:
        reward_offset = dataset_info(dataset).reward_offset
    storage = dataset.storage
    direct = getattr(storage, "FORMAT", None) == "hdf5" and not (
        storage.jpeg_encoding and (is_image_space(obs_space) or is_image_space(act_space))
    )
    if not direct:
        episodes = [(flatten_observations(e[0], obs_space), *e[1:]) for e in _iterated_episodes(dataset)]
        transitions = _assemble(dataset.id, episodes, obs_dim, act_dim)
    else:
        file = pathlib.Path(storage.data_path) / "main_data.hdf5"
        indices = np.asarray(dataset.episode_indices)
        try:
            if isinstance(obs_space, gym.spaces.Dict):
                transitions = _read_hdf5_dict(file, indices, obs_space, obs_dim, act_dim, dataset.id)
            else:
                transitions = _read_hdf5(file, indices, obs_dim, act_dim)
        except DatasetError:
            raise
        except _READ_ERRORS as error:  # opening the file itself failed
            raise DatasetError(
                f"The dataset file {file} cannot be read ({_h5_reason(error)}): it is truncated or corrupt. "
                f"{_CORRUPT_ADVICE}"
            ) from None
    if reward_offset:
        transitions.rewards += np.float32(reward_offset)
        transitions.episode_returns += reward_offset * transitions.episode_lengths
    return transitions


def preprocess_rewards(transitions: Transitions, center: bool = False, scale: float = 1.0) -> Transitions:
    """Training rewards ``scale * (r - mean r)`` (``center``) or ``scale * r``; episode returns follow.

    Scores are unaffected: evaluation reads the environment's own reward. TD3+BC's actor objective
    divides by ``mean |Q|`` and so ignores ``scale``; ASPC's L2/L3 outer losses do not
    (:mod:`metaconstraint.outer_losses.builtin`), which is what the option is for.
    """
    rewards = transitions.rewards.astype(np.float64)
    offset = rewards.mean() if center and len(rewards) else 0.0
    returns = scale * (transitions.episode_returns - offset * transitions.episode_lengths)
    return dataclasses.replace(
        transitions, rewards=(scale * (rewards - offset)).astype(np.float32), episode_returns=returns
    )


# ----------------------------------------------------------------------------------------- evaluation
def make_eval_env(dataset, num_envs: int = 1) -> gym.vector.SyncVectorEnv:
    """``num_envs`` copies of the dataset's evaluation env (its ``eval_env_spec``, with that horizon);
    Dict observations are flattened as in the transitions. A combined dataset evaluates in its first part's."""
    from metaconstraint.rl.observations import FlattenObservation

    dataset = _as_dataset(dataset)
    if isinstance(dataset, CombinedDataset):
        dataset_info(dataset)  # the parts must agree
        return make_eval_env(dataset.parts[0], num_envs)
    if num_envs < 1:
        raise ValueError(f"num_envs must be at least 1, got {num_envs}")

    def make() -> gym.Env:
        env = dataset.recover_environment(eval_env=True)
        return FlattenObservation(env) if isinstance(env.observation_space, gym.spaces.Dict) else env

    try:
        return gym.vector.SyncVectorEnv([make for _ in range(num_envs)])
    except (gym.error.Error, ValueError, ImportError, AttributeError) as error:
        raise DatasetError(
            f"The evaluation environment of dataset {dataset.id} cannot be created ({error}). Check that "
            f"the package providing it (e.g. gymnasium-robotics for Adroit, AntMaze, PointMaze, Kitchen) "
            f"is installed."
        ) from None
