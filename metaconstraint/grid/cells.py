"""Grid cells: one ``(algorithm, dataset, seed[, tag])`` run as the flat values ``build_configs``
reads (``seeds = 1``), their names and run folders, and packing: cells that differ only in seed and
member-varying scalars train as one vectorised job (:data:`PACKED`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

PACKED = "packed"  # a job's key for the cells it trains as one vectorised computation


def expand_grid(
    algorithms: Iterable[str],
    datasets: Iterable[str],
    seeds: int,
    seed: int = 0,
    run_options: dict[str, Any] | None = None,
    algorithm_options: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One values dict per ``(algorithm, dataset, seed)``, algorithm-major, seeds ``seed..seed+seeds-1``.

    ``run_options`` (steps, eval_every, out, ...) go to every cell; ``algorithm_options``
    (``outer_losses``, ``scale_lr_decay_steps``, ...) only to the algorithms whose config has that
    key. An option no algorithm of the grid accepts is an error.
    """
    from metaconstraint.algorithms import config_keys
    from metaconstraint.config import ConfigError, algorithm_class

    algorithms, datasets = list(algorithms), list(datasets)
    algorithm_options = dict(algorithm_options or {})
    accepted = {name: config_keys(algorithm_class(name).Config) for name in algorithms}
    unused = sorted(key for key in algorithm_options if not any(key in keys for keys in accepted.values()))
    if unused:
        raise ConfigError(f"no algorithm of this grid ({', '.join(algorithms)}) takes {', '.join(unused)}.")
    cells = []
    for algorithm in algorithms:
        options = {k: v for k, v in algorithm_options.items() if k in accepted[algorithm]}
        for dataset in datasets:
            for k in range(seeds):
                cells.append(
                    {**(run_options or {}), **options, "algorithm": algorithm, "dataset": dataset, "seed": seed + k, "seeds": 1}
                )
    return cells


def cell_steps(values: dict[str, Any]) -> int:
    """The steps a cell's loop runs: its iterations, or a fine-tuning cell's online steps."""
    finetune = values.get("finetune")
    return int(finetune["online_steps"]) if finetune else int(values.get("steps", 1_000_000))


def finetune_cells(offline_dirs: list[Path], online_steps: int, out: Path) -> list[dict[str, Any]]:
    """One fine-tuning cell (``seeds = 1``) per finished offline run folder, written below ``out``
    (:func:`metaconstraint.finetune.finetune_values`)."""
    from metaconstraint.finetune import finetune_values

    cells = []
    for directory in offline_dirs:
        values, _ = finetune_values([directory], online_steps, out)
        cells.append({**values, "out": str(out)})
    return cells


def cell_name(values: dict[str, Any]) -> str:
    tag = f"-{values['tag']}" if values.get("tag") else ""
    return f"{values['algorithm']} {values['dataset']} seed{values['seed']}{tag}"


def dataset_id(name: str) -> str:
    """The Minari id of ``name``, or ``name`` itself when it does not resolve."""
    from metaconstraint.rl.data import DatasetError, resolve_dataset_id

    try:
        return resolve_dataset_id(name)
    except DatasetError:
        return name


def cell_directory(values: dict[str, Any]) -> Path | None:
    """The cell's run folder, or ``None`` when its dataset name does not resolve (the run will say why)."""
    from metaconstraint.rl.data import DatasetError, resolve_dataset_id
    from metaconstraint.runs import run_directory

    try:
        dataset_id = resolve_dataset_id(values["dataset"])
    except DatasetError:
        return None
    return run_directory(Path(values.get("out", "runs")), values["algorithm"], dataset_id, values["seed"], values.get("tag"))


def _pack_key(values: dict[str, Any]) -> tuple | None:
    """Cells with equal keys differ only in their seed, tag and the scalar fields their algorithm can
    vary between members; ``None`` for a cell that cannot be packed (unknown algorithm)."""
    from metaconstraint.config import ConfigError, algorithm_class

    try:
        fields = set(algorithm_class(str(values["algorithm"])).member_fields)
    except (ConfigError, KeyError):
        return None
    rest = {k: v for k, v in values.items() if k not in fields | {"seed", "tag"}}
    return json.dumps(rest, sort_keys=True, default=str), tuple(sorted(f for f in fields if f in values))


def pack_cells(cells: list[dict[str, Any]], indices: list[int], max_members: int | None = None) -> list[list[int]]:
    """Group the cells ``indices`` that differ only in seed and member-varying scalars (e.g. td3bc's
    ``alpha``): each group trains as one vectorised run (members = values x seeds), in order of first
    appearance, at most ``max_members`` cells each (default: the run limit)."""
    from metaconstraint.config import MAX_MEMBERS

    limit = max_members or MAX_MEMBERS
    groups: dict[Any, list[list[int]]] = {}
    order: list[list[int]] = []
    for index in indices:
        key = _pack_key(cells[index])
        chunks = groups.setdefault(key, []) if key is not None else None
        if chunks is None or not chunks or len(chunks[-1]) >= limit:
            chunk: list[int] = []
            order.append(chunk)
            if chunks is not None:
                chunks.append(chunk)
        else:
            chunk = chunks[-1]
        chunk.append(index)
    return order

