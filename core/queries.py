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
    Select,
    and_,
    case,
    false,
    func,
    or_,
    select,
    true,
)

from croniter import CroniterError

from core.calendar import average_interval_minutes
from core.capacity import IntervalLoad, RunCounts, Sample
from core.domain import RunRecord, RunStatus, Schedule, ScheduleFilter
from core.claims import lease_is_free
from core.writes import DISPATCH_STATUS
from schema.models import runs, samples, schedules, status

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
        manual_run_at=row.manualRunAt,
        cron_expr=row.cronExpr,
        time_zone=row.timeZone,
        spread_seconds=row.spreadSeconds,
        retries=row.retries,
        retry_backoff_seconds=row.retryBackoffSeconds,
        pause_after=row.pauseAfter,
        failed_slots=row.failedSlots,
        retrying=bool(row.retrying),
        paused=bool(row.paused),
        paused_at=row.pausedAt,
        paused_reason=row.pausedReason,
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
        return and_(s.enabled == true(), s.paused == false(), s.nextRunAt <= now, lease_is_free(now))
    if which is ScheduleFilter.RUNNING:
        return and_(s.lockedBy.is_not(None), s.lockedUntil > now)
    if which is ScheduleFilter.STALE:
        return and_(s.lockedBy.is_not(None), s.lockedUntil <= now)
    if which is ScheduleFilter.FAILING:
        return s.lastStatus.in_([RunStatus.FAILED.value, RunStatus.LOST.value])
    if which is ScheduleFilter.PAUSED:
        return s.paused == true()
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
        # User id or calendar expression ("MON-FRI", "0 9"): the admin page's one search box.
        query = query.where(or_(s.userId.like(f"%{escaped}%", escape="\\"), s.cronExpr.like(f"%{escaped}%", escape="\\")))
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


def paused_count_query() -> Select[int]:
    """Schedules paused after failed slots, counted in the due index `(enabled, paused, nextRunAt)`:
    naming both values of `enabled` makes it two index ranges, not a table scan (EXPLAIN-checked)."""
    return select(func.count()).select_from(schedules).where(s.enabled.in_([True, False]), s.paused == true())


def count_paused(conn: Connection) -> int:
    """Once per /metrics scrape."""
    return int(conn.execute(paused_count_query()).scalar_one())


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
            result=r.result,
        )
        for r in conn.execute(query)
    ]


def finished_run_status(conn: Connection, *, user_id: str, token: str, slot: datetime, worker: str) -> RunStatus | None:
    """The status this worker recorded for the run of `user_id`/`slot` under lease `token`, if it
    did: a finishing write retried after an unknown COMMIT outcome asks whether the first landed
    (over the (userId, id) index; a user has few rows per token)."""
    found = conn.execute(
        select(runs.c.status).where(
            runs.c.userId == user_id, runs.c.leaseToken == token, runs.c.slot == slot, runs.c.worker == worker,
        ).limit(1)
    ).scalar_one_or_none()
    return None if found is None else RunStatus(found)


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


# --- capacity -----------------------------------------------------------------------------------

# Runs whose duration says how long a user's run takes: the task ran to an end.
_TIMED_STATUSES = (RunStatus.SUCCEEDED.value, RunStatus.FAILED.value)


