"""When a run fails (issue 17), told as stories on SQLite and MariaDB alike, on a fixed clock.

Given a schedule with retries, a backoff and a pause threshold, when sync passes tick at the times
the schedule says, then each attempt is its own history row in one slot, spaced by the backoff;
the slot's final outcome is lastStatus; failed slots are counted and pause the schedule; the
task's result is stored with its run.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from sqlalchemy import event, update

from core import claims
from core.calendar import upcoming_slots
from core.domain import ClaimedRun, DispatchSummary, RunStatus, Trigger
from core.exceptions import PermanentError
from core.executor import Runner
from core.retry import RetryPolicy, effective_retry_policy
from core.tasks import RESULT_LIMIT, RunContext, decode_result
from dispatcher.service import DispatchPolicy, Dispatcher
from dispatcher.sinks import InlineSink
from schema.models import schedules
from services.schedules import Schedules
from tests.conftest import T0, Backend

Task = Callable[[str, RunContext], object]
LEASE = timedelta(minutes=15)  # DISPATCH_LOCK_TTL's default


def sync_dispatcher(backend: Backend, task: Task, **settings: object) -> Dispatcher:
    cfg = backend.settings(**settings)
    runner = Runner(backend.engine, cfg, backend.clock, task, worker_name="test")
    return Dispatcher(backend.engine, backend.clock, DispatchPolicy.from_settings(cfg), InlineSink(runner, time_budget=cfg.SYNC_TIME_BUDGET))


def set_policy(backend: Backend, user_id: str, **columns: object) -> None:
    """The schedule's own retries/retryBackoffSeconds/pauseAfter, written as an operator's SQL would."""
    with backend.engine.begin() as conn:
        conn.execute(update(schedules).where(schedules.c.userId == user_id).values(**columns))


class FailsUntil:
    """Fails attempts before `succeeds_at` (with RuntimeError), then returns `result`; records the
    attempts it saw."""

    def __init__(self, succeeds_at: int | None, result: object = None) -> None:
        self.succeeds_at, self.result = succeeds_at, result
        self.attempts: list[tuple[datetime, int]] = []

    def __call__(self, user_id: str, context: RunContext) -> object:
        self.attempts.append((context.slot, context.attempt))
        if self.succeeds_at is None or context.attempt < self.succeeds_at:
            raise RuntimeError(f"flaky site, attempt {context.attempt}")
        return self.result


def claim(backend: Backend, token: str) -> list[ClaimedRun]:
    now = backend.clock.moment
    with backend.engine.begin() as conn:
        return claims.claim_due(conn, now=now, limit=10, token=token, lease_until=now + LEASE, trigger=Trigger.SCHEDULE).claimed


def test_a_task_failing_twice_then_succeeding_runs_three_attempts_in_one_slot_spaced_by_the_backoff(backend: Backend) -> None:
    [user] = backend.add_schedules(1, interval=60)
    set_policy(backend, user, retries=2, retryBackoffSeconds=30)
    task = FailsUntil(3, result={"checked": 12, "alerts": 1})
    dispatcher = sync_dispatcher(backend, task)
    statements: list[int] = []

    def tick() -> DispatchSummary:
        """A pass, counting the statements it sends (the hot path's cost, with or without a retry)."""
        sent = [0]

        def count(*args: object) -> None:
            sent[0] += 1

        event.listen(backend.engine, "before_cursor_execute", count)
        try:
            return dispatcher.tick()
        finally:
            event.remove(backend.engine, "before_cursor_execute", count)
            statements.append(sent[0])

    assert tick().failed == 1
    first_retry = backend.schedule(user)
    assert (first_retry.retrying, first_retry.run_slot, first_retry.attempt, first_retry.locked_by) == (True, T0, 1, None)
    assert (first_retry.last_status, first_retry.last_error) == (None, None), "lastStatus waits for the slot's final outcome"
    assert T0 + timedelta(seconds=30) <= first_retry.next_run_at <= T0 + timedelta(seconds=37.5), "the backoff, plus up to 25% jitter"
    assert upcoming_slots(first_retry, T0, 2) == [T0 + timedelta(minutes=60), T0 + timedelta(minutes=120)], "a retry is no slot"

    backend.clock.moment = first_retry.next_run_at - timedelta(milliseconds=1)
    assert dispatcher.tick().claimed == 0, "a retry never starts before its backoff is over"
    backend.clock.moment = first_retry.next_run_at
    assert tick().failed == 1
    second_retry = backend.schedule(user)
    assert (second_retry.retrying, second_retry.attempt) == (True, 2)
    assert second_retry.next_run_at >= backend.clock.moment + timedelta(seconds=60), "the second wait doubles"

    backend.clock.moment = second_retry.next_run_at
    assert tick().succeeded == 1
    # (The first pass of a process also prunes capacity samples: the second and third compare.)
    assert statements[1] == statements[2], f"planning a retry costs no statement more than a success: {statements}"

    history = backend.runs(user)
    assert [(r.slot, r.attempt, r.status) for r in history] == [(T0, 1, "failed"), (T0, 2, "failed"), (T0, 3, "succeeded")]
    assert task.attempts == [(T0, 1), (T0, 2), (T0, 3)]
    assert history[1].finished_at - history[0].finished_at >= timedelta(seconds=30)
    assert history[2].finished_at - history[1].finished_at >= timedelta(seconds=60)
    assert decode_result(history[2].result) == ({"checked": 12, "alerts": 1}, None)
    assert history[0].result is None, "a failed attempt (like a task returning None) stores no result"
    row = backend.schedule(user)
    assert (row.last_status, row.last_error, row.failed_slots, row.retrying) == ("succeeded", None, 0, False)
    assert row.next_run_at == T0 + timedelta(minutes=60), "the cadence goes on from the slot, not from the retry"


def test_the_settings_defaults_apply_to_a_schedule_without_its_own_values(backend: Backend) -> None:
    [user] = backend.add_schedules(1, interval=60)
    dispatcher = sync_dispatcher(backend, FailsUntil(2), DEFAULT_RETRIES=1, RETRY_BACKOFF_SECONDS=10)

    dispatcher.tick()
    backend.clock.moment = backend.schedule(user).next_run_at
    dispatcher.tick()

    assert [(r.attempt, r.status) for r in backend.runs(user)] == [(1, "failed"), (2, "succeeded")]
    assert effective_retry_policy(backend.schedule(user), backend.settings(DEFAULT_RETRIES=1, RETRY_BACKOFF_SECONDS=10)) == RetryPolicy(1, 10, 0)


def test_a_permanent_error_is_not_retried(backend: Backend) -> None:
    [user] = backend.add_schedules(1, interval=60)
    set_policy(backend, user, retries=3)

    def revoked(user_id: str, context: RunContext) -> None:
        raise PermanentError("credentials revoked")

    assert sync_dispatcher(backend, revoked).tick().failed == 1

    row = backend.schedule(user)
    assert (row.retrying, row.last_status, row.failed_slots) == (False, "failed", 1)
    assert row.last_error == "core.exceptions.PermanentError: credentials revoked"
    assert row.next_run_at == T0 + timedelta(minutes=60), "on to the next slot"
    assert [(r.attempt, r.status) for r in backend.runs(user)] == [(1, "failed")]


def test_a_retry_that_would_start_after_the_next_slot_is_dropped_and_counted(backend: Backend) -> None:
    [user] = backend.add_schedules(1, interval=1)
    set_policy(backend, user, retries=3, retryBackoffSeconds=60)

    sync_dispatcher(backend, FailsUntil(None)).tick()

    row = backend.schedule(user)
    assert (row.retrying, row.next_run_at, row.last_status, row.failed_slots) == (False, T0 + timedelta(minutes=1), "failed", 1)
    failed, dropped = backend.runs(user)
    assert (failed.attempt, failed.status) == (1, "failed")
    assert (dropped.slot, dropped.attempt, dropped.status) == (T0, 2, "dropped"), "the drop is a history row of its own"
    assert dropped.error is not None and "at or after the next slot" in dropped.error


def test_a_schedule_failing_every_slot_is_paused_after_n_slots_and_runs_again_once_resumed(backend: Backend) -> None:
    [user] = backend.add_schedules(1, interval=10)
    set_policy(backend, user, retries=1, retryBackoffSeconds=60, pauseAfter=2)
    dispatcher = sync_dispatcher(backend, FailsUntil(None))

    moments = []
    for _ in range(4):  # two slots of two attempts each
        moments.append(backend.clock.moment)
        assert dispatcher.tick().failed == 1
        backend.clock.moment = backend.schedule(user).next_run_at

    row = backend.schedule(user)
    assert (row.paused, row.failed_slots, row.last_status, row.paused_at) == (True, 2, "failed", moments[3])
    reason = "paused after 2 consecutive failed slots; last error: RuntimeError: flaky site, attempt 2"
    assert row.paused_reason == reason
    second_slot = T0 + timedelta(minutes=10)
    assert [(r.slot, r.attempt, r.status) for r in backend.runs(user)] == [
        (T0, 1, "failed"), (T0, 2, "failed"), (second_slot, 1, "failed"), (second_slot, 2, "failed"), (second_slot, 2, "paused"),
    ]
    assert backend.runs(user)[-1].error == reason, "the history keeps why"

    backend.clock.advance(hours=5)
    assert dispatcher.tick().claimed == 0, "a paused schedule is not claimed"

    # Resumed as the user's or an admin's button does: paused off, the count reset, due at the
    # next slot from now (no burst of the slots missed while paused).
    resumed = Schedules(backend.engine, backend.clock, default_interval=5).resume(user)
    assert resumed.resumed
    assert dispatcher.tick().claimed == 0, "not before its next slot"
    backend.clock.moment = backend.schedule(user).next_run_at
    assert resumed.now < backend.clock.moment <= resumed.now + timedelta(minutes=10)
    assert dispatcher.tick().failed == 1
    assert (backend.runs(user)[-1].slot, backend.runs(user)[-1].attempt) == (backend.clock.moment, 1), "a new slot, attempt 1"
    row = backend.schedule(user)
    assert (row.paused, row.failed_slots, row.retrying) == (False, 0, True), "and its retry is planned again"


def test_a_success_resets_the_count_of_failed_slots(backend: Backend) -> None:
    [user] = backend.add_schedules(1, interval=10)
    set_policy(backend, user, pauseAfter=3, failedSlots=2)

    sync_dispatcher(backend, lambda user_id, context: None).tick()

    assert (backend.schedule(user).failed_slots, backend.schedule(user).paused) == (0, False)


def test_a_stale_workers_late_result_cannot_cancel_the_retry(backend: Backend) -> None:
    [user] = backend.add_schedules(1, interval=60)
    set_policy(backend, user, retries=3, retryBackoffSeconds=30)
    cfg = backend.settings()
    [old] = claim(backend, token="old-worker")
    state: dict[str, object] = {}

    def slow_success(user_id: str, context: RunContext) -> object:
        # While this attempt hangs, its lease expires; another dispatcher takes over (attempt 2),
        # whose run fails and schedules its retry.
        backend.clock.advance(minutes=16)
        [new] = claim(backend, token="new-worker")
        state["new"] = new
        Runner(backend.engine, cfg, backend.clock, FailsUntil(None)).execute(new)
        state["retrying"] = backend.schedule(user)
        return {"late": True}

    result = Runner(backend.engine, cfg, backend.clock, slow_success).execute(old)

    assert (result.status, result.applied) == (RunStatus.STALE, False)
    retrying = state["retrying"]
    assert backend.schedule(user) == retrying, "the late success wrote nothing: the retry stands"
    assert (backend.schedule(user).retrying, backend.schedule(user).attempt) == (True, 2)
    assert [(r.lease_token, r.attempt, r.status) for r in backend.runs(user)] == [
        ("old-worker", 1, "lost"), ("new-worker", 2, "failed"), ("old-worker", 1, "stale"),
    ]
    backend.clock.moment = backend.schedule(user).next_run_at
    [retry] = claim(backend, token="retrier")
    assert (retry.slot, retry.attempt) == (T0, 3), "the retry runs as planned"


def test_a_lost_attempt_is_a_failed_attempt_and_a_slot_out_of_lost_attempts_moves_on(backend: Backend) -> None:
    # No retries: a lost attempt still gets one retry (a crash costs no slot), a second one does not.
    [user] = backend.add_schedules(1, interval=60)
    set_policy(backend, user, pauseAfter=1)
    claim(backend, token="dies-1")
    backend.clock.advance(minutes=15)
    [second] = claim(backend, token="dies-2")
    assert (second.slot, second.attempt) == (T0, 2), "the lost attempt is retried at once"

    backend.clock.advance(minutes=15)
    assert claim(backend, token="rescuer") == [], "its slot has no lost attempt left"

    row = backend.schedule(user)
    assert (row.locked_by, row.last_status, row.failed_slots, row.next_run_at) == (None, "lost", 1, T0 + timedelta(minutes=60))
    assert row.paused and row.paused_reason is not None and row.paused_reason.startswith("paused after 1 consecutive failed slots")
    assert [(r.attempt, r.status) for r in backend.runs(user)] == [(1, "lost"), (2, "lost"), (2, "paused")]


def test_unlock_retries_a_lost_attempt_with_lost_attempts_left_and_ends_the_slot_of_one_without(backend: Backend) -> None:
    users = backend.add_schedules(2, interval=60)
    set_policy(backend, users[1], retries=0)
    claim(backend, token="dies")
    with backend.engine.begin() as conn:  # the second user's lease was already taken over once
        conn.execute(update(schedules).where(schedules.c.userId == users[1]).values(attempt=2))
    backend.clock.advance(minutes=15)

    with backend.engine.begin() as conn:
        assert sorted(claims.unlock_expired(conn, now=backend.clock.moment)) == users

    first, second = backend.schedule(users[0]), backend.schedule(users[1])
    assert (first.next_run_at, first.locked_by) == (T0, None), "due again at once: retried"
    assert (second.next_run_at, second.locked_by, second.failed_slots, second.last_status) == (T0 + timedelta(minutes=60), None, 1, "lost")
    [retry] = claim(backend, token="next")
    assert (retry.user_id, retry.slot, retry.attempt) == (users[0], T0, 2)


@pytest.mark.parametrize(
    ("returned", "stored"),
    [
        ({"checked": 12, "alerts": 1}, '{"checked":12,"alerts":1}'),
        ([1, "two", 3.5], '[1,"two",3.5]'),
        ("caf\u00e9 \u202e", '"caf\\u00e9 \\u202e"'),
        ({"big": "x" * RESULT_LIMIT}, f"(not kept: {RESULT_LIMIT + 10} bytes of JSON, more than the {RESULT_LIMIT} kept)"),
        ({1, 2}, "(not kept: a set that is not JSON-serialisable: Object of type set is not JSON serializable)"),
        (float("nan"), "(not kept: a float that is not JSON-serialisable: Out of range float values are not JSON compliant"),
    ],
)
def test_the_tasks_result_is_stored_with_its_run_and_a_value_that_cannot_be_is_noted(backend: Backend, returned: object, stored: str | None) -> None:
    [user] = backend.add_schedules(1)

    assert sync_dispatcher(backend, lambda user_id, context: returned).tick().succeeded == 1, "the run succeeds whatever it returned"

    [run] = backend.runs(user)
    if stored is None or stored.endswith(("]", "}", '"', ")")):
        assert run.result == stored
    else:  # the JSON encoder's own words, which vary between Python versions
        assert run.result is not None and run.result.startswith(stored)


def test_an_async_tasks_result_is_stored(backend: Backend) -> None:
    [user] = backend.add_schedules(1)

    async def checked(user_id: str, context: RunContext) -> object:
        return {"user": user_id, "attempt": context.attempt}

    sync_dispatcher(backend, checked).tick()

    assert decode_result(backend.runs(user)[0].result) == ({"user": user, "attempt": 1}, None)
