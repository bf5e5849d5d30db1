"""``torch.compile`` with the eager function kept as the fallback."""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch

from metaconstraint.engine.gemm import compile_options

# What a failed compilation raises (e.g. no C++ compiler for inductor's CPU kernels): the graph has
# not run yet, so the inputs are untouched and the eager function can take the same call.
COMPILE_ERRORS = (torch._dynamo.exc.BackendCompilerFailed, torch._inductor.exc.InductorError)


def compiled_or_eager(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compile(fn)`` (``dynamic=None``: static shapes, integers that change between calls become
    symbolic after one recompile; matrix products on the process's GEMM kernel, see
    :func:`metaconstraint.engine.gemm.compile_options`); if compiling fails, a warning and ``fn`` from then on."""
    current = {"fn": torch.compile(fn, options=compile_options() or None)}

    def call(*args: Any) -> Any:
        try:
            return current["fn"](*args)
        except COMPILE_ERRORS as error:
            if current["fn"] is fn:
                raise
            cause = getattr(error, "inner_exception", error)
            warnings.warn(f"torch.compile failed ({type(cause).__name__}: {str(cause)[:200]}); running eagerly.", stacklevel=2)
            current["fn"] = fn
            return fn(*args)

    return call
