"""The lease protocol: claim, renew, finish, release. Conditional writes are the locks.

Callers pass the connection (inside the transaction they own) and "now" explicitly; nothing here
reads a clock or commits.

- `claim_due`: the due rows, oldest first, over the (enabled, nextRunAt) index with
  `FOR UPDATE SKIP LOCKED` (MySQL/MariaDB; on SQLite the transaction is BEGIN IMMEDIATE and so
  already exclusive), one UPDATE that gives each a lease and moves `nextRunAt` to the lease
  expiry (out of the due range), then one read of what that UPDATE wrote (the slot/attempt rule
  lives in the UPDATE alone).
- `renew_lease` / `finish_run` / `release_leases`: conditional writes fenced on `lockedBy = token`;
  the row count decides whether the caller still holds the lease.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Protocol

from sqlalchemy import (
    Connection,
    Select,
    Update,
    and_,
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.sql.elements import ColumnElement

from core.calendar import ScheduleRule, stored_rule
from core.clock import to_ms_precision, utc_text
from core.domain import ClaimedRun, RunRecord, RunStatus, Trigger, truncate_error
from core.writes import insert_runs
from schema.models import schedules

s = schedules.c


def new_lease_token() -> str:
    """Unique per claim batch; says which host and process holds a lease (≤ 64 chars)."""
    return f"{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:16]}"


def lease_until(now: datetime, lease_ms: int) -> datetime:
    return now + timedelta(milliseconds=lease_ms)


def lease_is_free(now: datetime) -> ColumnElement[bool]:
    return or_(s.lockedUntil.is_(None), s.lockedUntil <= now)


# --- claiming -------------------------------------------------------------------------------------


def due_rows_query(now: datetime, limit: int) -> Select[Any]:
    """The due query. Exposed so a test can EXPLAIN exactly what the dispatcher runs."""
    return (
        select(s.userId, s.nextRunAt, s.lockedBy, s.lockedUntil, s.runSlot, s.attempt)
        # Pin the plan: on a small or freshly loaded table the optimizer may prefer a scan plus
        # filesort, and with SKIP LOCKED that locks every row it scans.
        .with_hint(schedules, "FORCE INDEX (ix_UserMonitorSchedule_due)", "mysql")
        .where(s.enabled == true(), s.nextRunAt <= now, lease_is_free(now))
        .order_by(s.nextRunAt)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


# A claimed run has not started yet: no start time, no progress (the previous run's are cleared).
_NOT_STARTED = ((s.runStartedAt, None), (s.progress, None), (s.progressMessage, None), (s.progressAt, None))


def _take_lease(token: str, lease_until: datetime, now: datetime) -> Update:
    # The slot/attempt rule, written once (claim_due reads the result back):
    #   a takeover of an expired lease retries the same slot (attempt + 1);
    #   a row released without running (nextRunAt back at runSlot) retries it too;
    #   otherwise nextRunAt is a new slot, attempt 1.
    # MySQL evaluates SET assignments left to right, each seeing the ones before it; SQLite sees
    # the old row in all of them. Ordering them so that every CASE runs before the columns it reads
    # are overwritten makes both agree.
    retry = or_(s.lockedBy.is_not(None), s.runSlot == s.nextRunAt)
    return (
        update(schedules)
        .where(s.userId.in_(bindparam("claim_ids", expanding=True)))
        .ordered_values(
            (s.attempt, case((retry, s.attempt + 1), else_=literal(1))),
            (s.runSlot, case((s.lockedBy.is_not(None), func.coalesce(s.runSlot, s.nextRunAt)), else_=s.nextRunAt)),
            (s.lockedBy, token),
            (s.lockedUntil, lease_until),
            (s.nextRunAt, lease_until),
            (s.updatedAt, now),
            *_NOT_STARTED,
        )
        .execution_options(synchronize_session=False)
    )


# Parking extends an expired lease under its holder's token; the run's place (its job in the
# queue, its slot and attempt) is unchanged.
_EXTEND_EXPIRED = (
    update(schedules)
    .where(s.userId.in_(bindparam("parked_ids", expanding=True)), s.lockedBy.is_not(None))
    .values(lockedUntil=bindparam("until"), nextRunAt=bindparam("until"), updatedAt=bindparam("now"))
)
_LEASED_ROWS = (
    select(s.userId, s.lockedBy, s.lockedUntil, s.runSlot, s.attempt, s.nextRunAt)
    .where(s.userId.in_(bindparam("ids", expanding=True)))
    .with_for_update()
)

# The read-back goes through the primary key (userId IN ...), so it costs the same on any table size.
_CLAIMED_BY = select(s.userId, s.runSlot, s.attempt).where(
    s.userId.in_(bindparam("claimed_ids", expanding=True)), s.lockedBy == bindparam("token")
)


@dataclass(frozen=True)
class Claim:
    """What one claim transaction took: runs leased to the claimer, and (when asked to park them)
    runs whose lease had expired, left with their holder's token and a lease extended by one TTL
    until the caller has asked the queue whether their job still lives (see `take_over`)."""

    claimed: list[ClaimedRun]
    parked: list[ClaimedRun]

    @property
    def rows(self) -> int:
        return len(self.claimed) + len(self.parked)


def claim_due(
    conn: Connection, *, now: datetime, limit: int, token: str, lease_until: datetime, trigger: Trigger, park_expired: bool = False,
) -> Claim:
    """Lease up to `limit` due rows, oldest nextRunAt first.

    A due row whose lease expired is either taken over at once (recorded as a lost run in the same
    transaction), or, with `park_expired`, parked: its lease is extended to `lease_until` under its
    holder's token, so the claimer can ask the queue, outside this transaction, whether the job is
    still waiting there (it keeps its place) or really gone (`take_over`). A queue that holds
    jobs longer than a lease therefore never loses them, and the normal path (no expired lease)
    costs no call to the queue.
    """
    rows = conn.execute(due_rows_query(now, limit)).all()
    if not rows:
        return Claim([], [])
    expired = [r for r in rows if r.lockedBy is not None]
    parked: list[ClaimedRun] = []
    if park_expired and expired:
        conn.execute(_EXTEND_EXPIRED, {"parked_ids": [r.userId for r in expired], "until": lease_until, "now": now})
        parked = [ClaimedRun(r.userId, r.runSlot or r.nextRunAt, r.attempt, r.lockedBy, Trigger.SCHEDULE, now) for r in expired]
        rows = [r for r in rows if r.lockedBy is None]
        if not rows:
            return Claim([], parked)
    ids = [r.userId for r in rows]
    conn.execute(_take_lease(token, lease_until, now), {"claim_ids": ids})
    written = {r.userId: r for r in conn.execute(_CLAIMED_BY, {"claimed_ids": ids, "token": token})}
    lost = [r for r in rows if r.lockedBy is not None]
    if lost:
        _record_lost(conn, lost, now=now)
    claimed = [
        ClaimedRun(user_id, written[user_id].runSlot, written[user_id].attempt, token, trigger, now)
        for user_id in ids  # the due query's order: oldest first
    ]
    return Claim(claimed, parked)


def take_over(
    conn: Connection, *, parked: Sequence[ClaimedRun], token: str, lease_until: datetime, trigger: Trigger, now: datetime
) -> list[ClaimedRun]:
    """Take the parked runs whose job is gone from the queue: fenced on the holder's token (a
    worker that started the job meanwhile renewed the lease and keeps it), recorded as lost once,
    retried in the same slot (attempt + 1)."""
    if not parked:
        return []
    by_id = {run.user_id: run for run in parked}
    rows = conn.execute(_LEASED_ROWS, {"ids": list(by_id)}).all()
    still_parked = [r for r in rows if r.lockedBy is not None and r.lockedBy == by_id[r.userId].token]
    if not still_parked:
        return []
    ids = [r.userId for r in still_parked]
    conn.execute(_take_lease(token, lease_until, now), {"claim_ids": ids})
    written = {r.userId: r for r in conn.execute(_CLAIMED_BY, {"claimed_ids": ids, "token": token})}
    _record_lost(conn, still_parked, now=now)
    return [
        ClaimedRun(run.user_id, written[run.user_id].runSlot, written[run.user_id].attempt, token, trigger, now)
        for run in parked if run.user_id in written
    ]


def claim_user(
    conn: Connection, *, user_id: str, now: datetime, token: str, lease_until: datetime, trigger: Trigger,
    cooldown: timedelta | None = None,
) -> ClaimedRun | None:
    """Lease one user for a run now, whatever its nextRunAt; None when it is unknown or leased,
    or, with `cooldown` (a user's own "Run now"), when the user's last such run was claimed less
    than `cooldown` ago; such a claim notes its time in manualRunAt, in the same UPDATE.

    The run's slot is `now`: a manual run restarts the user's cadence from the moment it ran.
    """
    admitted = lease_is_free(now)
    noted: dict[str, datetime] = {}
    if cooldown is not None:
        # A condition of the claim itself, not a read before it: of two racing requests, one is admitted.
        admitted = and_(admitted, or_(s.manualRunAt.is_(None), s.manualRunAt <= now - cooldown))
        noted = {"manualRunAt": now}
    row = conn.execute(
        select(s.userId, s.lockedBy, s.lockedUntil, s.runSlot, s.attempt, s.nextRunAt)
        .where(s.userId == user_id, admitted)
        .with_for_update()
    ).first()
    if row is None:
        return None
    conn.execute(
        update(schedules)
        .where(s.userId == user_id, admitted)
        .values(runSlot=now, attempt=1, lockedBy=token, lockedUntil=lease_until, nextRunAt=lease_until, updatedAt=now,
                **noted, **{c.name: v for c, v in _NOT_STARTED})
    )
    if row.lockedBy is not None:
        _record_lost(conn, [row], now=now)
    return ClaimedRun(user_id, now, 1, token, trigger, now)


class _LeasedRow(Protocol):
    """The columns of a row whose lease is recorded as lost (the claim and unlock reads select them)."""

    userId: str
    lockedBy: str | None
    lockedUntil: datetime | None
    runSlot: datetime | None
    attempt: int
    nextRunAt: datetime


def _record_lost(conn: Connection, rows: Sequence[_LeasedRow], *, now: datetime) -> None:
    records = [
        RunRecord(
            user_id=r.userId,
            trigger=Trigger.SCHEDULE,
            slot=r.runSlot or r.nextRunAt,
            attempt=r.attempt,
            lease_token=r.lockedBy,
            status=RunStatus.LOST,
            error=f"lease {r.lockedBy} expired at {utc_text(r.lockedUntil, sep=' ')} without a result "
            "(worker died or was stopped)",
            skipped_slots=0,
            enqueued_at=None,
            started_at=None,
            finished_at=now,
            duration_ms=None,
            worker=None,
        )
        for r in rows
    ]
    insert_runs(conn, records)
    conn.execute(
        update(schedules)
        .where(s.userId.in_(bindparam("lost_ids", expanding=True)))
        .values(lastStatus=RunStatus.LOST.value, lastError=bindparam("lost_error")),
        {"lost_ids": [r.userId for r in rows], "lost_error": "previous run lost: lease expired without a result"},
    )


# --- fenced writes --------------------------------------------------------------------------------


def release_leases(conn: Connection, *, user_ids: Sequence[str], token: str) -> int:
    """Give back leases that never ran: the rows are due again at once (nextRunAt = runSlot)."""
    if not user_ids:
        return 0
    result = conn.execute(
        update(schedules)
        .where(s.userId.in_(bindparam("release_ids", expanding=True)), s.lockedBy == token)
        .values(lockedBy=None, lockedUntil=None, nextRunAt=func.coalesce(s.runSlot, s.nextRunAt)),
        {"release_ids": list(user_ids)},
    )
    return result.rowcount


# The run path's statements are built once: constructing a statement per call (argument coercion,
# cache keys) was ~20% of a short run (scripts/bench/profile_sync_path.py). A "now" that is a SQL
# expression (the database clock) gets its statement built once per expression; a plain datetime
# (process or test clock) is a parameter.

_RENEW_LEASE = (
    update(schedules)
    .where(s.userId == bindparam("uid"), s.lockedBy == bindparam("token"))
    .values(lockedUntil=bindparam("until"), nextRunAt=bindparam("until"))
)
_RULE_COLUMNS = (s.intervalMinutes, s.cronExpr, s.timeZone, s.spreadSeconds)
_LOCK_IF_LEASED = select(*_RULE_COLUMNS).where(s.userId == bindparam("uid"), s.lockedBy == bindparam("token")).with_for_update()
_FINISH_RUN = (
    update(schedules)
    .where(s.userId == bindparam("uid"), s.lockedBy == bindparam("token"))
    .values(
        lastRunAt=bindparam("started_at"), lastStatus=bindparam("status"), lastError=bindparam("error"),
        nextRunAt=bindparam("next_run_at"), lockedBy=None, lockedUntil=None, updatedAt=bindparam("now"),
        # The run's last progress, when it was not written yet (throttled); NULL keeps what is there.
        progress=func.coalesce(bindparam("progress", type_=s.progress.type), s.progress),
        progressMessage=func.coalesce(bindparam("progress_message", type_=s.progressMessage.type), s.progressMessage),
        progressAt=func.coalesce(bindparam("progress_at", type_=s.progressAt.type), s.progressAt),
    )
)


_START_RUN = (
    update(schedules)
    .where(s.userId == bindparam("uid"), s.lockedBy == bindparam("token"))
    .values(lockedUntil=bindparam("until"), nextRunAt=bindparam("until"), runStartedAt=bindparam("now"))
)


@lru_cache(maxsize=32)
def _start_run_with(until: ColumnElement[datetime], now: ColumnElement[datetime]) -> Update:
    return (
        update(schedules)
        .where(s.userId == bindparam("uid"), s.lockedBy == bindparam("token"))
        .values(lockedUntil=until, nextRunAt=until, runStartedAt=now)
    )


def start_run(
    conn: Connection, *, user_id: str, token: str, lease_until: datetime | ColumnElement[datetime], now: datetime | ColumnElement[datetime]
) -> bool:
    """The run begins: renew the lease from now (the queue wait may have used much of it) and note
    when it started (the run is no longer waiting), in one statement fenced on the token."""
    if isinstance(lease_until, datetime) and isinstance(now, datetime):
        result = conn.execute(_START_RUN, {"uid": user_id, "token": token, "until": lease_until, "now": now})
    elif not isinstance(lease_until, datetime) and not isinstance(now, datetime):
        result = conn.execute(_start_run_with(lease_until, now), {"uid": user_id, "token": token})
    else:
        raise TypeError("lease_until and now come from one clock: both values or both SQL expressions")
    return result.rowcount == 1


@lru_cache(maxsize=32)
def _renew_lease_with(until: ColumnElement[datetime]) -> Update:
    return (
        update(schedules)
        .where(s.userId == bindparam("uid"), s.lockedBy == bindparam("token"))
        .values(lockedUntil=until, nextRunAt=until)
    )


@lru_cache(maxsize=32)
def _lock_if_leased_with(now: ColumnElement[datetime]) -> Select[Any]:
    return select(*_RULE_COLUMNS, now.label("now")).where(s.userId == bindparam("uid"), s.lockedBy == bindparam("token")).with_for_update()


def renew_lease(conn: Connection, *, user_id: str, token: str, lease_until: datetime | ColumnElement[datetime]) -> bool:
    """Extend a lease this token still holds (even if it ran out, as long as nobody took it).
    `lease_until` may be a clock expression (Clock.sql_now), saving a round trip for "now"."""
    if isinstance(lease_until, datetime):
        result = conn.execute(_RENEW_LEASE, {"uid": user_id, "token": token, "until": lease_until})
    else:
        result = conn.execute(_renew_lease_with(lease_until), {"uid": user_id, "token": token})
    return result.rowcount == 1


def lock_if_leased(conn: Connection, *, user_id: str, token: str, now: datetime | ColumnElement[datetime]) -> tuple[ScheduleRule, datetime] | None:
    """(the schedule's rule, now) with the row locked, if `token` still holds its lease; a clock
    expression for "now" is read in the same round trip."""
    params = {"uid": user_id, "token": token}
    if isinstance(now, datetime):
        row = conn.execute(_LOCK_IF_LEASED, params).first()
        return None if row is None else (_rule(user_id, row), now)
    row = conn.execute(_lock_if_leased_with(now), params).first()
    return None if row is None else (_rule(user_id, row), _as_datetime(row.now))


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
) -> bool:
    """Record the outcome, move to the next slot and release the lease, in one fenced write.
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
        },
    )
    return result.rowcount == 1


