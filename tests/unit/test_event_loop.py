"""The async tasks' event loop survives its tasks, and is replaced when it no longer runs; the run
threads are reused, not started per run."""

from __future__ import annotations

import asyncio
import threading

import pytest

from core.event_loop import EventLoopThread
from core.exceptions import TaskExited
from core.run_threads import RunThreads


async def _answer() -> int:
    await asyncio.sleep(0)
    return 42


async def _exit() -> None:
    raise SystemExit(3)


def test_a_task_raising_system_exit_comes_back_wrapped_and_the_loop_keeps_running() -> None:
    loops = EventLoopThread(name="test-loop")
    first = loops.loop()

    with pytest.raises(TaskExited) as raised:
        loops.submit(_exit()).result(5)

    assert isinstance(raised.value.original, SystemExit)
    assert loops.submit(_answer()).result(5) == 42
    assert loops.loop() is first, "the same loop, still running"


@pytest.mark.parametrize("how", ["stopped", "closed"])
def test_a_loop_that_no_longer_runs_is_replaced_at_the_next_submit(how: str) -> None:
    loops = EventLoopThread(name=f"test-loop-{how}")
    old = loops.loop()
    [thread] = [t for t in threading.enumerate() if t.name == f"test-loop-{how}"]
    old.call_soon_threadsafe(old.stop)
    thread.join(5)  # its run_forever returned: the loop no longer runs
    assert not thread.is_alive()
    if how == "closed":
        old.close()

    assert loops.submit(_answer()).result(5) == 42
    assert loops.loop() is not old


def test_run_threads_are_reused_not_started_per_item() -> None:
    pool = RunThreads("test-run")
    for _ in range(50):
        done = threading.Event()
        pool.submit(lambda event: event.set(), done)
        assert done.wait(5)
    assert pool.started == 1


def test_a_limited_pool_queues_items_behind_its_one_thread() -> None:
    pool = RunThreads("test-writer", limit=1)
    release, seen = threading.Event(), list[int]()
    pool.submit(lambda _: release.wait(5), None)
    for n in range(3):
        pool.submit(seen.append, n)
    release.set()
    finished = threading.Event()
    pool.submit(lambda _: finished.set(), None)
    assert finished.wait(5)
    assert seen == [0, 1, 2] and pool.started == 1
