"""Was this process really asked to stop?

A task may raise `SystemExit` or `KeyboardInterrupt` itself (a stray `sys.exit()` in a library);
that ends its run as failed, never the process. The same exceptions raised because an operator
pressed Ctrl-C or a supervisor sent SIGTERM are a real shutdown request, which the executor
re-raises after recording the run. Entry points tell the two apart by noting real signals here:
the command line wraps the signal handlers it installs, the RQ worker classes note RQ's own stop
requests (worker.pool).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

_requested = threading.Event()

Handler = Callable[[int, FrameType | None], Any]


def request() -> None:
    """Note that the process was asked to stop (called from signal handlers)."""
    _requested.set()


def requested() -> bool:
    return _requested.is_set()


def forget() -> None:
    """Clear the note (tests, or a process that declined to stop)."""
    _requested.clear()


def noting(handler: Handler) -> Handler:
    """Wrap a signal handler so the signal is noted before the handler runs."""

    def note_then_handle(signum: int, frame: FrameType | None) -> Any:
        request()
        return handler(signum, frame)

    return note_then_handle


def note_default_interrupt() -> None:
    """Ctrl-C with Python's default behaviour (KeyboardInterrupt), noted as a real request."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, noting(signal.default_int_handler))
