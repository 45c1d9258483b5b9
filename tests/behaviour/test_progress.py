"""Progress of a long run, told as stories on SQLite and MariaDB alike.

Given a claimed run whose task reports progress, when it runs (a fixed clock for the database, a
fake monotonic clock and a recorded timer for the throttle: no sleeps), then the schedule shows
the progress while the lease is held, at most one write per interval reaches the database, the
last value lands with the finish, a run that lost its lease writes nothing, and the history keeps
the last message.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from core import claims
from core.domain import ClaimedRun, RunState, RunStatus, Schedule, Trigger
from core.executor import Runner
from core.progress import ProgressPolicy
from core.tasks import RunContext, Task
from tests.conftest import T0, Backend


@dataclass
class FakeTimer:
    delay: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True

    def fire(self) -> None:
        if not self.cancelled:
            self.callback()


@dataclass
class FakeTime:
    """The throttle's clock and timer: the test moves time and fires the flushes it scheduled."""

    now: float = 100.0
    timers: list[FakeTimer] = field(default_factory=list)
    fired: list[FakeTimer] = field(default_factory=list)

    def schedule(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(delay, callback)
        self.timers.append(timer)
        return timer

    def policy(self, interval: float = 2.0) -> ProgressPolicy:
        return ProgressPolicy(min_interval=interval, monotonic=lambda: self.now, schedule=self.schedule)

    def fire_timers(self) -> None:
        pending, self.timers = self.timers, []
        self.fired += pending
        for timer in pending:
            timer.fire()


def runner(backend: Backend, task: Task, policy: ProgressPolicy) -> Runner:
    return Runner(backend.engine, backend.settings(), backend.clock, task, worker_name="test", progress_policy=policy)


def claim_one(backend: Backend, token: str = "tok-A") -> ClaimedRun:
    now = backend.clock.moment
    with backend.engine.begin() as conn:
        [run] = claims.claim_due(conn, now=now, limit=1, token=token, lease_until=now + timedelta(minutes=15), trigger=Trigger.SCHEDULE).claimed
    return run


def progress_of(backend: Backend, user_id: str) -> tuple[float | None, str | None]:
    row = backend.schedule(user_id)
    return row.progress, row.progress_message


def test_progress_is_stored_while_the_run_holds_its_lease(backend: Backend) -> None:
    [user] = backend.add_schedules(1)
    time = FakeTime()
    seen: list[object] = []

    def task(user_id: str, context: RunContext) -> None:
        row = backend.schedule(user_id)
        seen.append((row.state, row.run_started_at, row.progress))
        context.progress(0.25, "checking 1 of 4 endpoints")
        row = backend.schedule(user_id)
        seen.append((row.state, row.progress, row.progress_message, row.progress_at))

    queued = backend.schedule(user)
    assert queued.state is RunState.IDLE
    run = claim_one(backend)
    assert backend.schedule(user).state is RunState.QUEUED, "leased, not started: waiting in the queue"
    runner(backend, task, time.policy()).execute(run)

    assert seen == [(RunState.RUNNING, T0, None), (RunState.RUNNING, 0.25, "checking 1 of 4 endpoints", T0)]
    assert backend.schedule(user).state is RunState.IDLE


def test_reports_within_the_interval_are_buffered_and_the_last_one_lands_when_it_has_passed(backend: Backend) -> None:
    [user] = backend.add_schedules(1)
    time = FakeTime()
    stored: list[tuple[float | None, str | None]] = []

    def task(user_id: str, context: RunContext) -> None:
        context.progress(0.1, "step 1")
        for step in range(2, 6):  # a tight loop: 4 more reports within one second
            time.now += 0.2
            context.progress(step / 10, f"step {step}")
        stored.append(progress_of(backend, user_id))
        assert len(time.timers) == 1, "one flush scheduled for the whole burst"
        assert abs(time.timers[0].delay - (2.0 - 0.2)) < 1e-9, "the flush is due one interval after the first write"
        time.now += 1.2  # the interval has passed: the flush writes the newest value
        time.fire_timers()
        stored.append(progress_of(backend, user_id))
        time.now += 0.1
        context.progress(0.6, "step 6")  # too soon after the flush: buffered again
        stored.append(progress_of(backend, user_id))

    run = claim_one(backend)
    runner(backend, task, time.policy()).execute(run)

    assert stored == [(0.1, "step 1"), (0.5, "step 5"), (0.5, "step 5")]
    assert progress_of(backend, user) == (0.6, "step 6"), "the last value lands with the finish"
    assert [timer.cancelled for timer in time.timers] == [True], "the finish cancels the pending flush"


def test_the_last_report_lands_with_the_finish_and_the_history_keeps_its_message(backend: Backend) -> None:
    [user] = backend.add_schedules(1)
    time = FakeTime()

    def task(user_id: str, context: RunContext) -> None:
        context.progress(0.5, "half way")
        context.progress(1.0, "all 4 endpoints answered")  # within the interval: not written now

    result = runner(backend, task, time.policy()).execute(claim_one(backend))

    assert result.status is RunStatus.SUCCEEDED
    row = backend.schedule(user)
    assert (row.state, row.progress, row.progress_message, row.progress_at) == (RunState.IDLE, 1.0, "all 4 endpoints answered", T0)
    [run] = backend.runs(user)
    assert run.progress_message == "all 4 endpoints answered"


def test_a_failed_run_keeps_its_last_message_in_history(backend: Backend) -> None:
    [user] = backend.add_schedules(1)

    def task(user_id: str, context: RunContext) -> None:
        context.progress(0.75, "endpoint 3 of 4")
        raise RuntimeError("endpoint 4 answered HTTP 500")

    runner(backend, task, FakeTime().policy()).execute(claim_one(backend))

    [run] = backend.runs(user)
    assert (run.status, run.progress_message) == ("failed", "endpoint 3 of 4")


def test_a_run_that_never_reports_leaves_no_progress_and_the_next_claim_clears_the_last(backend: Backend) -> None:
    [user] = backend.add_schedules(1, interval=1)
    time = FakeTime()
    runner(backend, lambda u, c: c.progress(1.0, "done"), time.policy()).execute(claim_one(backend))
    assert progress_of(backend, user) == (1.0, "done"), "the schedule keeps the last run's progress while idle"

    backend.clock.advance(minutes=1)
    run = claim_one(backend)
    assert progress_of(backend, user) == (None, None), "a new run starts without the old progress"
    runner(backend, lambda u, c: None, time.policy()).execute(run)

    assert progress_of(backend, user) == (None, None)
    assert [r.progress_message for r in backend.runs(user)] == ["done", None]
    assert time.timers == [], "nothing scheduled for a run that never reports"


def test_a_run_whose_lease_was_taken_over_cannot_write_progress(backend: Backend) -> None:
    [user] = backend.add_schedules(1)
    time = FakeTime()
    after_takeover: list[Schedule] = []

    def task(user_id: str, context: RunContext) -> None:
        context.progress(0.2, "stale run, first report")
        # The worker freezes past its lease; a pass takes the row over for a new attempt.
        backend.clock.advance(minutes=16)
        claim_one(backend, token="rescuer")
        time.now += 10
        context.progress(0.9, "stale run, after the takeover")
        after_takeover.append(backend.schedule(user_id))
        time.now += 10
        context.progress(0.95, "stale run, never tries again")

    result = runner(backend, task, time.policy()).execute(claim_one(backend, token="frozen"))

    [row_then] = after_takeover
    assert (row_then.locked_by, row_then.progress, row_then.progress_message) == ("rescuer", None, None), \
        "the takeover cleared the progress and the stale run could not write"
    assert result.status is RunStatus.STALE
    row = backend.schedule(user)
    assert (row.locked_by, row.progress, row.progress_message) == ("rescuer", None, None), "nor could its finish"
    stale = [r for r in backend.runs(user) if r.status == "stale"]
    assert [r.progress_message for r in stale] == ["stale run, never tries again"], "history still says how far it got"


def test_runs_on_many_threads_each_report_their_own_progress(backend: Backend) -> None:
    users = backend.add_schedules(4)
    with backend.engine.begin() as conn:
        claimed = claims.claim_due(conn, now=T0, limit=4, token="tok", lease_until=T0 + timedelta(minutes=15), trigger=Trigger.SCHEDULE).claimed
    barrier = threading.Barrier(len(claimed))
    reporters: list[threading.Thread] = []

    def task(user_id: str, context: RunContext) -> None:
        barrier.wait(timeout=10)  # all runs in progress at once
        # The task's own threads report too: one reporter per run, safe across threads.
        def report(i: int) -> None:
            for j in range(50):
                context.progress(j / 100, f"{user_id} {i}:{j}")

        threads = [threading.Thread(target=report, args=(i,)) for i in range(3)]
        reporters.extend(threads)
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        context.progress(1.0, f"{user_id} done")

    run_all = runner(backend, task, ProgressPolicy(min_interval=0.01))
    workers = [threading.Thread(target=run_all.execute, args=(run,)) for run in claimed]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)

    assert len(reporters) == 12
    for user in users:
        assert progress_of(backend, user) == (1.0, f"{user} done")
        [run] = backend.runs(user)
        assert (run.status, run.progress_message) == ("succeeded", f"{user} done")


