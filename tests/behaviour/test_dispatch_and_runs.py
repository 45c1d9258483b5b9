"""The scheduling behaviour, told as stories, run against SQLite and MariaDB alike.

Given rows, when the dispatcher ticks at time T (a fixed clock: no sleeps), then exactly these
users are claimed, run, recorded and rescheduled.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import pytest

from dispatcher.service import DispatchPolicy, Dispatcher
from dispatcher.sinks import InlineSink
from core import claims, domain, queries, writes
from core.exceptions import InvalidInput, LeaseHeld, UnknownUser
from core.domain import RunStatus, Trigger
from tests.conftest import T0, Backend
from core import shutdown
from core.executor import Runner, RunResult
from monitor_scheduler.wiring import App


def make_dispatcher(backend: Backend, task=None, monotonic=None, **settings):
    cfg = backend.settings(**settings)
    calls: list[str] = []

    def default_task(user_id, context):
        calls.append(user_id)

    runner = Runner(backend.engine, cfg, backend.clock, task or default_task, worker_name="test")
    sink = InlineSink(runner, time_budget=cfg.SYNC_TIME_BUDGET, **({"monotonic": monotonic} if monotonic else {}))
    return Dispatcher(backend.engine, backend.clock, DispatchPolicy.from_settings(cfg), sink), runner, calls


def claim(backend: Backend, limit: int = 1000, token: str = "tok-A"):
    now = backend.clock.moment
    with backend.engine.begin() as conn:
        return claims.claim_due(conn, now=now, limit=limit, token=token, lease_until=now + timedelta(minutes=15), trigger=Trigger.SCHEDULE).claimed


def test_due_rows_are_claimed_oldest_first_and_leave_the_due_range(backend: Backend) -> None:
    backend.add_schedules(3, due_at=T0 - timedelta(minutes=3), spread_ms=60_000, prefix="due")
    backend.add_schedules(2, due_at=T0 + timedelta(seconds=1), prefix="future")

    claimed = claim(backend)

    assert [c.user_id for c in claimed] == ["due-000000", "due-000001", "due-000002"]
    assert [c.slot for c in claimed] == [T0 - timedelta(minutes=3), T0 - timedelta(minutes=2), T0 - timedelta(minutes=1)]
    assert all(c.attempt == 1 for c in claimed)
    row = backend.schedule("due-000000")
    assert row.locked_by == "tok-A"
    assert row.locked_until == T0 + timedelta(minutes=15)
    assert row.next_run_at == row.locked_until, "the claim moves the row out of the due range"
    assert row.run_slot == T0 - timedelta(minutes=3)
    assert claim(backend, token="tok-B") == [], "a claimed row is not due again while its lease lives"


def test_disabled_rows_are_never_claimed(backend: Backend) -> None:
    backend.add_schedules(2, due_at=T0 - timedelta(minutes=1), enabled=False)
    assert claim(backend) == []


def test_batch_size_caps_users_per_pass(backend: Backend) -> None:
    backend.add_schedules(50)
    dispatcher, _, calls = make_dispatcher(backend, DISPATCH_BATCH_SIZE=20)

    first = dispatcher.tick()
    second = dispatcher.tick()

    assert (first.claimed, first.ran, second.claimed) == (20, 20, 20)
    assert len(set(calls)) == 40


def test_expired_lease_is_claimed_again_and_the_lost_run_recorded(backend: Backend) -> None:
    backend.add_schedules(1, due_at=T0 - timedelta(minutes=1))
    [first] = claim(backend, token="dead-worker")
    backend.clock.advance(minutes=14, seconds=59)
    assert claim(backend, token="too-early") == [], "never while the lease lives"

    backend.clock.advance(seconds=1)
    [second] = claim(backend, token="rescuer")

    assert (second.slot, second.attempt) == (first.slot, 2), "the lost slot is retried, not skipped"
    [lost] = backend.runs("user-000000")
    assert (lost.status, lost.lease_token, lost.attempt) == ("lost", "dead-worker", 1)
    row = backend.schedule("user-000000")
    assert (row.locked_by, row.last_status) == ("rescuer", "lost")


def test_a_sync_pass_runs_records_and_reschedules_at_a_fixed_rate(backend: Backend) -> None:
    backend.add_schedules(2, due_at=T0 - timedelta(seconds=30), interval=5)
    dispatcher, _, calls = make_dispatcher(backend)

    summary = dispatcher.tick()

    assert (summary.claimed, summary.ran, summary.succeeded, summary.released) == (2, 2, 2, 0)
    assert sorted(calls) == ["user-000000", "user-000001"]
    row = backend.schedule("user-000000")
    assert row.next_run_at == T0 - timedelta(seconds=30) + timedelta(minutes=5), "next = slot + interval"
    assert (row.last_status, row.locked_by, row.locked_until) == ("succeeded", None, None)
    [run] = backend.runs("user-000000")
    assert (run.trigger, run.status, run.attempt, run.skipped_slots) == ("sync", "succeeded", 1, 0)
    # The start is the finish (the clock's now) minus the measured duration: no second clock read.
    assert run.duration_ms is not None
    assert (run.finished_at, row.last_run_at, run.started_at) == (T0, T0 - timedelta(milliseconds=run.duration_ms), row.last_run_at)


def test_slots_already_past_are_skipped_and_counted(backend: Backend) -> None:
    backend.add_schedules(1, due_at=T0 - timedelta(minutes=12), interval=5)
    dispatcher, _, calls = make_dispatcher(backend)

    dispatcher.tick()

    assert calls == ["user-000000"], "one run, no burst of catch-up runs"
    assert backend.schedule("user-000000").next_run_at == T0 + timedelta(minutes=3)
    assert backend.runs("user-000000")[0].skipped_slots == 2


def test_a_failing_task_is_recorded_and_the_schedule_moves_on(backend: Backend) -> None:
    backend.add_schedules(1, interval=10)

    def explode(user_id, context):
        raise ValueError("x" * 5000)

    dispatcher, _, _ = make_dispatcher(backend, task=explode)
    summary = dispatcher.tick()

    assert (summary.ran, summary.failed) == (1, 1)
    row = backend.schedule("user-000000")
    assert row.last_status == "failed"
    assert row.last_error is not None
    assert row.last_error.startswith("ValueError: xxx") and len(row.last_error) <= domain.ERROR_TEXT_LIMIT
    assert row.next_run_at == T0 + timedelta(minutes=10)
    assert row.locked_by is None


def test_a_failing_tasks_error_is_stored_without_terminal_or_bidi_controls(backend: Backend) -> None:
    backend.add_schedules(1)

    def hostile(user_id, context):
        raise RuntimeError("remote said \x9b2J\x1b[31mred\u202egnp.exe\u200b\nsecond line")

    dispatcher, _, _ = make_dispatcher(backend, task=hostile)
    dispatcher.tick()

    expected = "RuntimeError: remote said  2J [31mredgnp.exe second line"
    assert backend.schedule("user-000000").last_error == expected
    assert backend.runs("user-000000")[-1].error == expected


def test_a_stale_worker_cannot_overwrite_the_newer_run(backend: Backend) -> None:
    backend.add_schedules(1, interval=5)
    cfg = backend.settings()
    [old] = claim(backend, token="old-worker")
    backend.clock.advance(minutes=16)  # the old worker hangs past its lease
    [new] = claim(backend, token="new-worker")
    Runner(backend.engine, cfg, backend.clock, lambda u, c: None).execute(new)
    newer = backend.schedule("user-000000")

    def late_failure(user_id, context):
        raise RuntimeError("late result")

    result = Runner(backend.engine, cfg, backend.clock, late_failure).execute(old)

    assert result.status is RunStatus.SKIPPED, "the old job finds its lease gone before running the task"
    assert backend.schedule("user-000000") == newer


def test_a_result_written_after_the_lease_was_taken_over_is_refused(backend: Backend) -> None:
    backend.add_schedules(1, interval=5)
    cfg = backend.settings()
    [old] = claim(backend, token="old-worker")
    state = {}

    def slow_task(user_id, context):
        # While this run is "hanging", its lease expires and another dispatcher takes over and
        # finishes a newer run.
        backend.clock.advance(minutes=16)
        [new] = claim(backend, token="new-worker")
        Runner(backend.engine, cfg, backend.clock, lambda u, c: None).execute(new)
        state["newer"] = backend.schedule("user-000000")
        raise RuntimeError("old result")

    result = Runner(backend.engine, cfg, backend.clock, slow_task).execute(old)

    assert (result.status, result.applied) == (RunStatus.STALE, False)
    assert backend.schedule("user-000000") == state["newer"], "the newer run's result stands"
    statuses = [(r.lease_token, r.status) for r in backend.runs("user-000000")]
    assert statuses == [("old-worker", "lost"), ("new-worker", "succeeded"), ("old-worker", "stale")]


def test_released_leases_are_due_at_once_with_a_new_attempt(backend: Backend) -> None:
    backend.add_schedules(1, due_at=T0 - timedelta(minutes=1))
    [first] = claim(backend, token="t1")
    with backend.engine.begin() as conn:
        assert claims.release_leases(conn, user_ids=["user-000000"], token="someone-else") == 0, "fenced"
        assert claims.release_leases(conn, user_ids=["user-000000"], token="t1") == 1

    row = backend.schedule("user-000000")
    assert (row.locked_by, row.next_run_at) == (None, T0 - timedelta(minutes=1))
    [again] = claim(backend, token="t2")
    assert (again.slot, again.attempt) == (first.slot, 2), "a new job id: the released run is never enqueued twice"


def test_sync_mode_stops_at_its_time_budget_and_releases_the_rest(backend: Backend) -> None:
    backend.add_schedules(10)
    fake_time = [0.0]

    def slow_task(user_id, context):
        fake_time[0] += 1.0  # each run "takes" one second

    dispatcher, _, _ = make_dispatcher(backend, task=slow_task, monotonic=lambda: fake_time[0], SYNC_TIME_BUDGET=3.5)
    summary = dispatcher.tick()

    assert (summary.ran, summary.released, summary.budget_exhausted) == (4, 6, True)
    with backend.engine.connect() as conn:
        assert queries.count_due(conn, now=backend.clock.moment) == 6, "unrun rows are due again at once"


def test_direct_mode_runs_one_user_now_and_restarts_its_cadence(backend: Backend) -> None:
    backend.add_schedules(1, due_at=T0 + timedelta(hours=3), interval=60)
    dispatcher, _, calls = make_dispatcher(backend)

    summary = dispatcher.run_user_now("user-000000")

    assert (summary.ran, calls) == (1, ["user-000000"])
    assert backend.schedule("user-000000").next_run_at == T0 + timedelta(minutes=60)
    assert backend.runs("user-000000")[0].trigger == "manual"


def test_direct_mode_refuses_unknown_users_and_running_ones(backend: Backend) -> None:
    backend.add_schedules(1)
    dispatcher, _, calls = make_dispatcher(backend)
    with pytest.raises(UnknownUser):
        dispatcher.run_user_now("nobody")
    claim(backend, token="running")
    with pytest.raises(LeaseHeld):
        dispatcher.run_user_now("user-000000")
    assert calls == []
    assert backend.schedule("user-000000").locked_by == "running"


def test_unlock_expired_releases_and_records_lost_runs(backend: Backend) -> None:
    backend.add_schedules(2)
    claim(backend, limit=1, token="dead")
    with backend.engine.begin() as conn:
        assert claims.unlock_expired(conn, now=backend.clock.moment) == [], "live leases are left alone"
    backend.clock.advance(minutes=20)
    with backend.engine.begin() as conn:
        assert claims.unlock_expired(conn, now=backend.clock.moment) == ["user-000000"]
    row = backend.schedule("user-000000")
    assert (row.locked_by, row.next_run_at, row.last_status) == (None, T0, "lost")
    assert [r.status for r in backend.runs("user-000000")] == ["lost"]


def test_prune_deletes_only_history_older_than_the_cutoff(backend: Backend) -> None:
    backend.add_schedules(1)
    dispatcher, _, _ = make_dispatcher(backend)
    dispatcher.tick()
    backend.clock.advance(days=40)
    dispatcher.run_user_now("user-000000")
    with backend.engine.begin() as conn:
        assert writes.prune_runs(conn, finished_before=backend.clock.moment - timedelta(days=30), batch=1) == 1
        assert writes.prune_runs(conn, finished_before=backend.clock.moment - timedelta(days=30)) == 0
    assert [r.trigger for r in backend.runs()] == ["manual"]


@pytest.mark.parametrize("days", [-1, 0, 36_501])
def test_the_service_refuses_a_retention_outside_the_range_and_deletes_nothing(backend: Backend, days: int) -> None:
    """Whoever calls it (not only the CLI, whose --days is checked first): 0 is not the default and
    -1 is not "everything"."""
    backend.add_schedules(1)
    dispatcher, _, _ = make_dispatcher(backend)
    dispatcher.tick()
    service = App(backend.settings(), backend.engine, backend.clock).services.runs
    with pytest.raises(InvalidInput, match="days must be from 1 to 36500"):
        service.prune_history(days)
    assert len(backend.runs()) == 1
    assert service.prune_history(1)[0] == 0


def test_the_heartbeat_keeps_the_lease_of_a_long_run(backend: Backend) -> None:
    import time

    backend.add_schedules(1)
    cfg = backend.settings(DISPATCH_LOCK_TTL=3000, JOB_TIMEOUT=2)
    [run] = claim(backend)
    seen = []

    def long_task(user_id, context):
        backend.clock.advance(seconds=10)  # far past the 3 s lease
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            until = backend.schedule(user_id).locked_until
            if until == backend.clock.moment + timedelta(seconds=3):
                seen.append(until)
                return
            time.sleep(0.05)

    result = Runner(backend.engine, cfg, backend.clock, long_task).execute(run)

    assert seen, "the heartbeat renewed the lease from the current time while the task ran"
    assert result.status is RunStatus.SUCCEEDED


def test_health_fails_when_the_dispatcher_stopped_or_due_users_wait(backend: Backend) -> None:
    from core.health import evaluate

    cfg = backend.settings(HEALTH_MAX_PASS_AGE=120, HEALTH_MAX_DUE_AGE=60)

    def report():
        with backend.engine.connect() as conn:
            return evaluate(conn, now=backend.clock.moment, settings=cfg)

    assert report().problems == ["no dispatch pass has succeeded yet"]
    dispatcher, _, _ = make_dispatcher(backend)
    dispatcher.tick()
    assert report().ok
    backend.add_schedules(1, due_at=backend.clock.moment, prefix="late")
    backend.clock.advance(seconds=90)
    assert [p.split(" ")[0:3] for p in report().problems] == [["oldest", "due", "schedule"]]
    assert report().scheduling_lag_seconds == 90
    backend.clock.advance(seconds=60)
    assert len(report().problems) == 2, "the pass is now 150 s old too"
    dispatcher.tick()
    assert report().ok, "one pass runs the late user and proves the dispatcher alive"


@pytest.mark.parametrize("error", [SystemExit(3), KeyboardInterrupt(), GeneratorExit()], ids=["SystemExit", "KeyboardInterrupt", "GeneratorExit"])
def test_a_task_raising_a_base_exception_fails_its_run_and_the_pass_goes_on(backend: Backend, error: BaseException) -> None:
    """Given three due users whose first task raises SystemExit/KeyboardInterrupt by itself, when a
    sync pass runs, then that run is failed and recorded, its lease released, and the others run."""
    backend.add_schedules(3)

    def task(user_id, context):
        if user_id == "user-000000":
            raise error

    dispatcher, _, _ = make_dispatcher(backend, task=task)
    summary = dispatcher.tick()
    assert (summary.claimed, summary.ran, summary.failed, summary.succeeded, summary.released) == (3, 3, 1, 2, 0)
    row = backend.schedule("user-000000")
    assert row.last_status == "failed" and row.locked_by is None and row.next_run_at > T0
    assert row.last_error is not None and type(error).__name__ in row.last_error
    assert [r.status for r in backend.runs("user-000000")] == ["failed"]


def test_a_real_shutdown_request_still_stops_the_process_after_the_run_is_recorded(backend: Backend) -> None:
    """Ctrl-C noted by the entry point (core.shutdown) is re-raised once the run is recorded; the
    rest of the claimed batch is not left leased for a TTL (its leases are released)."""
    backend.add_schedules(3)

    def task(user_id, context):
        if user_id == "user-000000":
            shutdown.request()  # what the entry point's signal handler does on a real SIGINT
            raise KeyboardInterrupt

    dispatcher, _, calls = make_dispatcher(backend, task=task)
    try:
        with pytest.raises(KeyboardInterrupt):
            dispatcher.tick()
    finally:
        shutdown.forget()
    row = backend.schedule("user-000000")
    assert row.last_status == "failed" and row.locked_by is None
    assert [r.status for r in backend.runs("user-000000")] == ["failed"]
    assert calls == []
    for user_id in ("user-000001", "user-000002"):
        rest = backend.schedule(user_id)
        assert rest.locked_by is None and rest.next_run_at <= T0, "due again at once, not after a TTL"


def test_a_run_timed_out_from_another_thread_is_failed_and_its_late_result_refused(backend: Backend) -> None:
    import threading

    backend.add_schedules(1, interval=5)
    cfg = backend.settings()
    [run] = claim(backend, token="tok-A")
    started, release = threading.Event(), threading.Event()

    def hanging_task(user_id, context):
        started.set()
        release.wait(30)

    runner = Runner(backend.engine, cfg, backend.clock, hanging_task)
    late: dict[str, RunResult] = {}
    thread = threading.Thread(target=lambda: late.update(result=runner.execute(run)))
    thread.start()
    assert started.wait(10)

    timed_out = runner.time_out(run, elapsed=601.0)

    assert timed_out is not None and timed_out.status is RunStatus.FAILED and timed_out.applied
    row = backend.schedule("user-000000")
    assert (row.last_status, row.locked_by) == ("failed", None), "the user moves on"
    assert "timed out" in (row.last_error or "")
    assert runner.time_out(run, elapsed=602.0) is None, "a run is timed out once"

    release.set()
    thread.join(10)

    assert late["result"].status is RunStatus.STALE
    assert backend.schedule("user-000000") == row, "the late result changes nothing"
    assert [r.status for r in backend.runs("user-000000")] == ["failed", "stale"]


def test_timing_out_a_run_whose_task_returned_does_nothing(backend: Backend) -> None:
    backend.add_schedules(1, interval=5)
    [run] = claim(backend, token="tok-A")
    runner = Runner(backend.engine, backend.settings(), backend.clock, lambda u, c: None)
    assert runner.execute(run).status is RunStatus.SUCCEEDED

    assert runner.time_out(run, elapsed=601.0) is None
    assert [r.status for r in backend.runs("user-000000")] == ["succeeded"]


def test_an_async_task_runs_to_completion_in_a_sync_pass(backend: Backend) -> None:
    import asyncio

    backend.add_schedules(3, due_at=T0 - timedelta(minutes=1))
    ran: list[str] = []

    async def async_task(user_id, context):
        await asyncio.sleep(0.01)
        ran.append(user_id)

    dispatcher, _, _ = make_dispatcher(backend, task=async_task)
    summary = dispatcher.tick()

    assert summary.claimed == 3 and sorted(ran) == ["user-000000", "user-000001", "user-000002"]
    assert {r.status for r in backend.runs()} == {"succeeded"}


def test_an_async_run_timed_out_is_cancelled_and_ends_stale(backend: Backend) -> None:
    import asyncio
    import threading

    backend.add_schedules(1, interval=5)
    [run] = claim(backend, token="tok-A")
    started = threading.Event()

    async def hanging_task(user_id, context):
        started.set()
        await asyncio.sleep(3600)

    runner = Runner(backend.engine, backend.settings(), backend.clock, hanging_task)
    late: dict[str, RunResult] = {}
    thread = threading.Thread(target=lambda: late.update(result=runner.execute(run)))
    thread.start()
    assert started.wait(10)

    timed_out = runner.time_out(run, elapsed=601.0)
    thread.join(10)

    assert timed_out is not None and timed_out.status is RunStatus.FAILED
    assert not thread.is_alive(), "the task was cancelled, not left running"
    assert late["result"].status is RunStatus.STALE
    assert [r.status for r in backend.runs("user-000000")] == ["failed", "stale"]


def _tick_within(dispatcher: Dispatcher, seconds: float) -> domain.DispatchSummary:
    """A pass on another thread, waited for at most `seconds`: a pass that hangs fails the test."""
    import threading

    outcome: dict[str, object] = {}
    thread = threading.Thread(target=lambda: outcome.update(summary=dispatcher.tick()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the pass still runs after {seconds} s"
    summary = outcome["summary"]
    assert isinstance(summary, domain.DispatchSummary)
    return summary


@pytest.mark.parametrize("error", [SystemExit(3), KeyboardInterrupt()], ids=["SystemExit", "KeyboardInterrupt"])
def test_an_async_task_raising_a_base_exception_fails_its_run_and_the_next_async_runs_succeed(backend: Backend, error: BaseException) -> None:
    """Given three due users whose async task raises SystemExit/KeyboardInterrupt for the first,
    when a sync pass runs and then a second one, then that run is failed and every other async run
    of the process, in this pass and the next, succeeds on the same event loop."""
    import asyncio

    backend.add_schedules(3, interval=1, spread_ms=10, due_at=T0 - timedelta(minutes=1))
    loops: set[int] = set()

    async def task(user_id, context):
        await asyncio.sleep(0)
        loops.add(id(asyncio.get_running_loop()))
        if user_id == "user-000000" and context.attempt == 1 and not backend.runs(user_id):
            raise error

    dispatcher, _, _ = make_dispatcher(backend, task=task, JOB_TIMEOUT=5)
    summary = _tick_within(dispatcher, 20)
    backend.clock.advance(minutes=2)
    again = _tick_within(dispatcher, 20)

    assert (summary.claimed, summary.failed, summary.succeeded) == (3, 1, 2)
    assert (again.claimed, again.failed, again.succeeded) == (3, 0, 3)
    assert [r.status for r in backend.runs("user-000000")] == ["failed", "succeeded"]
    assert type(error).__name__ in (backend.runs("user-000000")[0].error or "")
    assert len(loops) == 1, "the one event loop survived"


def test_a_sync_mode_task_past_job_timeout_is_failed_the_pass_goes_on_and_its_late_result_is_refused(backend: Backend) -> None:
    """Given three due users whose first sync task never returns (until released), when a sync pass
    runs with JOB_TIMEOUT 1 s, then that run is recorded failed (timed out) after about 1 s, its
    user moves on, the other two run, and the task's late result is recorded stale."""
    import threading

    backend.add_schedules(3, interval=5, spread_ms=10, due_at=T0 - timedelta(minutes=1))
    release = threading.Event()

    def task(user_id, context):
        if user_id == "user-000000":
            release.wait(30)

    dispatcher, _, _ = make_dispatcher(backend, task=task, JOB_TIMEOUT=1)
    summary = _tick_within(dispatcher, 15)

    assert (summary.claimed, summary.failed, summary.succeeded) == (3, 1, 2)
    row = backend.schedule("user-000000")
    assert (row.last_status, row.locked_by) == ("failed", None), "the user moves on"
    assert "timed out" in (row.last_error or "")
    release.set()
    deadline = time.monotonic() + 10
    while len(backend.runs("user-000000")) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [r.status for r in backend.runs("user-000000")] == ["failed", "stale"]
    assert backend.schedule("user-000000") == row, "the late result changes nothing"


