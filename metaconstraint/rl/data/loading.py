"""Opening a dataset: a local folder checked before Minari reads it, else a built-in set generated
or a Minari download; ``a+b`` as a :class:`CombinedDataset`."""

from __future__ import annotations

import dataclasses
import json
import pathlib

from metaconstraint.rl.data.errors import CORRUPT_ADVICE, READ_ERRORS, DatasetError, h5_reason
from metaconstraint.rl.data.names import builtin_ids
from metaconstraint.rl.data.network import offline_reason, unavailable_error
from metaconstraint.rl.data.resolve import resolve_dataset_id
from metaconstraint.rl.data.roots import cache_root, find_local_dataset, minari_root


def _check_hdf5(file: pathlib.Path, metadata: dict) -> None:
    """Open ``file`` once and check it holds the episodes its metadata promises."""
    import h5py

    advice = CORRUPT_ADVICE
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
    except READ_ERRORS as error:
        raise DatasetError(
            f"The dataset file {file} cannot be read as HDF5 ({h5_reason(error)}): it is truncated or "
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
    if folder is None and dataset_id in builtin_ids():
        from metaconstraint.rl.builtin import generate_builtin

        folder = generate_builtin(dataset_id, cache_root())
    if folder is None:
        if not download:
            raise unavailable_error(dataset_id, "download=False was given")
        reason = offline_reason()
        if reason is not None:
            raise unavailable_error(dataset_id, reason)
        try:
            minari.download_dataset(dataset_id)
        except Exception as error:  # network errors, unknown remote id, incompatible version
            raise unavailable_error(dataset_id, f"the download through minari failed ({error})") from None
        folder = find_local_dataset(dataset_id)
        if folder is None:
            leftover = minari_root() / dataset_id
            extra = f" (a folder {leftover} without data/ blocks it; delete it and retry)" if leftover.exists() else ""
            raise unavailable_error(dataset_id, f"minari's download did not leave it in {minari_root()}{extra}")
    return _open_local(dataset_id, folder)


def generate_missing_builtin(name: str, console=None) -> list[str]:
    """Generate every built-in part of ``name`` that no root has yet (progress on ``console``); return
    their ids. The CLI calls this before its own status display, so the generation shows its bar."""
    generated = []
    for dataset_id in resolve_dataset_id(name).split("+"):
        if dataset_id in builtin_ids() and find_local_dataset(dataset_id) is None:
            from metaconstraint.rl.builtin import generate_builtin

            generate_builtin(dataset_id, cache_root(), console=console)
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
        how = "local" if before is not None else ("generated" if dataset_id in builtin_ids() else "downloaded")
        rows.append((dataset_id, pathlib.Path(dataset.storage.data_path).parent, how))
    return rows


def as_dataset(dataset):
    return load_dataset(dataset) if isinstance(dataset, str) else dataset
