"""Tasks used by integration tests through MONITOR_TASK (they run inside real worker processes).

They coordinate with the test through files in MONITOR_TEST_DIR: `started-<user>` is written when
a run starts, and a blocking task waits for `release-<user>` before it returns.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from core.tasks import RunContext


def _dir() -> Path:
    return Path(os.environ["MONITOR_TEST_DIR"])


def _safe(user_id: str) -> str:
    return user_id.encode().hex()


def started_marker(directory: Path, user_id: str) -> Path:
    return directory / f"started-{_safe(user_id)}"


def release_marker(directory: Path, user_id: str) -> Path:
    return directory / f"release-{_safe(user_id)}"


def recording_task(user_id: str, context: RunContext) -> None:
    """Appends `user_id slot attempt pid` to runs.log: the ground truth of what ran."""
    with open(_dir() / "runs.log", "a") as log:
        log.write(f"{user_id} {context.slot.isoformat()} {context.attempt} {os.getpid()}\n")


def blocking_task(user_id: str, context: RunContext) -> None:
    """Marks itself started, then waits (up to 60 s) for the test to release it."""
    recording_task(user_id, context)
    started_marker(_dir(), user_id).write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while not release_marker(_dir(), user_id).exists():
        if time.monotonic() > deadline:
            raise TimeoutError("never released")
        time.sleep(0.02)


def sleeping_task(user_id: str, context: RunContext) -> None:
    """Runs for MONITOR_TEST_SLEEP seconds (default 2) after marking itself started."""
    recording_task(user_id, context)
    started_marker(_dir(), user_id).write_text(str(os.getpid()))
    time.sleep(float(os.environ.get("MONITOR_TEST_SLEEP", "2")))


def chaos_task(user_id: str, context: RunContext) -> None:
    """For the chaos soak (scripts/bench/chaos.py): appends `S <user> <slot> <attempt> <pid> <t>` to
    executions.log when it starts and an `E ...` line when it ends, after MONITOR_TEST_SLEEP seconds
    (default 0.3): the ground truth of what ran and when, even in a process killed mid-run."""
    head = f"{user_id} {context.slot.isoformat()} {context.attempt} {os.getpid()}"
    with open(_dir() / "executions.log", "a") as log:
        log.write(f"S {head} {time.time():.3f}\n")
    time.sleep(float(os.environ.get("MONITOR_TEST_SLEEP", "0.3")))
    with open(_dir() / "executions.log", "a") as log:
        log.write(f"E {head} {time.time():.3f}\n")


def progress_task(user_id: str, context: RunContext) -> None:
    """Reports two steps of progress; the second lands with the finish (within the throttle)."""
    context.progress(0.5, f"half of {user_id}'s endpoints checked")
    context.progress(1.0, f"all of {user_id}'s endpoints answered")


async def async_sleeping_task(user_id: str, context: RunContext) -> None:
    """The async twin of sleeping_task; logs `user_id thread loop-id pid` to async.log when it starts."""
    import asyncio
    import threading

    recording_task(user_id, context)
    with open(_dir() / "async.log", "a") as log:
        log.write(f"{user_id} {threading.current_thread().name} {id(asyncio.get_running_loop())} {os.getpid()}\n")
    started_marker(_dir(), user_id).write_text(str(os.getpid()))
    await asyncio.sleep(float(os.environ.get("MONITOR_TEST_SLEEP", "2")))


class AsyncCallableTask:
    """A task object whose `__call__` is async (the other shape of an async task)."""

    async def __call__(self, user_id: str, context: RunContext) -> None:
        await async_sleeping_task(user_id, context)


async_callable_task = AsyncCallableTask()


def troubled(user_id: str) -> bool:
    """The first user of a test (`...-000000`) is the one whose task misbehaves."""
    return user_id.endswith("000000")


async def async_trouble_task(user_id: str, context: RunContext) -> None:
    """The first user's run misbehaves as MONITOR_TEST_TROUBLE says: `exit` raises SystemExit,
    `interrupt` KeyboardInterrupt, `hang` awaits forever (and writes `cancelled-<user>` when it is
    cancelled); every other user's run records itself and succeeds."""
    import asyncio

    if not troubled(user_id):
        recording_task(user_id, context)
        await asyncio.sleep(0.05)
        return
    trouble = os.environ.get("MONITOR_TEST_TROUBLE", "exit")
    if trouble == "exit":
        raise SystemExit(3)
    if trouble == "interrupt":
        raise KeyboardInterrupt
    started_marker(_dir(), user_id).write_text(str(os.getpid()))
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        (_dir() / f"cancelled-{_safe(user_id)}").write_text("cancelled")
        raise


def cancelled_marker(directory: Path, user_id: str) -> Path:
    return directory / f"cancelled-{_safe(user_id)}"


def hanging_sync_task(user_id: str, context: RunContext) -> None:
    """The first user's run blocks until released (or 60 s); every other user's run succeeds."""
    if troubled(user_id):
        blocking_task(user_id, context)
    else:
        recording_task(user_id, context)


def _execution(kind: str, user_id: str, context: RunContext) -> None:
    with open(_dir() / "executions.log", "a") as log:
        log.write(f"{kind} {user_id} {context.slot.isoformat()} {context.attempt} {os.getpid()} {time.time():.6f}\n")


def flaky_task(user_id: str, context: RunContext) -> dict[str, int]:
    """Fails every attempt before MONITOR_TEST_SUCCEEDS_AT (default 3), then returns its attempt;
    writes `S`/`E` lines (user slot attempt pid time) to executions.log around a short sleep
    (MONITOR_TEST_SLEEP, default 0.2 s): the ground truth of which attempts ran, and when."""
    _execution("S", user_id, context)
    try:
        time.sleep(float(os.environ.get("MONITOR_TEST_SLEEP", "0.2")))
        if context.attempt < int(os.environ.get("MONITOR_TEST_SUCCEEDS_AT", "3")):
            raise RuntimeError(f"flaky site, attempt {context.attempt}")
        return {"attempt": context.attempt}
    finally:
        _execution("E", user_id, context)


async def async_flaky_task(user_id: str, context: RunContext) -> dict[str, int]:
    """flaky_task's async twin (it runs on the worker's event loop)."""
    import asyncio

    _execution("S", user_id, context)
    try:
        await asyncio.sleep(float(os.environ.get("MONITOR_TEST_SLEEP", "0.2")))
        if context.attempt < int(os.environ.get("MONITOR_TEST_SUCCEEDS_AT", "3")):
            raise RuntimeError(f"flaky site, attempt {context.attempt}")
        return {"attempt": context.attempt, "async": 1}
    finally:
        _execution("E", user_id, context)


def dies_first_task(user_id: str, context: RunContext) -> None:
    """Attempt 1 blocks (the test kills its worker meanwhile); later attempts record themselves and fail."""
    if context.attempt == 1:
        blocking_task(user_id, context)
        return
    recording_task(user_id, context)
    raise RuntimeError(f"still failing, attempt {context.attempt}")
