""""Did you mean": one message for a name that no registry knows.

Every lookup by name (algorithms, inner objectives, outer losses, datasets, presets, trackers,
config keys, member fields, environments, export formats, ...) says an unknown name the same way, through
:func:`unknown_name`::

    unknown algorithm 'aspz'. Did you mean aspc? Known algorithm names: aspc, aspc-iql, iql, td3bc.

Each registry raises its own error type (the one its callers catch) with this message.
"""

from __future__ import annotations

import difflib
from typing import Iterable

CUTOFF = 0.6  # difflib's similarity ratio a suggestion needs (difflib's own default)


def close_matches(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` of ``candidates`` that look like ``name``, closest first, ignoring case."""
    by_lowered = {candidate.lower(): candidate for candidate in candidates}
    matches = difflib.get_close_matches(str(name).lower(), list(by_lowered), n=n, cutoff=CUTOFF)
    return [by_lowered[match] for match in matches]


def did_you_mean(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """``" Did you mean A, B?"`` for the candidates close to ``name``, or ``""``."""
    close = close_matches(name, candidates, n)
    return f" Did you mean {', '.join(close)}?" if close else ""


def unknown_name(
    kind: str,
    name: str,
    candidates: Iterable[str],
    *,
    why: str | None = None,
    list_known: bool = True,
    advice: str | None = None,
    n: int = 3,
) -> str:
    """``unknown KIND 'NAME'[: WHY]. [Did you mean A, B? ][Known KIND names: ... ][ADVICE]``.

    ``candidates``: every name the registry knows (suggestions come from them, and they are listed
    unless ``list_known`` is false: a list too long to read, such as every dataset id).
    """
    candidates = list(dict.fromkeys(candidates))
    text = f"unknown {kind} '{name}'" + (f": {why}" if why else "") + "." + did_you_mean(name, candidates, n)
    if list_known and candidates:
        text += f" Known {kind} names: {', '.join(sorted(candidates))}."
    if advice:
        text += f" {advice}"
    return text