@pytest.mark.mysql
def test_progress_from_an_async_task_never_blocks_the_event_loop_its_neighbours_share(mysql_backend: Backend) -> None:
    """Given two async runs on one process's event loop, when the first reports progress while
    another connection holds a lock on its row for 1.5 s, then the second run's awaits stay on
    time (before: the write ran on the loop and froze both for the whole lock)."""
    import asyncio
    import time as clock

    from sqlalchemy import text

    reporter, neighbour = mysql_backend.add_schedules(2)
    started, neighbour_started, locked = threading.Event(), threading.Event(), threading.Event()
    lateness: list[float] = []

    async def task(user_id: str, context: RunContext) -> None:
        if user_id == reporter:
            started.set()
            while not locked.is_set():
                await asyncio.sleep(0.01)
            context.progress(0.5, "half way")  # its row is locked: the write waits for the lock
            return
        neighbour_started.set()
        until = clock.monotonic() + 2.5
        while clock.monotonic() < until:
            before = clock.monotonic()
            await asyncio.sleep(0.05)
            lateness.append(clock.monotonic() - before - 0.05)

    shared = Runner(mysql_backend.engine, mysql_backend.settings(), mysql_backend.clock, task, worker_name="test")
    with mysql_backend.engine.begin() as conn:
        now = mysql_backend.clock.moment
        runs = claims.claim_due(conn, now=now, limit=2, token="tok-A", lease_until=now + timedelta(minutes=15), trigger=Trigger.SCHEDULE).claimed
    threads = [threading.Thread(target=shared.execute, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()
    assert started.wait(10) and neighbour_started.wait(10)
    with mysql_backend.engine.connect() as locker:
        transaction = locker.begin()
        locker.execute(text("SELECT userId FROM UserMonitorSchedule WHERE userId = :u FOR UPDATE"), {"u": reporter})
        locked.set()
        clock.sleep(1.5)
        transaction.rollback()
    for thread in threads:
        thread.join(30)

    assert lateness and max(lateness) < 0.5, f"the neighbour's awaits were up to {max(lateness):.2f} s late"
    assert progress_of(mysql_backend, reporter) == (0.5, "half way"), "the report still landed"
    assert {r.status for r in mysql_backend.runs()} == {"succeeded"}
