"""MONITOR_TASK for the browser tests: users whose id starts with "failing" fail, like a monitor
whose endpoint is down; everyone else succeeds."""

from __future__ import annotations

from core.tasks import RunContext


def picky_task(user_id: str, context: RunContext) -> None:
    if user_id.startswith("failing"):
        raise RuntimeError("monitored endpoint answered HTTP 500")


def exiting_task(user_id: str, context: RunContext) -> None:
    """A task that calls sys.exit() or is interrupted by itself: must fail its run, not the server."""
    if user_id.startswith("exit"):
        raise SystemExit(3)
    if user_id.startswith("interrupt"):
        raise KeyboardInterrupt
