"""Inner objectives by name: the built-ins, those registered with :func:`inner_objective`, and any
``module:attribute`` import path.

An objective is given as a *factory*, a class or function called as ``factory(actor=..., critic=...)``
with the backbone's networks, returning an object with ``scale_name``, ``inner`` and ``at_updated``
(:class:`~metaconstraint.objectives.base.PolicyObjective`). Everything else it reads comes in
``frozen`` (the backbone documents what it puts there).
"""

from __future__ import annotations

from typing import Callable

from metaconstraint.plugins import PluginError, import_object, is_import_path
from metaconstraint.suggest import unknown_name

_REGISTRY: dict[str, Callable] = {}


class ObjectiveError(ValueError):
    """An inner-objective specification that cannot be resolved (message says why)."""


def inner_objective(name: str) -> Callable:
    """Register a factory ``(actor=..., critic=...) -> PolicyObjective`` under ``name``."""

    def register(factory: Callable) -> Callable:
        _REGISTRY[name] = factory
        return factory

    return register


def registered_objectives() -> list[str]:
    import metaconstraint.objectives  # noqa: F401  (registers the built-ins)

    return sorted(_REGISTRY)


def resolve_objective(spec: str) -> Callable:
    """``"td3bc"``, ``"awr"`` or ``"mypkg.objectives:MyObjective"`` -> the factory."""
    names = registered_objectives()
    text = spec.strip()
    if is_import_path(text):
        try:
            factory = import_object(text, "inner objective")
        except PluginError as error:
            raise ObjectiveError(str(error)) from None
        if not callable(factory):
            raise ObjectiveError(f"inner objective '{text}' is not a class or function.")
        return factory
    if text not in _REGISTRY:
        raise ObjectiveError(
            unknown_name("inner objective", text, names, advice="One of your own is given as 'module:ClassOrFunction'.")
        )
    return _REGISTRY[text]


def build_objective(spec: str, **networks):
    """``resolve_objective(spec)(**networks)``, checked to offer the objective interface."""
    try:
        objective = resolve_objective(spec)(**networks)
    except ObjectiveError:
        raise
    except (TypeError, ValueError) as error:
        raise ObjectiveError(
            f"inner objective '{spec}' cannot be built from this algorithm's networks "
            f"({', '.join(networks)}): {error}"
        ) from None
    missing = [name for name in ("scale_name", "inner", "at_updated") if not hasattr(objective, name)]
    if missing:
        raise ObjectiveError(
            f"inner objective '{spec}' built an object without {', '.join(missing)}: an objective has a "
            "scale_name (its meta-parameter) and the methods inner(params, meta, batch, frozen) and at_updated(ctx)."
        )
    return objective
