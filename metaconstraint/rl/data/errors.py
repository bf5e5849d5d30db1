"""The data layer's errors, and what a read failure advises."""

from __future__ import annotations


class DatasetError(Exception):
    """A dataset cannot be used; the message says which one, why, and what to do."""


class UnknownDatasetError(DatasetError):
    """The name is neither a known short name, a well-formed Minari id, nor a local dataset."""


class DatasetUnavailableError(DatasetError):
    """The dataset is not in any local root and cannot be downloaded."""


CORRUPT_ADVICE = "Delete the dataset folder and download or collect it again."
READ_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError)


def h5_reason(error: BaseException) -> str:
    """The first line of an HDF5 error (h5py's messages run over several)."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
