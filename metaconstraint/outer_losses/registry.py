"""Outer losses by name: the built-ins, those registered with :func:`outer_loss`, and any
``module:function`` import path, each optionally followed by ``=WEIGHT``."""

from __future__ import annotations

import dataclasses
from typing import Callable

from metaconstraint.engine import OuterLoss, OuterLossError  # noqa: F401  (OuterLossError: re-exported)
from metaconstraint.plugins import PluginError, import_object
from metaconstraint.suggest import unknown_name

_REGISTRY: dict[str, OuterLoss] = {}


def outer_loss(name: str, init_state: dict[str, float] | None = None, next_state: Callable | None = None) -> Callable:
    """Register ``fn(ctx) -> scalar tensor`` as an outer loss ``name``.

    A loss that keeps state gives ``init_state`` (its state at the start, e.g. ``{"ema": 0.0}``) and
    ``next_state(ctx) -> new state`` (the same keys), both reading the current state as ``ctx.state``.
    Also usable on a function reached by import path: the registration only attaches both there.
    """

    def register(fn: Callable) -> Callable:
        fn.init_state, fn.next_state = init_state, next_state
        _REGISTRY[name] = OuterLoss(name, fn, 1.0, init_state, next_state)
        return fn

    return register


def registered_outer_losses() -> list[str]:
    import metaconstraint.outer_losses.builtin  # noqa: F401  (registers the built-ins)
    import metaconstraint.outer_losses.direction  # noqa: F401  (gain-rel)

    return sorted(_REGISTRY)


def _import_function(path: str) -> Callable:
    try:
        fn = import_object(path, "outer loss")
    except PluginError as error:
        raise OuterLossError(str(error)) from None
    if not callable(fn):
        raise OuterLossError(f"outer loss '{path}' is not callable.")
    return fn


def resolve_outer_loss(spec: str) -> OuterLoss:
    """``"l2"``, ``"l3=0.5"``, ``"mypkg.losses:kl=2"`` -> :class:`OuterLoss`."""
    names = registered_outer_losses()
    text = spec.strip()
    weight = 1.0
    if "=" in text:
        text, _, weight_text = text.rpartition("=")
        try:
            weight = float(weight_text)
        except ValueError:
            raise OuterLossError(f"outer loss '{spec}': weight '{weight_text}' is not a number.") from None
    if ":" in text:
        fn = _import_function(text)
        return OuterLoss(text, fn, weight, getattr(fn, "init_state", None), getattr(fn, "next_state", None))
    if text not in _REGISTRY:
        raise OuterLossError(
            unknown_name("outer loss", text, names, advice="A function of your own is given as 'module:function'.")
        )
    base = _REGISTRY[text]
    return dataclasses.replace(base, weight=weight)


def resolve_outer_losses(specs: list[str]) -> list[OuterLoss]:
    losses = [resolve_outer_loss(s) for s in specs]
    names = [loss.name for loss in losses]
    if len(set(names)) != len(names):
        raise OuterLossError(f"an outer loss is listed twice: {names}")
    if not losses:
        raise OuterLossError("the list of outer losses is empty.")
    return losses