def _count_where(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def run_counts(conn: Connection, *, now: datetime) -> RunCounts:
    """Due, queued and running schedules in one statement, on every pass and every scrape.

    The WHERE is two index ranges, `(enabled, paused = 0, nextRunAt) <= now` (due, and expired
    leases; `paused` is named so the range stays tight since migration 0008) or
    `lockedUntil > now` (live leases), so the cost follows the backlog and the runs in flight,
    not the table (EXPLAIN: index_merge sort_union on MariaDB, MULTI-INDEX OR on SQLite). A live
    lease with no start time is a job waiting in the queue; with one, a worker runs it."""
    due = _filter_clause(ScheduleFilter.DUE, now)
    live = s.lockedUntil > now
    row = conn.execute(
        select(
            _count_where(due),
            _count_where(and_(live, s.runStartedAt.is_(None))),
            _count_where(and_(live, s.runStartedAt.is_not(None))),
        ).where(or_(and_(s.enabled == true(), s.paused == false(), s.nextRunAt <= now), live))
    ).one()
    return RunCounts(due=int(row[0]), queued=int(row[1]), running=int(row[2]))


def interval_loads(conn: Connection, *, since: datetime) -> list[IntervalLoad]:
    """Per interval of the enabled schedules: users, users with a timed run finished since
    `since`, and the sum of those users' average run seconds.

    Plan: the per-user averages come from a range of the finishedAt index (the window's runs
    only, grouped by user into a temporary table), joined to the enabled schedules (one scan of
    the `(enabled, paused, nextRunAt)` index's enabled part plus the rows) and grouped by interval: at
    most 1440 rows come back, never one per user."""
    averages = (
        select(runs.c.userId, func.avg(runs.c.durationMs).label("avg_ms"))
        .where(runs.c.finishedAt >= since, runs.c.status.in_(_TIMED_STATUSES), runs.c.durationMs.is_not(None))
        .group_by(runs.c.userId)
        .subquery("recent")
    )
    rows = conn.execute(
        select(s.intervalMinutes, s.cronExpr, func.count(), func.count(averages.c.avg_ms), func.coalesce(func.sum(averages.c.avg_ms), 0))
        .select_from(schedules.outerjoin(averages, averages.c.userId == s.userId))
        .where(s.enabled == true())
        .group_by(s.intervalMinutes, s.cronExpr)
    )
    # Calendar schedules come back per expression (NULL for intervals: the same groups as before).
    return [IntervalLoad(_average_interval(int(r[0]), r[1]), int(r[2]), int(r[3]), float(r[4]) / 1000) for r in rows]


def _average_interval(interval_minutes: int, cron_expr: str | None) -> float:
    if cron_expr is None:
        return interval_minutes
    try:
        return average_interval_minutes(cron_expr)
    except (ValueError, KeyError, CroniterError):  # a hand-written row croniter refuses: its interval stands in
        return interval_minutes


def average_run_seconds(conn: Connection, *, since: datetime) -> float | None:
    """Mean duration of the timed runs finished since `since` (a finishedAt index range)."""
    value = conn.execute(
        select(func.avg(runs.c.durationMs)).where(
            runs.c.finishedAt >= since, runs.c.status.in_(_TIMED_STATUSES), runs.c.durationMs.is_not(None)
        )
    ).scalar_one_or_none()
    return None if value is None else float(value) / 1000


def _sample_from_row(row: Row[Any]) -> Sample:
    return Sample(at=row.at, due=row.due, queued=row.queued, running=row.running, demand=float(row.demand), capacity=row.capacity)


def samples_between(conn: Connection, *, start: datetime, end: datetime) -> list[Sample]:
    """The samples taken in [start, end], oldest first (a range of the `at` index)."""
    rows = conn.execute(select(samples).where(samples.c.at >= start, samples.c.at <= end).order_by(samples.c.at, samples.c.id))
    return [_sample_from_row(r) for r in rows]


def latest_sample(conn: Connection) -> Sample | None:
    row = conn.execute(select(samples).order_by(samples.c.at.desc(), samples.c.id.desc()).limit(1)).first()
    return _sample_from_row(row) if row else None


_SAMPLE_OVERLOADED = and_(samples.c.capacity.is_not(None), samples.c.demand > samples.c.capacity)


def overload_started(conn: Connection, newest: Sample | None) -> datetime | None:
    """When the current overload began: the first sample after the newest one that was not
    overloaded (demand at most capacity, or capacity unknown); None when the newest sample
    (`latest_sample`) is not overloaded. Both reads walk the `at` index from its newest end."""
    if newest is None or not newest.overloaded:
        return None
    last_fine = conn.execute(
        select(samples.c.at).where(~_SAMPLE_OVERLOADED).order_by(samples.c.at.desc()).limit(1)
    ).scalar_one_or_none()
    first = select(func.min(samples.c.at))
    if last_fine is not None:
        first = first.where(samples.c.at > last_fine)
    return conn.execute(first).scalar_one_or_none()


# --- liveness -------------------------------------------------------------------------------------


def last_dispatch_pass(conn: Connection) -> tuple[datetime | None, str | None]:
    row = conn.execute(select(status.c.at, status.c.detail).where(status.c.name == DISPATCH_STATUS)).first()
    return (row.at, row.detail) if row else (None, None)


def ping(conn: Connection) -> None:
    """Readiness: the database answers and the schedules table exists (migrations ran)."""
    conn.execute(select(s.userId).limit(1)).all()
