"""A name to its Minari id (short names, full ids, local ids, ``a+b``), unknown names with close
matches (:func:`metaconstraint.suggest.unknown_name`), and the catalogue ``datasets list`` shows."""

from __future__ import annotations

from metaconstraint.rl.data.errors import UnknownDatasetError
from metaconstraint.rl.data.names import (
    D4RL_IDS,
    D4RL_SHORT_NAMES,
    MUJOCO_SHORT_NAMES,
    VERSION_RE,
    builtin_ids,
    short_names,
    versionless,
    well_formed,
)
from metaconstraint.rl.data.roots import dataset_roots, find_local_dataset, local_dataset_ids
from metaconstraint.suggest import unknown_name

NAMING = (
    "A dataset is named by a short name (such as pen-human, door-expert, antmaze-umaze, maze2d-large, "
    "hopper-medium or pendulum-medium), by a full Minari id (namespace/name-vN, such as D4RL/door/human-v2, "
    "mujoco/hopper/expert-v0 or builtin/pendulum/medium-v0), by the id of a dataset in a local root ({roots}), "
    "or by several of these joined with '+'. `metaconstraint datasets list` shows them all."
)


def _unknown(name: str, problem: str) -> UnknownDatasetError:
    candidates = [*short_names(), *D4RL_IDS, *builtin_ids(), *local_dataset_ids()]
    roots = ", ".join(str(r) for r in dataset_roots())
    return UnknownDatasetError(
        unknown_name("dataset", name, candidates, why=problem, list_known=False, advice=NAMING.format(roots=roots), n=4)
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
        if not well_formed(name):
            raise _unknown(name, "a Minari id has the form namespace/name-vN (for example D4RL/door/human-v2)")
        namespace = name.split("/", 1)[0]
        if namespace.lower() == "d4rl" and find_local_dataset(name) is None:
            if namespace != "D4RL":
                raise _unknown(name, "Minari ids are case-sensitive and its namespace is spelled D4RL")
            if versionless(name) not in {versionless(i) for i in D4RL_IDS}:
                raise _unknown(name, "Minari's D4RL namespace has no dataset of that name")
        if namespace == "builtin" and name not in builtin_ids() and find_local_dataset(name) is None:
            raise _unknown(name, f"the built-in datasets are {', '.join(builtin_ids())}")
        return name
    key = name.lower()
    names = short_names()
    if key in names:
        return names[key]
    match = VERSION_RE.match(key)
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


def known_datasets() -> list[tuple[str, str, bool]]:
    """``(short name or "", Minari id, is_local)`` for every short name (D4RL, MuJoCo, built-in), then
    the built-in sets without one (the PointMaze remakes, each after the set it remakes), then every other
    local dataset. A built-in set that is not local yet is generated on first use."""
    from metaconstraint.rl.builtin import BUILTIN_DATASETS

    local = set(local_dataset_ids())
    names = short_names()
    rows = [(short, dataset_id, all(p in local for p in dataset_id.split("+"))) for short, dataset_id in names.items()]
    mapped = set(names.values())
    for dataset_id in builtin_ids():
        if dataset_id not in mapped:  # right after the last row of the set it remakes, if any
            published = getattr(BUILTIN_DATASETS[dataset_id], "published", None)
            at = max((i + 1 for i, row in enumerate(rows) if row[1] == published), default=len(rows))
            rows.insert(at, ("", dataset_id, dataset_id in local))
    mapped.update(builtin_ids())
    rows += [("", dataset_id, True) for dataset_id in sorted(local) if dataset_id not in mapped]
    return rows
