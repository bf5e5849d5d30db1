"""``torch.compile`` with the eager function kept as the fallback, and a clock of compile time."""

from __future__ import annotations

import threading
import time
import warnings
from typing import Any, Callable

import torch

from metaconstraint.engine.gemm import compile_options

# What a failed compilation raises (e.g. no C++ compiler for inductor's CPU kernels): the graph has
# not run yet, so the inputs are untouched and the eager function can take the same call.
COMPILE_ERRORS = (torch._dynamo.exc.BackendCompilerFailed, torch._inductor.exc.InductorError)


class CompileClock:
    """Seconds this process has spent compiling, from torch.compile's own start and end callbacks
    (Dynamo tracing, AOT autograd and Inductor code generation; not running the compiled graphs).
    ``seconds()`` is cumulative: a caller takes differences."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = 0.0
        self._started: float | None = None

    def _start(self, args: Any) -> None:
        with self._lock:
            self._started = time.perf_counter()

    def _end(self, args: Any) -> None:
        with self._lock:
            if self._started is not None:
                self._total += time.perf_counter() - self._started
                self._started = None

    def install(self) -> None:
        """Register the callbacks (again: ``torch._dynamo.reset()`` clears them)."""
        handler = torch._dynamo.callback.callback_handler
        if self._start not in handler.start_callbacks:
            handler.register_start_callback(self._start)
        if self._end not in handler.end_callbacks:
            handler.register_end_callback(self._end)

    def seconds(self) -> float:
        """Compile seconds so far, a compilation under way included."""
        with self._lock:
            running = time.perf_counter() - self._started if self._started is not None else 0.0
            return self._total + running


COMPILE_CLOCK = CompileClock()


def compile_seconds() -> float:
    """Cumulative seconds this process has spent compiling (see :class:`CompileClock`)."""
    COMPILE_CLOCK.install()
    return COMPILE_CLOCK.seconds()


def compiled_or_eager(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compile(fn)`` (``dynamic=None``: static shapes, integers that change between calls become
    symbolic after one recompile; matrix products on the process's GEMM kernel, see
    :func:`metaconstraint.engine.gemm.compile_options`); if compiling fails, a warning and ``fn`` from then on."""
    COMPILE_CLOCK.install()
    current = {"fn": torch.compile(fn, options=compile_options() or None)}

    def call(*args: Any) -> Any:
        COMPILE_CLOCK.install()
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
