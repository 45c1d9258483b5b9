"""A run's progress reporter: what `RunContext.progress()` calls while the executor runs a task.

One reporter per run (so many runs in one process, on many threads, never share one), safe to call
from any thread of the task. It keeps the database out of a task's tight loop:

- the first report is written at once, later ones at most once per `min_interval` (monotonic
  time); a report that arrives sooner is buffered, and written when the interval has passed (a
  timer, started only while something is buffered) or with the run's finish, whichever is first:
  the last value always lands;
- every write is fenced on the run's lease token (`fenced.set_progress`): a run whose lease was
  taken over writes nothing, and stops trying;
- a failed write is logged and the value stays buffered for the next write or the finish;
- a run that never reports costs nothing: no thread, no statement;
- a report from an async task arrives on the event loop every async run of the process shares: a
  write from there (a slow or locked database) would freeze them all, so it is handed to the
  process's one progress writer thread (`writer`: core.run_threads with one thread); the rules
  above are the same, and the finish still carries the last value.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import Engine

from core import fenced
from core.clock import Clock
from core.domain import ClaimedRun
from core.logs import run_fields
from core.run_threads import RunThreads

logger = logging.getLogger(__name__)

PROGRESS_MIN_INTERVAL = 2.0
"""Seconds between two progress writes of one run (the last value is written with the finish)."""


class Cancellable(Protocol):
    """What a scheduled flush returns (threading.Timer is one)."""

    def cancel(self) -> None: ...


def start_timer(delay: float, callback: Callable[[], None]) -> Cancellable:
    timer = threading.Timer(delay, callback)
    timer.name = "progress-flush"
    timer.daemon = True
    timer.start()
    return timer


@dataclass(frozen=True)
class ProgressPolicy:
    """How often a run's progress reaches the database. Tests pass a fake `monotonic` and a
    `schedule` that records the flush instead of starting a timer."""

    min_interval: float = PROGRESS_MIN_INTERVAL
    monotonic: Callable[[], float] = field(default=time.monotonic, repr=False)
    schedule: Callable[[float, Callable[[], None]], Cancellable] = field(default=start_timer, repr=False)


Report = tuple[float, str]


class RunProgress:
    """The reporter bound to one run (call it with a checked fraction and message)."""

    def __init__(
        self, engine: Engine, clock: Clock, run: ClaimedRun, policy: ProgressPolicy,
        writer: RunThreads | None = None, on_loop: Callable[[], bool] | None = None,
    ) -> None:
        self._engine, self._clock, self._run, self._policy = engine, clock, run, policy
        self._writer = writer  # writes reports made on the tasks' event loop (`on_loop()` true there)
        self._on_loop = on_loop
        self._lock = threading.Lock()
        self._latest: Report | None = None  # the last value reported
        self._stored: Report | None = None  # the last value the database confirmed
        self._last_write: float | None = None  # monotonic time of the last write attempt
        self._writing = False
        self._timer: Cancellable | None = None
        self._closed = False
        self._lost = False

    def __call__(self, fraction: float, message: str) -> None:
        with self._lock:
            if self._closed:
                return
            self._latest = (fraction, message)
        self._write_if_due(off_loop=self._on_loop is not None and self._on_loop())

    def _write_if_due(self, *, off_loop: bool = False) -> None:
        with self._lock:
            if self._closed or self._lost or self._writing or self._latest is None or self._latest == self._stored:
                return
            wait = self._wait()
            if wait > 0:
                if self._timer is None:
                    self._timer = self._policy.schedule(wait, self._flush)
                return
            value, self._writing, self._last_write = self._latest, True, self._policy.monotonic()
        if off_loop and self._writer is not None:
            self._writer.submit(self._store, value)
        else:
            self._store(value)

    def _store(self, value: Report) -> None:
        stored = self._write(value)
        with self._lock:
            self._writing = False
            if stored:
                self._stored = value
            elif stored is False:
                self._lost = True
            pending = not self._closed and not self._lost and self._latest != self._stored and self._timer is None
            if pending:  # reported while we wrote: keep the promise that the last value lands
                self._timer = self._policy.schedule(max(self._wait(), 0.0), self._flush)

    def _wait(self) -> float:
        if self._last_write is None:
            return 0.0
        return self._policy.min_interval - (self._policy.monotonic() - self._last_write)

    def _flush(self) -> None:
        with self._lock:
            self._timer = None
        self._write_if_due()

    def _write(self, value: Report) -> bool | None:
        """True stored, False the lease is gone, None the write failed (retried later)."""
        run = self._run
        try:
            with self._engine.begin() as conn:
                held = fenced.set_progress(conn, user_id=run.user_id, token=run.token, fraction=value[0], message=value[1], now=self._clock.sql_now())
        except Exception:  # progress is best effort: the run goes on, the value stays buffered
            logger.warning("progress write failed user=%s token=%s", run.user_id, run.token, exc_info=True, extra=run_fields(run))
            return None
        if not held and not self._closed:  # after the finish released the lease, a late flush is moot
            logger.warning("progress refused, lease lost user=%s token=%s", run.user_id, run.token, extra=run_fields(run))
        return held

    def close(self) -> tuple[Report | None, Report | None]:
        """The run is over: no more writes. Answers (the last value reported, the same if the
        database does not have it yet, else None): the history keeps the first, the finish writes
        the second."""
        with self._lock:
            self._closed = True
            timer, self._timer = self._timer, None
            latest, stored = self._latest, self._stored
        if timer is not None:
            timer.cancel()
        return latest, (latest if latest != stored else None)
