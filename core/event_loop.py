"""The one asyncio event loop per process on which async tasks run (see core.tasks: a task may be
`async def`), and the watch that notices a task blocking it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Awaitable
from typing import Any

from core.exceptions import TaskExited

logger = logging.getLogger(__name__)


class EventLoopThread:
    """One asyncio event loop per process, on a daemon thread, started on first use, and again after
    a fork (threads do not survive fork) or when the loop no longer runs (its thread ended, it was
    stopped or closed). `run` hands it an awaitable and waits for the outcome, so async runs from
    any number of caller threads execute concurrently on this one loop.

    A task's SystemExit or KeyboardInterrupt never reaches the loop: asyncio lets those two escape
    `run_forever`, which would end the loop's thread and leave every later run waiting for a loop
    that no longer runs. They come back to the caller wrapped in `TaskExited`."""

    def __init__(self, name: str = "monitor-task-loop") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._start()
            elif not self._runs():
                logger.warning("the tasks' event loop no longer runs; starting a new one")
                self._start()
            assert self._loop is not None
            return self._loop

    def _runs(self) -> bool:
        loop, thread = self._loop, self._thread
        return loop is not None and thread is not None and thread.is_alive() and loop.is_running() and not loop.is_closed()

    def _start(self) -> None:
        self._pid = os.getpid()
        loop = asyncio.new_event_loop()
        running = threading.Event()
        loop.call_soon(running.set)
        thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
        thread.start()
        running.wait()  # once per process: `_runs` may then trust loop.is_running()
        self._loop, self._thread = loop, thread

    def submit(self, awaitable: Awaitable[Any]) -> concurrent.futures.Future[Any]:
        """Start `awaitable` on the loop; the future's `cancel()` cancels it there."""
        return asyncio.run_coroutine_threadsafe(_as_coroutine(awaitable), self.loop())

    def run(self, awaitable: Awaitable[Any]) -> Any:
        """Run `awaitable` on the loop; block until it ends; return its result or raise its error
        (a SystemExit or KeyboardInterrupt as `TaskExited`)."""
        return self.submit(awaitable).result()


async def _as_coroutine(awaitable: Awaitable[Any]) -> Any:
    try:
        return await awaitable
    except (SystemExit, KeyboardInterrupt) as exc:  # would escape run_forever and end the loop
        raise TaskExited(exc) from exc
