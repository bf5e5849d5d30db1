"""Hyperparameter members: runs that differ only in a scalar config field, trained as one computation.

A run's members are its seeds (``--seeds``) times the values of scalar hyperparameters
(``--member-sweep alpha=0.3,1,2.5,10``): member ``(value, seed)`` is exactly the separate run with
that seed and that value, and writes the same run folder, ``seed<K>-<tag>`` (the tag naming its
values as a sweep's does, ``alpha=0.3``). Inside the update the values are one ``(M,)`` tensor
beside the stacked parameters (:meth:`~metaconstraint.algorithms.Algorithm.set_member_values`).

Only fields an algorithm reads as a per-member number can vary (its ``member_fields``): the fixed
constraint scale of td3bc, wpc and a2pr (``alpha``), iql (``beta``) and rebrac (``actor_bc_coef``),
and the learned scale's initial value of aspc (``alpha``) and aspc-iql (``beta``).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from metaconstraint.config import ConfigError
from metaconstraint.suggest import did_you_mean

TAG_CHARACTER = re.compile(r"[^A-Za-z0-9_.=+-]")


class MemberSweepError(ConfigError):
    """A member sweep that cannot run; the message says why."""


@dataclass(frozen=True)
class Member:
    """One member of a vectorised run: its seed, the config values it sets, its run folder tag."""

    seed: int
    values: dict[str, Any] = field(default_factory=dict)
    tag: str | None = None

    @property
    def name(self) -> str:
        """``seed<K>`` or ``seed<K>-<tag>``: its run folder's name."""
        return f"seed{self.seed}" + (f"-{self.tag}" if self.tag else "")


def value_text(value: Any) -> str:
    """A config value as it appears in a run folder tag (``0.3``, ``1e-05``, ``10``)."""
    if isinstance(value, float):
        text = repr(value)
    elif isinstance(value, (list, tuple)):
        text = ".".join(value_text(v) for v in value)
    else:
        text = str(value)
    return TAG_CHARACTER.sub("_", text)


def values_tag(values: dict[str, Any]) -> str | None:
    """``name=value+name=value`` for swept values (``None`` when nothing is swept)."""
    if not values:
        return None
    return "+".join(f"{name}={value_text(value)}" for name, value in values.items())


def join_tags(*tags: str | None) -> str | None:
    parts = [t for t in tags if t]
    return "+".join(parts) if parts else None


def _number(text: str) -> int | float:
    """``"1"`` -> 1, ``"0.3"`` -> 0.3 (as a TOML sweep would read them, so tags agree)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def parse_member_sweep(specs: list[str]) -> dict[str, list[int | float]]:
    """``["alpha=0.3,1,2.5,10"]`` -> ``{"alpha": [0.3, 1, 2.5, 10]}``."""
    sweep: dict[str, list[int | float]] = {}
    for spec in specs:
        name, sep, listed = spec.partition("=")
        name = name.strip()
        if not sep or not name or not listed.strip():
            raise MemberSweepError(f"--member-sweep {spec!r}: write FIELD=V1,V2,... (e.g. alpha=0.3,1,2.5,10).")
        if name in sweep:
            raise MemberSweepError(f"--member-sweep: {name} is given twice.")
        try:
            values = [_number(v.strip()) for v in listed.split(",")]
        except ValueError:
            raise MemberSweepError(f"--member-sweep {spec!r}: the values must be numbers.") from None
        if len({float(v) for v in values}) != len(values):
            raise MemberSweepError(f"--member-sweep {spec!r}: a value is listed twice.")
        sweep[name] = values
    return sweep


def check_member_fields(algorithm_cls: type, fields: list[str]) -> None:
    """A clear error for fields ``algorithm_cls`` cannot vary between members."""
    supported = tuple(getattr(algorithm_cls, "member_fields", ()))
    unsupported = [f for f in fields if f not in supported]
    if unsupported:
        can = f"it can vary {', '.join(supported)}" if supported else "it has no such field"
        raise MemberSweepError(
            f"{algorithm_cls.name} cannot train members that differ in {', '.join(unsupported)} as one computation "
            f"({can}); use `metaconstraint sweep` to run them as separate runs."
            + "".join(did_you_mean(field, supported) for field in unsupported)
        )


def expand_members(sweep: dict[str, list[Any]], seeds: list[int], tag: str | None = None) -> list[Member]:
    """Members ``values x seeds``, value-major (all seeds of the first value first); each tag is
    ``tag`` (the run's own, if any) joined with the member's values."""
    names = list(sweep)
    members = []
    for combination in itertools.product(*(sweep[n] for n in names)):
        values = dict(zip(names, combination))
        members += [Member(seed, values, join_tags(tag, values_tag(values))) for seed in seeds]
    return members


def member_records(members: list[Member]) -> list[dict[str, Any]]:
    """Members as plain data (checkpoint headers, grid jobs)."""
    return [{"seed": m.seed, "values": dict(m.values), "tag": m.tag} for m in members]


def members_from_records(records: list[dict[str, Any]]) -> list[Member]:
    return [Member(int(r["seed"]), dict(r.get("values") or {}), r.get("tag")) for r in records]


def member_config(config: Any, member: Member) -> Any:
    """``config`` (an algorithm's validated config) with ``member``'s values, validated again."""
    if not member.values:
        return config
    from pydantic import ValidationError

    from metaconstraint.config import format_validation_error

    try:
        return type(config)(**{**config.model_dump(), **member.values})
    except ValidationError as error:
        raise MemberSweepError(format_validation_error(error, f"member {member.name}")) from None


def member_configs(algorithm_cls: type, config: Any, members: list[Member]) -> tuple[list[Any], dict[str, list[Any]]]:
    """Each member's validated config, and ``{field: [member k's value]}`` of the fields that vary
    (what :meth:`~metaconstraint.algorithms.Algorithm.set_member_values` takes; empty for seeds alone)."""
    varied = sorted({name for m in members for name in m.values})
    check_member_fields(algorithm_cls, varied)
    configs = [member_config(config, m) for m in members]
    return configs, {name: [getattr(c, name) for c in configs] for name in varied}
