"""Dataset names without any file system: D4RL and MuJoCo short names, the built-in sets' short
names, and the grammar of a Minari id (``namespace/.../name-vN``)."""

from __future__ import annotations

import re


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
D4RL_IDS: tuple[str, ...] = (
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
        short = f"{task}-{versionless(name)}"
        if short not in D4RL_SHORT_NAMES and short not in MUJOCO_SHORT_NAMES:  # pointmaze-umaze stays Minari's
            names[short] = dataset_id
    return names


VERSION_RE = re.compile(r"^(?P<name>.+)-v(?P<version>\d+)$")
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_][-\w.]*$")
_LAST_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_][-\w.]*?-v\d+$")


def well_formed(dataset_id: str) -> bool:
    """``namespace/.../name-vN`` with at least one namespace level."""
    parts = dataset_id.split("/")
    if len(parts) < 2 or any(p in ("", ".", "..") for p in parts):
        return False
    return all(_SEGMENT_RE.match(p) for p in parts[:-1]) and bool(_LAST_SEGMENT_RE.match(parts[-1]))


def versionless(dataset_id: str) -> str:
    """``dataset_id`` without its ``-vN`` suffix (``"D4RL/pen/human-v2"`` -> ``"D4RL/pen/human"``)."""
    match = VERSION_RE.match(dataset_id)
    return match.group("name") if match else dataset_id


def short_names() -> dict[str, str]:
    """Every short name -> its id: D4RL's, Minari's MuJoCo locomotion sets, the built-in sets."""
    return {**D4RL_SHORT_NAMES, **MUJOCO_SHORT_NAMES, **_builtin_short_names()}


def builtin_ids() -> tuple[str, ...]:
    """The ids of the sets :mod:`metaconstraint.rl.builtin` generates."""
    from metaconstraint.rl.builtin import BUILTIN_DATASETS

    return tuple(BUILTIN_DATASETS)
