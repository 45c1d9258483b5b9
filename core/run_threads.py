"""Reusable daemon threads that run work items from one queue.

A thread is started only when none is idle, so a process has as many threads as it ever ran
items at once (plus those left behind by items that never returned: a timed-out sync task keeps
its thread), and none per item: starting a thread per run cost ~16% of a short run
(scripts/bench/profile_sync_path.py, docs/performance.md). `limit` caps the threads (a single
writer: `limit=1`; items then wait their turn). Daemon threads: a process that stops does not wait
for them. After a fork (RQ's fork-per-job worker) the parent's threads are gone; the pool starts
afresh.

Used by the executor (sync mode runs each task on one of these so that the pass can time it out),
the progress writer (core.progress) and the threaded worker (worker.threaded).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RunThreads:
    def __init__(self, name: str, *, limit: int | None = None) -> None:
        self._name = name
        self._limit = limit
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._work: queue.SimpleQueue[tuple[Callable[[Any], object], Any]] = queue.SimpleQueue()
        self._idle = 0
        self._pid = os.getpid()
        self.started = 0

    def submit(self, fn: Callable[[T], object], item: T) -> None:
        """Run `fn(item)` on an idle thread, or on a new one when none is idle (and the limit allows)."""
        with self._lock:
            if self._pid != os.getpid():
                self._reset()
            if self._idle:
                self._idle -= 1
            elif self._limit is None or self.started < self._limit:
                self.started += 1
                threading.Thread(target=self._loop, args=(self._work,), name=f"{self._name}-{self.started}", daemon=True).start()
            self._work.put((fn, item))

    def _loop(self, work: queue.SimpleQueue[tuple[Callable[[Any], object], Any]]) -> None:
        while True:
            fn, item = work.get()
            try:
                fn(item)
            except BaseException:  # a thread outlives any one item; the item's own handlers recorded it
                logger.exception("%s: unhandled error in %r", threading.current_thread().name, item)
            with self._lock:
                if work is self._work:
                    self._idle += 1
