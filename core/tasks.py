"""The task protocol: what the executor calls for each run, and how MONITOR_TASK is loaded.

A task is `task(user_id, context)`; its return value is ignored; raising marks the run failed (the
error text is stored, truncated) and the schedule still moves on. The built-in tasks live in
`worker.tasks` and `worker.webhook`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import cast

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
