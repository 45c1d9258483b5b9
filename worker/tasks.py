"""Built-in tasks (MONITOR_TASK=worker.tasks:demo_task is the default). The protocol they follow is
core.tasks: `task(user_id, context)`, raise to fail the run."""

from __future__ import annotations

import logging

from core.tasks import PermanentError, RunContext

__all__ = ["PermanentError", "RunContext", "demo_task", "noop_task"]

logger = logging.getLogger(__name__)


def demo_task(user_id: str, context: RunContext) -> None:
    """The built-in default: pretends to check the user's monitors and logs one line."""
    logger.info("demo task ran for user=%s slot=%s trigger=%s attempt=%s", user_id, context.slot, context.trigger, context.attempt)


def noop_task(user_id: str, context: RunContext) -> None:
    """Does nothing: for benchmarks and tests of the scheduling overhead."""