def test_an_async_sync_mode_task_past_job_timeout_is_cancelled(backend: Backend) -> None:
    import asyncio

    backend.add_schedules(2, interval=5, spread_ms=10, due_at=T0 - timedelta(minutes=1))
    cancelled: list[str] = []

    async def task(user_id, context):
        if user_id == "user-000000":
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.append(user_id)
                raise

    dispatcher, _, _ = make_dispatcher(backend, task=task, JOB_TIMEOUT=1)
    summary = _tick_within(dispatcher, 15)

    assert (summary.claimed, summary.failed, summary.succeeded) == (2, 1, 1)
    assert cancelled == ["user-000000"]
    assert backend.runs("user-000000")[0].status == "failed"


def test_an_async_task_blocking_the_event_loop_is_named_in_a_warning(backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    """Given an async task that calls time.sleep (a blocking call inside `async def`), when it runs
    with TASK_LOOP_STALL_WARNING 0.2 s, then a WARNING names the run (user id and lease token) that
    blocked the loop, and another says when the loop answered again."""
    backend.add_schedules(1)

    async def blocking_task(user_id, context):
        time.sleep(0.8)  # what task authors must not do: it stops every async run of the process

    dispatcher, _, _ = make_dispatcher(backend, task=blocking_task, TASK_LOOP_STALL_WARNING=0.2)
    with caplog.at_level(logging.WARNING, logger="core.event_loop"):
        summary = _tick_within(dispatcher, 20)
        deadline = time.monotonic() + 5
        while not any("answered again" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.01)

    assert summary.succeeded == 1
    [run] = backend.runs("user-000000")
    messages = [r.getMessage() for r in caplog.records if r.name == "core.event_loop"]
    blocked = [m for m in messages if "event loop blocked" in m]
    assert blocked and f"user=user-000000 token={run.lease_token}" in blocked[0], messages
    assert any("answered again" in m and "user=user-000000" in m for m in messages), messages
