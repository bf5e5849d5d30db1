"""Stopping on SIGINT/SIGTERM between units of work, for the training loop and the grid's driver.

The first signal only sets :attr:`StopRequest.signal_number`; the loop reads it between iterations
(or jobs), saves what it must and stops. A second signal raises ``KeyboardInterrupt`` at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

__all__ = ["StopRequest", "stop_on_signals"]


class StopRequest:
    """``signal_number``: the first SIGINT/SIGTERM received, ``None`` until then."""

    signal_number: int | None = None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Handle SIGINT and SIGTERM as a :class:`StopRequest` inside the block, then restore the
    previous handlers. Outside the main thread (where Python cannot set handlers) the request
    never fires."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum, frame):
        if request.signal_number is not None:
            raise KeyboardInterrupt
        request.signal_number = signum

    previous = {number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
