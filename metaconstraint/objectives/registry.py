"""Inner objectives by name: the built-ins, those registered with :func:`inner_objective`, and any
``module:attribute`` import path.

An objective is given as a *factory*, a class or function called as ``factory(actor=..., critic=...)``
with the backbone's networks, returning an object with ``scale_name``, ``inner`` and ``at_updated``
(:class:`~metaconstraint.objectives.base.PolicyObjective`). Everything else it reads comes in
``frozen`` (the backbone documents what it puts there).

An objective that needs more than an actor and a critic (a value net, a VAE, a critic trained with a
penalty of its own) names the *backbone* that provides them: ``wpc``, ``a2pr`` and ``rebrac`` are
built by their own algorithm's backbone, with its networks and settings as keyword arguments, and
``awr`` by IQL's. An objective without a backbone (``td3bc``, and yours unless you name one) is
built from ``actor`` and ``critic`` alone, on whichever backbone runs it.
"""

from __future__ import annotations

from typing import Callable

from metaconstraint.plugins import PluginError, import_object, is_import_path
from metaconstraint.suggest import unknown_name

_REGISTRY: dict[str, Callable] = {}
_BACKBONES: dict[str, str] = {}  # objective name -> the algorithm whose backbone builds it


class ObjectiveError(ValueError):
    """An inner-objective specification that cannot be resolved (message says why)."""


def inner_objective(name: str, backbone: str | None = None) -> Callable:
    """Register a factory ``(actor=..., critic=...) -> PolicyObjective`` under ``name``; ``backbone``:
    the algorithm whose networks it needs (its factory then takes them all as keywords), or ``None``
    for an objective of an actor and a critic alone."""

    def register(factory: Callable) -> Callable:
        _REGISTRY[name] = factory
        if backbone is None:
            _BACKBONES.pop(name, None)
        else:
            _BACKBONES[name] = backbone
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


def objective_backbone(spec: str) -> str | None:
    """The algorithm whose backbone the objective ``spec`` needs, or ``None`` (any: actor and critic)."""
    registered_objectives()
    return _BACKBONES.get(spec.strip())


def build_objective(spec: str, backbone: str, actor, critic, **extra):
    """The objective ``spec`` built on the backbone named ``backbone`` from its networks, checked to
    offer the objective interface. ``extra``: the backbone's other networks and settings, passed to
    the objectives registered for it; an objective without a backbone gets ``actor`` and ``critic``."""
    factory = resolve_objective(spec)
    needed = objective_backbone(spec)
    if needed is not None and needed != backbone:
        raise ObjectiveError(
            f"inner objective '{spec}' needs the {needed} backbone (its networks and critic), not {backbone}'s: "
            f"run it as `aspc --objective {spec}`, which learns its scale on the {needed} backbone."
        )
    networks = {"actor": actor, "critic": critic, **(extra if needed is not None else {})}
    try:
        objective = factory(**networks)
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
