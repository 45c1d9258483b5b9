"""Read queries: schedules, run history, metrics and liveness facts.

Each takes the caller's connection and an explicit "now" where time matters; none writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    and_,
    case,
    false,
    func,
    select,
    true,
)

from core.domain import RunRecord, RunStatus, Schedule, ScheduleFilter
from core.lease import lease_is_free
from core.writes import DISPATCH_STATUS
from schema.models import runs, schedules, status

s = schedules.c


def _schedule_from_row(row: Row[Any]) -> Schedule:
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
        run_started_at=row.runStartedAt,
        # MySQL's FLOAT is single precision (0.3 reads back as 0.30000001192...): four places are plenty.
        progress=None if row.progress is None else round(row.progress, 4),
        progress_message=row.progressMessage,
        progress_at=row.progressAt,
    )


# --- schedules ------------------------------------------------------------------------------------


def get_schedule(conn: Connection, user_id: str, *, for_update: bool = False) -> Schedule | None:
    query = select(schedules).where(s.userId == user_id)
    if for_update:
        query = query.with_for_update()
    row = conn.execute(query).first()
    return _schedule_from_row(row) if row else None


def _filter_clause(which: ScheduleFilter, now: datetime) -> ColumnElement[bool]:
    if which is ScheduleFilter.DUE:
        return and_(s.enabled == true(), s.nextRunAt <= now, lease_is_free(now))
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
    return int(conn.execute(select(func.count()).select_from(schedules).where(_filter_clause(ScheduleFilter.DUE, now))).scalar_one())


def oldest_due(conn: Connection, *, now: datetime) -> datetime | None:
    return conn.execute(
        select(s.nextRunAt)
        .where(_filter_clause(ScheduleFilter.DUE, now))
        .order_by(s.nextRunAt)
        .limit(1)
    ).scalar_one_or_none()


def count_expired_leases(conn: Connection, *, now: datetime) -> int:
    return int(conn.execute(select(func.count()).select_from(schedules).where(_filter_clause(ScheduleFilter.STALE, now))).scalar_one())


# --- run history ----------------------------------------------------------------------------------


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
            progress_message=r.progressMessage,
        )
        for r in conn.execute(query)
    ]


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


# --- liveness -------------------------------------------------------------------------------------


def last_dispatch_pass(conn: Connection) -> tuple[datetime | None, str | None]:
    row = conn.execute(select(status.c.at, status.c.detail).where(status.c.name == DISPATCH_STATUS)).first()
    return (row.at, row.detail) if row else (None, None)


def ping(conn: Connection) -> None:
    """Readiness: the database answers and the schedules table exists (migrations ran)."""
    conn.execute(select(s.userId).limit(1)).all()
