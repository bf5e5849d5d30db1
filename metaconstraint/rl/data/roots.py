"""Where datasets live on this machine: ``$MINARI_DATASETS_PATH`` (Minari's default
``~/.minari/datasets`` when unset), then ``$METACONSTRAINT_HOME/datasets`` (default
``~/.cache/metaconstraint/datasets``), where the built-in sets are generated."""

from __future__ import annotations

import os
import pathlib

from metaconstraint.rl.data.names import VERSION_RE


def minari_root() -> pathlib.Path:
    configured = os.environ.get("MINARI_DATASETS_PATH")
    if configured:
        return pathlib.Path(os.path.abspath(os.path.expanduser(configured)))
    return pathlib.Path.home() / ".minari" / "datasets"


def cache_root() -> pathlib.Path:
    home = os.environ.get("METACONSTRAINT_HOME")
    base = pathlib.Path(os.path.abspath(os.path.expanduser(home))) if home else pathlib.Path.home() / ".cache" / "metaconstraint"
    return base / "datasets"


def dataset_roots() -> list[pathlib.Path]:
    """Roots searched for local datasets, in order: Minari's root, then the project's cache root."""
    roots: list[pathlib.Path] = []
    for root in (minari_root(), cache_root()):
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


def local_ids(root: pathlib.Path, max_depth: int = 6) -> list[str]:
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
                if VERSION_RE.match(child.name):
                    found.append(dataset_id)
            elif depth < max_depth:
                walk(child, depth + 1)

    if root.is_dir():
        walk(root, 1)
    return found


def local_dataset_ids() -> list[str]:
    return list(dict.fromkeys(i for root in dataset_roots() for i in local_ids(root)))