# --- progress (fenced, like every write of a run) --------------------------------------------------

_SET_PROGRESS = (
    update(schedules)
    .where(s.userId == bindparam("uid"), s.lockedBy == bindparam("token"))
    .values(progress=bindparam("progress"), progressMessage=bindparam("message"), progressAt=bindparam("at"))
)


@lru_cache(maxsize=32)
def _set_progress_with(at: ColumnElement[datetime]) -> Update:
    return (
        update(schedules)
        .where(s.userId == bindparam("uid"), s.lockedBy == bindparam("token"))
        .values(progress=bindparam("progress"), progressMessage=bindparam("message"), progressAt=at)
    )


def set_progress(
    conn: Connection, *, user_id: str, token: str, fraction: float, message: str, now: datetime | ColumnElement[datetime]
) -> bool:
    """Store a running run's progress, fenced on its token: a stale run (lease taken over or
    released) writes nothing and learns it from the False. An empty message is stored as NULL."""
    params: dict[str, object] = {"uid": user_id, "token": token, "progress": fraction, "message": message or None}
    if isinstance(now, datetime):
        result = conn.execute(_SET_PROGRESS, {**params, "at": now})
    else:
        result = conn.execute(_set_progress_with(now), params)
    return result.rowcount == 1


def unlock_expired(conn: Connection, *, now: datetime) -> list[str]:
    """Release every expired lease, recording the lost runs; the rows are due again at once."""
    rows = conn.execute(
        select(s.userId, s.lockedBy, s.lockedUntil, s.runSlot, s.attempt, s.nextRunAt)
        .where(s.lockedBy.is_not(None), s.lockedUntil <= now)
        .with_for_update(skip_locked=True)
    ).all()
    if not rows:
        return []
    _record_lost(conn, rows, now=now)
    ids = [r.userId for r in rows]
    conn.execute(
        update(schedules)
        .where(s.userId.in_(bindparam("unlock_ids", expanding=True)), s.lockedUntil <= now)
        .values(lockedBy=None, lockedUntil=None, nextRunAt=func.coalesce(s.runSlot, s.nextRunAt), updatedAt=now),
        {"unlock_ids": ids},
    )
    return ids
