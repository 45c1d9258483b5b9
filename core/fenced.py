"""The fenced writes of a run: start, renew, finish, progress. Each is conditional on
`lockedBy = token`, and the row count says whether the run still holds its lease (zero rows: the
lease was taken over or released, nothing was written).

The claims that hand out leases are in core.claims. Callers pass the connection (inside the
transaction they own); "now" is the clock's SQL expression (`Clock.sql_now`), so a statement
reads the decision clock without a round trip of its own. Nothing here commits.

Each statement is built once per clock expression (a clock returns one expression object per
offset): constructing a statement per call (argument coercion, cache keys) was ~20% of a short
run (scripts/bench/profile_sync_path.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Protocol

from sqlalchemy import Boolean, Connection, Select, Update, bindparam, case, func, select, true, update
from sqlalchemy.sql.elements import ColumnElement

from core.calendar import ScheduleRule, stored_rule
from core.clock import to_ms_precision
from core.domain import RunStatus, truncate_error
from schema.models import schedules

s = schedules.c

SqlTime = ColumnElement[datetime]  # a clock's "now" (+ offset) inside a statement


def _fenced() -> Update:
    return update(schedules).where(s.userId == bindparam("uid"), s.lockedBy == bindparam("token"))


@lru_cache(maxsize=32)
def _start_run(until: SqlTime, now: SqlTime) -> Update:
    return _fenced().values(lockedUntil=until, nextRunAt=until, runStartedAt=now)


@lru_cache(maxsize=32)
def _renew_lease(until: SqlTime) -> Update:
    return _fenced().values(lockedUntil=until, nextRunAt=until)


_RULE_COLUMNS = (s.intervalMinutes, s.cronExpr, s.timeZone, s.spreadSeconds)  # what the next slot depends on
# What the retry and pause decision (core.outcome) depends on: read in the same locking read.
_POLICY_COLUMNS = (s.retries, s.retryBackoffSeconds, s.pauseAfter, s.failedSlots)


@lru_cache(maxsize=32)
def _lock_if_leased(now: SqlTime) -> Select[Any]:
    return (
        select(*_RULE_COLUMNS, *_POLICY_COLUMNS, now.label("now"))
        .where(s.userId == bindparam("uid"), s.lockedBy == bindparam("token"))
        .with_for_update()
    )


@lru_cache(maxsize=32)
def _set_progress(at: SqlTime) -> Update:
    return _fenced().values(progress=bindparam("progress"), progressMessage=bindparam("message"), progressAt=at)


_FINAL = bindparam("final", type_=Boolean())  # the slot ends with this run (else: a retry is pending)
_PAUSED_REASON = bindparam("paused_reason", type_=s.pausedReason.type)  # not NULL: this slot pauses the schedule

_FINISH_RUN = _fenced().values(
    lastRunAt=bindparam("started_at"),
    # lastStatus/lastError are the slot's final outcome: a failed attempt that is retried leaves them.
    lastStatus=case((_FINAL == true(), bindparam("status")), else_=s.lastStatus),
    lastError=case((_FINAL == true(), bindparam("error")), else_=s.lastError),
    nextRunAt=bindparam("next_run_at"), lockedBy=None, lockedUntil=None, updatedAt=bindparam("now"),
    retrying=bindparam("retrying", type_=Boolean()), failedSlots=bindparam("failed_slots"),
    paused=case((_PAUSED_REASON.is_(None), s.paused), else_=true()),
    pausedAt=case((_PAUSED_REASON.is_(None), s.pausedAt), else_=bindparam("now")),
    pausedReason=func.coalesce(_PAUSED_REASON, s.pausedReason),
    # The run's last progress, when it was not written yet (throttled); NULL keeps what is there.
    progress=func.coalesce(bindparam("progress", type_=s.progress.type), s.progress),
    progressMessage=func.coalesce(bindparam("progress_message", type_=s.progressMessage.type), s.progressMessage),
    progressAt=func.coalesce(bindparam("progress_at", type_=s.progressAt.type), s.progressAt),
)


def start_run(conn: Connection, *, user_id: str, token: str, lease_until: SqlTime, now: SqlTime) -> bool:
    """The run begins: renew the lease from now (the queue wait may have used much of it) and note
    when it started (the run is no longer waiting), in one statement fenced on the token."""
    return conn.execute(_start_run(lease_until, now), {"uid": user_id, "token": token}).rowcount == 1


def renew_lease(conn: Connection, *, user_id: str, token: str, lease_until: SqlTime) -> bool:
    """Extend a lease this token still holds (even if it ran out, as long as nobody took it)."""
    return conn.execute(_renew_lease(lease_until), {"uid": user_id, "token": token}).rowcount == 1


@dataclass(frozen=True)
class Leased:
    """A leased row as its finish reads it (locked): its rule, its own retry columns (None: the
    settings' default), its count of failed slots, and the decision clock's now."""

    rule: ScheduleRule
    now: datetime
    retries: int | None
    retry_backoff_seconds: int | None
    pause_after: int | None
    failed_slots: int


def lock_if_leased(conn: Connection, *, user_id: str, token: str, now: SqlTime) -> Leased | None:
    """The row, locked, if `token` still holds its lease; "now" is read in the same round trip."""
    row = conn.execute(_lock_if_leased(now), {"uid": user_id, "token": token}).first()
    if row is None:
        return None
    return Leased(_rule(user_id, row), _as_datetime(row.now), row.retries, row.retryBackoffSeconds, row.pauseAfter, row.failedSlots)


class _RuleRow(Protocol):
    intervalMinutes: int
    cronExpr: str | None
    timeZone: str
    spreadSeconds: int


def _rule(user_id: str, row: _RuleRow) -> ScheduleRule:
    return stored_rule(user_id=user_id, interval_minutes=row.intervalMinutes, cron_expr=row.cronExpr,
                       time_zone=row.timeZone, spread_seconds=row.spreadSeconds)


def _as_datetime(value: datetime | str) -> datetime:
    # A clock given as a bound value (process or test clock) comes back as text from some drivers.
    return to_ms_precision(value if isinstance(value, datetime) else datetime.fromisoformat(value))


def finish_run(
    conn: Connection,
    *,
    user_id: str,
    token: str,
    started_at: datetime,
    status: RunStatus,
    error: str | None,
    next_run_at: datetime,
    now: datetime,
    progress: tuple[float, str] | None = None,
    retrying: bool = False,
    failed_slots: int = 0,
    paused_reason: str | None = None,
) -> bool:
    """Record the outcome, move to the next slot (or the retry: `retrying`) and release the
    lease, in one fenced write: core.outcome.settle decided, from what `lock_if_leased` read, what
    `status`, `next_run_at`, `failed_slots` and `paused_reason` are. A retry keeps the row's slot
    (runSlot) and leaves lastStatus/lastError (they are the last slot's final outcome); a
    `paused_reason` pauses the schedule from `now`. `now` is the value `lock_if_leased` read.
    `progress` is the run's last (fraction, message) when the throttle had not written it yet: it
    lands in the same statement (the schedule keeps a run's last progress after the run).
    False means the lease was lost: nothing was written."""
    fraction, message = progress if progress is not None else (None, None)
    result = conn.execute(
        _FINISH_RUN,
        {
            "uid": user_id, "token": token, "started_at": started_at, "status": status.value,
            "error": truncate_error(error), "next_run_at": next_run_at, "now": now,
            "progress": fraction, "progress_message": message or None,
            "progress_at": now if progress is not None else None,
            "final": not retrying, "retrying": retrying, "failed_slots": failed_slots,
            "paused_reason": truncate_error(paused_reason),
        },
    )
    return result.rowcount == 1


def set_progress(conn: Connection, *, user_id: str, token: str, fraction: float, message: str, now: SqlTime) -> bool:
    """Store a running run's progress, fenced on its token: a stale run (lease taken over or
    released) writes nothing and learns it from the False. An empty message is stored as NULL."""
    params = {"uid": user_id, "token": token, "progress": fraction, "message": message or None}
    return conn.execute(_set_progress(now), params).rowcount == 1
