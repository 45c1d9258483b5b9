"""A long-running dispatcher: `tick` every period, for hosts without crontab.

The loop owns only timing and stopping: each pass starts one period after the previous pass
*started* (not ended), a pass that overruns makes the loop skip the starts it missed instead of
running them back to back, and a stop request (SIGTERM/SIGINT) is honoured between passes.

A pass that fails because the database or Redis is unavailable (restarting, unreachable) is
logged once per outage, at WARNING with its cause, and the passes go on; the first pass that
succeeds again says at INFO how long the outage lasted. Any other failure keeps its traceback.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

from sqlalchemy import exc as db_errors

from core.db import is_outage
from core.exceptions import InvalidInput, MonitorSchedulerError, QueueUnavailable

logger = logging.getLogger(__name__)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """'10s', '500ms', '1m', '2h' or plain seconds -> seconds (> 0)."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise InvalidInput(f"duration must look like 10s, 500ms, 1m or 2h and be positive, got {text!r}")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


class DispatchLoop:
    def __init__(
        self,
        tick: Callable[[], object],
        every: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        stop: threading.Event | None = None,
    ) -> None:
        self.tick = tick
        self.every = every
        self.monotonic = monotonic
        self.stop = stop or threading.Event()
        self.passes = 0
        self.failures = 0
        self.skipped_starts = 0
        self._outage_failures = 0  # failed passes in the current outage
        self._outage_began = 0.0

    def run(self, max_passes: int | None = None) -> None:
        next_start = self.monotonic()
        while not self.stop.is_set():
            self._one_pass()
            if max_passes is not None and self.passes >= max_passes:
                return
            next_start = self._next_start(next_start)
            self.stop.wait(max(0.0, next_start - self.monotonic()))

    def _one_pass(self) -> None:
        self.passes += 1
        try:
            self.tick()
        except Exception as exc:
            # A failed pass already released the leases it could not hand on; the next one retries.
            self.failures += 1
            if isinstance(exc, QueueUnavailable) or is_outage(exc):
                self._note_outage(exc)
            elif isinstance(exc, MonitorSchedulerError):
                logger.error("dispatch pass failed: %s", exc)
            else:
                logger.exception("dispatch pass crashed")
            return
        if self._outage_failures:
            logger.info(
                "dispatch passes succeed again after %s failed in %.0fs", self._outage_failures, self.monotonic() - self._outage_began
            )
            self._outage_failures = 0

    def _note_outage(self, exc: Exception) -> None:
        self._outage_failures += 1
        if self._outage_failures == 1:
            self._outage_began = self.monotonic()
            logger.warning("dispatch pass failed, retrying every %ss (logged once until a pass succeeds): %s", self.every, _cause(exc))
        else:
            logger.debug("dispatch pass failed again (%s in this outage): %s", self._outage_failures, _cause(exc))

    def _next_start(self, previous_start: float) -> float:
        now = self.monotonic()
        next_start = previous_start + self.every
        if next_start <= now:
            missed = int((now - next_start) // self.every) + 1
            self.skipped_starts += missed
            logger.warning("dispatch pass overran its period of %ss: skipping %s start(s)", self.every, missed)
            next_start += missed * self.every
        return next_start


def _cause(exc: Exception) -> str:
    """One line: the driver's own error for a database error (without SQL and parameters)."""
    if isinstance(exc, db_errors.DBAPIError) and exc.orig is not None:
        return f"database unavailable: {type(exc.orig).__name__}: {exc.orig}"
    return str(exc)
