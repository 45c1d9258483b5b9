"""MONITOR_TASK for the browser tests: users whose id starts with "failing" fail, like a monitor
whose endpoint is down; everyone else succeeds."""

from __future__ import annotations

import os
import time
from pathlib import Path

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


STEPS = ((0.25, "Checking endpoint 1 of 4"), (0.75, "Checking endpoint 3 of 4 <b>api</b>"))


def stepping_task(user_id: str, context: RunContext) -> None:
    """A slow run the browser test paces: it waits for the file `go-<n>` in MONITOR_TEST_DIR (up to
    60 s each) before reporting step n, and for `go-<len(STEPS)>` before it returns."""
    directory = Path(os.environ["MONITOR_TEST_DIR"])
    for n in range(len(STEPS) + 1):
        deadline = time.monotonic() + 60
        while not (directory / f"go-{n}").exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"step {n} never released")
            time.sleep(0.05)
        if n < len(STEPS):
            context.progress(*STEPS[n])
