"""The one asyncio event loop per process on which async tasks run (see core.tasks: a task may be
`async def`), and the watch that notices a task blocking it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
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
    that no longer runs. They come back to the caller wrapped in `TaskExited`.

    A blocking call inside `async def` stops every run on the loop. With `stall_warning` seconds
    (> 0), a watch thread pings the loop (a callback it must run) every half of that; a ping not
    answered within `stall_warning` logs a WARNING naming the run whose code holds the loop (each
    awaitable is submitted with a `label`: the run's user id and lease token), and another once
    the loop answers again, with how long it was blocked."""

    def __init__(self, name: str = "monitor-task-loop", *, stall_warning: float = 0.0) -> None:
        self._name = name
        self._stall_warning = stall_warning
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
        if self._stall_warning > 0:
            threading.Thread(target=self._watch, args=(loop, thread), name=f"{self._name}-watch", daemon=True).start()

    def in_loop_thread(self) -> bool:
        """True on the loop's own thread (code of an async task)."""
        thread = self._thread
        return thread is not None and threading.current_thread() is thread

    def submit(self, awaitable: Awaitable[Any], *, label: str = "") -> concurrent.futures.Future[Any]:
        """Start `awaitable` on the loop (`label` names it in the stall warning); the future's
        `cancel()` cancels it there."""
        return asyncio.run_coroutine_threadsafe(_as_coroutine(awaitable, label), self.loop())

    def run(self, awaitable: Awaitable[Any]) -> Any:
        """Run `awaitable` on the loop; block until it ends; return its result or raise its error
        (a SystemExit or KeyboardInterrupt as `TaskExited`)."""
        return self.submit(awaitable).result()

    def _watch(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        """Measure the loop's lateness while it lives (see the class)."""
        limit = self._stall_warning
        answered = threading.Event()
        while thread.is_alive() and not loop.is_closed():
            answered.clear()
            sent = time.monotonic()
            try:
                loop.call_soon_threadsafe(answered.set)
            except RuntimeError:  # closed meanwhile
                return
            if not answered.wait(limit):
                blocker = _running_label(loop)
                logger.warning(
                    "event loop blocked for more than %.1f s by %s: a blocking call inside `async def` stops every async run "
                    "of this process (await, or use asyncio.to_thread)", limit, blocker,
                )
                while not answered.wait(limit) and thread.is_alive():
                    pass
                logger.warning("event loop answered again after %.1f s (blocked by %s)", time.monotonic() - sent, blocker)
            time.sleep(limit / 2)


def _running_label(loop: asyncio.AbstractEventLoop) -> str:
    """The label of the task whose code runs on `loop` now (read from another thread: a lookup in
    asyncio's table of current tasks, no iteration)."""
    task = asyncio.current_task(loop)
    if task is None:
        return "no run (a callback, or the process short of CPU)"
    name = task.get_name()
    return name if name.startswith("run ") else f"task {name}"


async def _as_coroutine(awaitable: Awaitable[Any], label: str = "") -> Any:
    if label:
        task = asyncio.current_task()
        if task is not None:
            task.set_name(f"run {label}")
    try:
        return await awaitable
    except (SystemExit, KeyboardInterrupt) as exc:  # would escape run_forever and end the loop
        raise TaskExited(exc) from exc
