"""Every SQL statement the project runs, for both tables, in one module.

Callers pass the connection (inside the transaction they own) and "now" explicitly; nothing here
reads a clock or commits. The statements that carry the design:

- `claim_due`: the due rows, oldest first, over the (enabled, nextRunAt) index with
  `FOR UPDATE SKIP LOCKED` (MySQL/MariaDB; on SQLite the transaction is BEGIN IMMEDIATE and so
  already exclusive), then one UPDATE that gives each a lease and moves `nextRunAt` to the lease
  expiry, out of the due range.
- `renew_lease` / `finish_run` / `release_leases`: conditional writes fenced on `lockedBy = token`;
  the row count decides whether the caller still holds the lease.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    case,
    delete,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    update,
)

from sqlalchemy.sql.elements import ColumnElement

from monitor_scheduler.clock import to_ms_precision
from schema.models import runs, schedules, status

s = schedules.c

ERROR_TEXT_LIMIT = 2000


class Trigger(StrEnum):
    SCHEDULE = "schedule"
    MANUAL = "manual"
    SYNC = "sync"


class RunStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # the job started without its lease (taken over or released): nothing ran
    LOST = "lost"  # the lease expired without a result: the worker died or was stopped
    STALE = "stale"  # the task ran, but the lease was lost before its result could be written


class ScheduleFilter(StrEnum):
    DUE = "due"
    RUNNING = "running"
    FAILING = "failing"
    DISABLED = "disabled"
    STALE = "stale"


@dataclass(frozen=True)
class ClaimedRun:
    """A run this process holds the lease for: enough to execute it and to fence its writes."""

    user_id: str
    slot: datetime
    attempt: int
    token: str
    trigger: Trigger
    claimed_at: datetime


@dataclass(frozen=True)
class Schedule:
    user_id: str
    enabled: bool
    interval_minutes: int
    next_run_at: datetime
    last_run_at: datetime | None
    last_status: str | None
    last_error: str | None
    locked_until: datetime | None
    locked_by: str | None
    run_slot: datetime | None
    attempt: int
    created_at: datetime
    updated_at: datetime

    def is_running(self, now: datetime) -> bool:
        return self.locked_by is not None and self.locked_until is not None and self.locked_until > now


@dataclass(frozen=True)
class RunRecord:
    user_id: str
    trigger: str
    slot: datetime
    attempt: int
    lease_token: str | None
    status: str
    error: str | None
    skipped_slots: int
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime
    duration_ms: int | None
    worker: str | None
    id: int | None = None


def truncate_error(text: str | None, limit: int = ERROR_TEXT_LIMIT) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 15] + " …[truncated]"


def _schedule_from_row(row) -> Schedule:  # type: ignore[no-untyped-def]
    return Schedule(
        user_id=row.userId,
        enabled=bool(row.enabled),
        interval_minutes=row.intervalMinutes,
        next_run_at=row.nextRunAt,
        last_run_at=row.lastRunAt,
        last_status=row.lastStatus,
        last_error=row.lastError,
        locked_until=row.lockedUntil,
        locked_by=row.lockedBy,
        run_slot=row.runSlot,
        attempt=row.attempt,
        created_at=row.createdAt,
        updated_at=row.updatedAt,
    )


# --- claiming -------------------------------------------------------------------------------------


def _lease_is_free(now: datetime):  # type: ignore[no-untyped-def]
    return or_(s.lockedUntil.is_(None), s.lockedUntil <= now)


def due_rows_query(now: datetime, limit: int):  # type: ignore[no-untyped-def]
    """The due query. Exposed so a test can EXPLAIN exactly what the dispatcher runs."""
    return (
        select(s.userId, s.nextRunAt, s.lockedBy, s.lockedUntil, s.runSlot, s.attempt)
        # Pin the plan: on a small or freshly loaded table the optimizer may prefer a scan plus
        # filesort, and with SKIP LOCKED that locks every row it scans.
        .with_hint(schedules, "FORCE INDEX (ix_UserMonitorSchedule_due)", "mysql")
        .where(s.enabled == true(), s.nextRunAt <= now, _lease_is_free(now))
        .order_by(s.nextRunAt)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


def _take_lease(user_ids: list[str], *, token: str, lease_until: datetime, now: datetime):  # type: ignore[no-untyped-def]
    # MySQL evaluates SET assignments left to right, each seeing the ones before it; SQLite sees
    # the old row in all of them. Ordering them so that every CASE runs before the columns it reads
    # are overwritten makes both agree. The rule, mirrored by _claimed_run():
    #   a takeover of an expired lease retries the same slot (attempt + 1);
    #   a row released without running (nextRunAt back at runSlot) retries it too;
    #   otherwise nextRunAt is a new slot, attempt 1.
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
        )
        .execution_options(synchronize_session=False)
    ), {"claim_ids": user_ids}


def _claimed_run(row, *, token: str, trigger: Trigger, now: datetime) -> ClaimedRun:  # type: ignore[no-untyped-def]
    if row.lockedBy is not None:
        slot, attempt = (row.runSlot or row.nextRunAt), row.attempt + 1
    elif row.runSlot is not None and row.runSlot == row.nextRunAt:
        slot, attempt = row.nextRunAt, row.attempt + 1
    else:
        slot, attempt = row.nextRunAt, 1
    return ClaimedRun(row.userId, slot, attempt, token, trigger, now)


def claim_due(
    conn: Connection, *, now: datetime, limit: int, token: str, lease_until: datetime, trigger: Trigger
) -> list[ClaimedRun]:
    """Lease up to `limit` due rows, oldest nextRunAt first. Expired leases taken over are
    recorded as lost runs in the same transaction."""
    rows = conn.execute(due_rows_query(now, limit)).all()
    if not rows:
        return []
    statement, params = _take_lease([r.userId for r in rows], token=token, lease_until=lease_until, now=now)
    conn.execute(statement, params)
    lost = [r for r in rows if r.lockedBy is not None]
    if lost:
        _record_lost(conn, lost, now=now)
    return [_claimed_run(r, token=token, trigger=trigger, now=now) for r in rows]


def claim_user(
    conn: Connection, *, user_id: str, now: datetime, token: str, lease_until: datetime, trigger: Trigger
) -> ClaimedRun | None:
    """Lease one user for a run now, whatever its nextRunAt; None when it is unknown or leased.

    The run's slot is `now`: a manual run restarts the user's cadence from the moment it ran.
    """
    row = conn.execute(
        select(s.userId, s.lockedBy, s.lockedUntil, s.runSlot, s.attempt, s.nextRunAt)
        .where(s.userId == user_id, _lease_is_free(now))
        .with_for_update()
    ).first()
    if row is None:
        return None
    conn.execute(
        update(schedules)
        .where(s.userId == user_id, _lease_is_free(now))
        .values(runSlot=now, attempt=1, lockedBy=token, lockedUntil=lease_until, nextRunAt=lease_until, updatedAt=now)
    )
    if row.lockedBy is not None:
        _record_lost(conn, [row], now=now)
    return ClaimedRun(user_id, now, 1, token, trigger, now)


def _record_lost(conn: Connection, rows: Sequence, *, now: datetime) -> None:  # type: ignore[type-arg]
    records = [
        RunRecord(
            user_id=r.userId,
            trigger=Trigger.SCHEDULE,
            slot=r.runSlot or r.nextRunAt,
            attempt=r.attempt,
            lease_token=r.lockedBy,
            status=RunStatus.LOST,
            error=f"lease {r.lockedBy} expired at {r.lockedUntil:%Y-%m-%d %H:%M:%S.%f} UTC without a result "
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
# cache keys) was ~20% of a short run (scripts/bench/profile_sync_path.py). A "now" that is a SQL expression (the database clock) gets
# its statement built once per expression; a plain datetime (process or test clock) is a parameter.

_RENEW_LEASE = (
    update(schedules)
    .where(s.userId == bindparam("uid"), s.lockedBy == bindparam("token"))
    .values(lockedUntil=bindparam("until"), nextRunAt=bindparam("until"))
)
_LOCK_IF_LEASED = select(s.intervalMinutes).where(s.userId == bindparam("uid"), s.lockedBy == bindparam("token")).with_for_update()
_FINISH_RUN = (
    update(schedules)
    .where(s.userId == bindparam("uid"), s.lockedBy == bindparam("token"))
    .values(
        lastRunAt=bindparam("started_at"), lastStatus=bindparam("status"), lastError=bindparam("error"),
        nextRunAt=bindparam("next_run_at"), lockedBy=None, lockedUntil=None, updatedAt=bindparam("now"),
    )
)


@lru_cache(maxsize=32)
def _renew_lease_with(until: ColumnElement[datetime]):  # type: ignore[no-untyped-def]
    return (
        update(schedules)
        .where(s.userId == bindparam("uid"), s.lockedBy == bindparam("token"))
        .values(lockedUntil=until, nextRunAt=until)
    )


@lru_cache(maxsize=32)
def _lock_if_leased_with(now: ColumnElement[datetime]):  # type: ignore[no-untyped-def]
    return select(s.intervalMinutes, now.label("now")).where(s.userId == bindparam("uid"), s.lockedBy == bindparam("token")).with_for_update()


def renew_lease(conn: Connection, *, user_id: str, token: str, lease_until: datetime | ColumnElement[datetime]) -> bool:
    """Extend a lease this token still holds (even if it ran out, as long as nobody took it).
    `lease_until` may be a clock expression (Clock.sql_now), saving a round trip for "now"."""
    if isinstance(lease_until, datetime):
        result = conn.execute(_RENEW_LEASE, {"uid": user_id, "token": token, "until": lease_until})
    else:
        result = conn.execute(_renew_lease_with(lease_until), {"uid": user_id, "token": token})
    return result.rowcount == 1


def lock_if_leased(conn: Connection, *, user_id: str, token: str, now: datetime | ColumnElement[datetime]) -> tuple[int, datetime] | None:
    """(interval, now) with the row locked, if `token` still holds its lease; a clock expression
    for "now" is read in the same round trip."""
    params = {"uid": user_id, "token": token}
    if isinstance(now, datetime):
        interval = conn.execute(_LOCK_IF_LEASED, params).scalar_one_or_none()
        return None if interval is None else (interval, now)
    row = conn.execute(_lock_if_leased_with(now), params).first()
    return None if row is None else (row.intervalMinutes, _as_datetime(row.now))


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
) -> bool:
    """Record the outcome, move to the next slot and release the lease, in one fenced write.
    False means the lease was lost: nothing was written."""
    result = conn.execute(
        _FINISH_RUN,
        {
            "uid": user_id, "token": token, "started_at": started_at, "status": status.value,
            "error": truncate_error(error), "next_run_at": next_run_at, "now": now,
        },
    )
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


# --- run history ----------------------------------------------------------------------------------


_INSERT_RUN = insert(runs)  # built once: it is on every run's path


def insert_runs(conn: Connection, records: Iterable[RunRecord]) -> None:
    values = [
        {
            "userId": r.user_id,
            "trigger": str(r.trigger),
            "slot": r.slot,
            "attempt": r.attempt,
            "leaseToken": r.lease_token,
            "status": str(r.status),
            "error": truncate_error(r.error, 8000),
            "skippedSlots": r.skipped_slots,
            "enqueuedAt": r.enqueued_at,
            "startedAt": r.started_at,
            "finishedAt": r.finished_at,
            "durationMs": r.duration_ms,
            "worker": r.worker[:128] if r.worker else None,
        }
        for r in records
    ]
    if values:
        conn.execute(_INSERT_RUN, values)


def recent_runs(conn: Connection, *, user_id: str | None = None, limit: int = 20) -> list[RunRecord]:
    query = select(runs).order_by(runs.c.id.desc()).limit(limit)
    if user_id is not None:
        query = query.where(runs.c.userId == user_id)
    return [
        RunRecord(
            id=r.id,
            user_id=r.userId,
            trigger=r.trigger,
            slot=r.slot,
            attempt=r.attempt,
            lease_token=r.leaseToken,
            status=r.status,
            error=r.error,
            skipped_slots=r.skippedSlots,
            enqueued_at=r.enqueuedAt,
            started_at=r.startedAt,
            finished_at=r.finishedAt,
            duration_ms=r.durationMs,
            worker=r.worker,
        )
        for r in conn.execute(query)
    ]


def prune_runs(conn: Connection, *, finished_before: datetime, batch: int = 5000) -> int:
    """Delete one batch of history older than the cutoff; the caller loops until it returns 0."""
    ids = conn.execute(
        select(runs.c.id).where(runs.c.finishedAt < finished_before).order_by(runs.c.finishedAt).limit(batch)
    ).scalars().all()
    if not ids:
        return 0
    conn.execute(delete(runs).where(runs.c.id.in_(bindparam("prune_ids", expanding=True))), {"prune_ids": ids})
    return len(ids)


# --- schedules ------------------------------------------------------------------------------------


def get_schedule(conn: Connection, user_id: str, *, for_update: bool = False) -> Schedule | None:
    query = select(schedules).where(s.userId == user_id)
    if for_update:
        query = query.with_for_update()
    row = conn.execute(query).first()
    return _schedule_from_row(row) if row else None


def insert_schedule(conn: Connection, *, user_id: str, enabled: bool, interval_minutes: int, next_run_at: datetime, now: datetime) -> None:
    conn.execute(
        insert(schedules).values(
            userId=user_id,
            enabled=enabled,
            intervalMinutes=interval_minutes,
            nextRunAt=next_run_at,
            attempt=0,
            createdAt=now,
            updatedAt=now,
        )
    )


def insert_schedules(conn: Connection, rows: Sequence[dict]) -> None:  # type: ignore[type-arg]
    """Bulk insert (seeding, tests, benchmarks): dicts keyed by column name."""
    if rows:
        conn.execute(insert(schedules), list(rows))


def update_schedule(
    conn: Connection, *, user_id: str, now: datetime, enabled: bool, interval_minutes: int, next_run_at: datetime | None
) -> None:
    """Write settings; `next_run_at=None` leaves nextRunAt alone (the row is leased)."""
    values: dict[str, object] = {"enabled": enabled, "intervalMinutes": interval_minutes, "updatedAt": now}
    if next_run_at is not None:
        values["nextRunAt"] = next_run_at
    conn.execute(update(schedules).where(s.userId == user_id).values(**values))


def _filter_clause(which: ScheduleFilter, now: datetime):  # type: ignore[no-untyped-def]
    if which is ScheduleFilter.DUE:
        return and_(s.enabled == true(), s.nextRunAt <= now, _lease_is_free(now))
    if which is ScheduleFilter.RUNNING:
        return and_(s.lockedBy.is_not(None), s.lockedUntil > now)
    if which is ScheduleFilter.STALE:
        return and_(s.lockedBy.is_not(None), s.lockedUntil <= now)
    if which is ScheduleFilter.FAILING:
        return s.lastStatus.in_([RunStatus.FAILED.value, RunStatus.LOST.value])
    return s.enabled == false()


def list_schedules(
    conn: Connection,
    *,
    now: datetime,
    which: ScheduleFilter | None = None,
    search: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Schedule]:
    query = select(schedules).order_by(s.userId).limit(limit).offset(offset)
    if which is not None:
        query = query.where(_filter_clause(which, now))
    if search:
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(s.userId.like(f"%{escaped}%", escape="\\"))
    return [_schedule_from_row(r) for r in conn.execute(query)]


def count_due(conn: Connection, *, now: datetime) -> int:
    return conn.execute(select(func.count()).select_from(schedules).where(_filter_clause(ScheduleFilter.DUE, now))).scalar_one()


def oldest_due(conn: Connection, *, now: datetime) -> datetime | None:
    return conn.execute(
        select(s.nextRunAt)
        .where(_filter_clause(ScheduleFilter.DUE, now))
        .order_by(s.nextRunAt)
        .limit(1)
    ).scalar_one_or_none()


def lease_until(now: datetime, lease_ms: int) -> datetime:
    return now + timedelta(milliseconds=lease_ms)


# --- metrics ------------------------------------------------------------------------------------


def run_counts_since(conn: Connection, *, since: datetime) -> list[tuple[str, str, int]]:
    """(status, trigger, count) of runs finished since `since` (over the finishedAt index)."""
    rows = conn.execute(
        select(runs.c.status, runs.c.trigger, func.count()).where(runs.c.finishedAt >= since).group_by(runs.c.status, runs.c.trigger)
    )
    return [(r[0], r[1], r[2]) for r in rows]


def duration_buckets_since(conn: Connection, *, since: datetime, bounds_ms: Sequence[int]) -> tuple[list[int], int, int]:
    """Cumulative counts of run durations <= each bound, the total count and the sum (ms)."""
    timed = and_(runs.c.finishedAt >= since, runs.c.durationMs.is_not(None))
    columns = [func.coalesce(func.sum(case((runs.c.durationMs <= bound, 1), else_=0)), 0) for bound in bounds_ms]
    row = conn.execute(select(*columns, func.count(), func.coalesce(func.sum(runs.c.durationMs), 0)).where(timed)).one()
    return [int(v) for v in row[: len(bounds_ms)]], int(row[-2]), int(row[-1])


def count_expired_leases(conn: Connection, *, now: datetime) -> int:
    return conn.execute(select(func.count()).select_from(schedules).where(_filter_clause(ScheduleFilter.STALE, now))).scalar_one()


# --- liveness -------------------------------------------------------------------------------------

DISPATCH_STATUS = "dispatch"


def record_dispatch_pass(conn: Connection, *, at: datetime, detail: str) -> None:
    """Remember the last successful pass (one row, written by every dispatcher)."""
    conn.execute(update(status).where(status.c.name == DISPATCH_STATUS).values(at=at, detail=detail))


def last_dispatch_pass(conn: Connection) -> tuple[datetime | None, str | None]:
    row = conn.execute(select(status.c.at, status.c.detail).where(status.c.name == DISPATCH_STATUS)).first()
    return (row.at, row.detail) if row else (None, None)


# --- web ------------------------------------------------------------------------------------------


def ping(conn: Connection) -> None:
    """Readiness: the database answers and the schedules table exists (migrations ran)."""
    conn.execute(select(s.userId).limit(1)).all()
