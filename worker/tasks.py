"""The user's monitoring task: a callable named by MONITOR_TASK (`package.module:function`).

It is called as `task(user_id, context)` and its return value is ignored; raising marks the run
failed (the error text is stored, truncated) and the schedule still moves on.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from monitor_scheduler.exceptions import TaskImportError
from monitor_scheduler.settings import Settings

logger = logging.getLogger(__name__)


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
    return task


def demo_task(user_id: str, context: RunContext) -> None:
    """The built-in default: pretends to check the user's monitors and logs one line."""
    logger.info("demo task ran for user=%s slot=%s trigger=%s attempt=%s", user_id, context.slot, context.trigger, context.attempt)


def noop_task(user_id: str, context: RunContext) -> None:
    """Does nothing: for benchmarks and tests of the scheduling overhead."""
