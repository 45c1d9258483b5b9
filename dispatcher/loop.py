"""A long-running dispatcher: `tick` every period, for hosts without crontab.

The loop owns only timing and stopping: each pass starts one period after the previous pass
*started* (not ended), a pass that overruns makes the loop skip the starts it missed instead of
running them back to back, and a stop request (SIGTERM/SIGINT) is honoured between passes.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

from core.exceptions import InvalidInput, MonitorSchedulerError

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
        except MonitorSchedulerError as exc:
            # A failed pass (Redis down, say) already released its leases; the next one retries.
            self.failures += 1
            logger.error("dispatch pass failed: %s", exc)
        except Exception:
            self.failures += 1
            logger.exception("dispatch pass crashed")

    def _next_start(self, previous_start: float) -> float:
        now = self.monotonic()
        next_start = previous_start + self.every
        if next_start <= now:
            missed = int((now - next_start) // self.every) + 1
            self.skipped_starts += missed
            logger.warning("dispatch pass overran its period of %ss: skipping %s start(s)", self.every, missed)
            next_start += missed * self.every
        return next_start
