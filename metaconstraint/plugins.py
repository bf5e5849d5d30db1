"""User code named by import path: ``"package.module:attribute"``.

Outer losses, inner objectives and algorithms written outside the package are given on the command
line or in a config file by such a path. The module is imported from ``sys.path`` and, failing that,
from the current directory (so a ``losses.py`` beside the config file works without installing it).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any


class PluginError(ValueError):
    """An import path that cannot be resolved (the message says why)."""


def is_import_path(spec: str) -> bool:
    return ":" in spec


def _import_module(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        cwd = os.getcwd()
        missing_top = error.name is not None and module_name.split(".")[0] == error.name.split(".")[0]
        if not missing_top or cwd in sys.path or "" in sys.path:
            raise
        sys.path.append(cwd)
        return importlib.import_module(module_name)


def import_object(path: str, what: str) -> Any:
    """The object at ``"module:attribute"`` (``attribute`` may be dotted); ``what`` names it in errors."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise PluginError(f"{what} '{path}': an import path is 'module:attribute', e.g. 'mylosses:action_change'.")
    try:
        target = _import_module(module_name)
    except Exception as error:  # noqa: BLE001  (a user module that fails to import: say which and why)
        raise PluginError(f"{what} '{path}': cannot import module '{module_name}' ({type(error).__name__}: {error}).") from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise PluginError(f"{what} '{path}': module '{module_name}' has no attribute '{attribute}'.") from None
    return target
