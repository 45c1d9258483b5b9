"""The task protocol: what the executor calls for each run, and how MONITOR_TASK is loaded.

A task is `task(user_id, context)`; its return value is ignored; raising marks the run failed (the
error text is stored, truncated) and the schedule still moves on. The built-in tasks live in
`worker.tasks` and `worker.webhook`.

A task may be asynchronous (an `async def` function, or an object whose `__call__` is `async def`):
whatever it returns that is awaitable is run to completion on the process's one event loop
(`EventLoopThread`), so many runs of it in one process share that loop instead of a loop each.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import os
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from core.exceptions import TaskImportError
from core.settings import Settings


@dataclass(frozen=True)
class RunContext:
    slot: datetime
    trigger: str
    attempt: int


Task = Callable[[str, RunContext], object]


def load_task(path: str, settings: Settings | None = None) -> Task:
    """Import `package.module:function`; raise TaskImportError with the path on failure.

    An object with a `from_settings(settings)` factory (a class, say) is built with the settings,
    so a task that needs configuration gets it passed down instead of reading the environment.
    """
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
        task = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise TaskImportError(f"MONITOR_TASK {path!r} cannot be imported: {exc}") from exc
    factory = getattr(task, "from_settings", None)
    if factory is not None:
        if settings is None:
            raise TaskImportError(f"MONITOR_TASK {path!r} needs settings to be built")
        task = factory(settings)
    if not callable(task):
        raise TaskImportError(f"MONITOR_TASK {path!r} is not callable")
    return cast(Task, task)  # callable, checked above; its signature is the task author's promise


class EventLoopThread:
    """One asyncio event loop per process, on a daemon thread, started on first use and again after
    a fork (threads do not survive fork). `run` hands it an awaitable and waits for the outcome, so
    async runs from any number of caller threads execute concurrently on this one loop."""

    def __init__(self, name: str = "monitor-task-loop") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name=self._name, daemon=True).start()
            return self._loop

    def submit(self, awaitable: Awaitable[Any]) -> concurrent.futures.Future[Any]:
        """Start `awaitable` on the loop; the future's `cancel()` cancels it there."""
        return asyncio.run_coroutine_threadsafe(_as_coroutine(awaitable), self.loop())

    def run(self, awaitable: Awaitable[Any]) -> Any:
        """Run `awaitable` on the loop; block until it ends; return its result or raise its error."""
        return self.submit(awaitable).result()


async def _as_coroutine(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
