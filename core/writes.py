"""Writes outside the lease protocol: schedule settings, run history, the last-pass record.

Like every SQL module of the core, it takes the connection of the caller's transaction and never
reads a clock or commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Connection, Table, bindparam, delete, insert, select, true, update

from core.capacity import Sample
from core.domain import Calendar, RunRecord, truncate_error
from schema.models import runs, samples, schedules, status

s = schedules.c

DISPATCH_STATUS = "dispatch"

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
            "progressMessage": r.progress_message or None,
            "result": r.result,
        }
        for r in records
    ]
    if values:
        conn.execute(_INSERT_RUN, values)


def _delete_oldest(conn: Connection, table: Table, time_column: Column[datetime], *, before: datetime, batch: int) -> int:
    """Delete one batch of `table`'s rows older than `before` (oldest first, over the time column's
    index); the caller loops until it returns 0, so no transaction holds many locks."""
    ids = conn.execute(select(table.c.id).where(time_column < before).order_by(time_column).limit(batch)).scalars().all()
    if not ids:
        return 0
    conn.execute(delete(table).where(table.c.id.in_(bindparam("prune_ids", expanding=True))), {"prune_ids": ids})
    return len(ids)


def prune_runs(conn: Connection, *, finished_before: datetime, batch: int = 5000) -> int:
    """One batch of run history older than the cutoff."""
    return _delete_oldest(conn, runs, runs.c.finishedAt, before=finished_before, batch=batch)


def _calendar_values(calendar: Calendar | None) -> dict[str, object]:
    # Absent: the columns keep their value (or default); so a write never names columns a database
    # migrated only to an older revision lacks (tests of the migrations write through here).
    if calendar is None:
        return {}
    return {"cronExpr": calendar.cron_expr, "timeZone": calendar.time_zone, "spreadSeconds": calendar.spread_seconds}


def insert_schedule(
    conn: Connection, *, user_id: str, enabled: bool, interval_minutes: int, next_run_at: datetime, now: datetime,
    calendar: Calendar | None = None,
) -> None:
    conn.execute(
        insert(schedules).values(
            userId=user_id,
            enabled=enabled,
            intervalMinutes=interval_minutes,
            nextRunAt=next_run_at,
            attempt=0,
            createdAt=now,
            updatedAt=now,
            **_calendar_values(calendar),
        )
    )


def insert_schedules(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Bulk insert (seeding, tests, benchmarks): mappings keyed by column name."""
    if rows:
        conn.execute(insert(schedules), [dict(row) for row in rows])


def update_schedule(
    conn: Connection, *, user_id: str, now: datetime, enabled: bool, interval_minutes: int, next_run_at: datetime | None,
    calendar: Calendar | None = None,
) -> None:
    """Write settings; `next_run_at=None` leaves nextRunAt alone (the row is leased), `calendar=None`
    the calendar columns. A new nextRunAt replaces a pending retry (the row's next claim is a new
    slot, attempt 1)."""
    values: dict[str, object] = {"enabled": enabled, "intervalMinutes": interval_minutes, "updatedAt": now, **_calendar_values(calendar)}
    if next_run_at is not None:
        values["nextRunAt"] = next_run_at
        values["retrying"] = False
    conn.execute(update(schedules).where(s.userId == user_id).values(**values))


def update_failure_policy(conn: Connection, *, user_id: str, now: datetime, values: Mapping[str, int | None]) -> None:
    """Write a schedule's own retries / retryBackoffSeconds / pauseAfter (the keys given; None: the
    settings default again). Validated by the caller (core.scheduling); the CHECK constraints
    are the last line."""
    allowed = {"retries", "retryBackoffSeconds", "pauseAfter"}
    assert set(values) <= allowed, f"not a failure-policy column: {sorted(set(values) - allowed)}"
    if values:
        conn.execute(update(schedules).where(s.userId == user_id).values(updatedAt=now, **values))


def resume_schedule(conn: Connection, *, user_id: str, now: datetime, next_run_at: datetime | None) -> bool:
    """Resume a paused schedule: paused off, pausedAt/pausedReason cleared, failedSlots back to 0,
    nextRunAt = `next_run_at` (the caller's next slot from now: never a burst of the missed ones;
    None leaves it to the run that holds the lease). Conditional on `paused`: False when the row
    was not paused (already resumed by someone else), and then nothing is written."""
    # A resumed schedule starts a fresh slot: no retry of the slot it paused in is pending.
    values: dict[str, object] = {"paused": False, "pausedAt": None, "pausedReason": None, "failedSlots": 0, "retrying": False, "updatedAt": now}
    if next_run_at is not None:
        values["nextRunAt"] = next_run_at
    result = conn.execute(update(schedules).where(s.userId == user_id, s.paused == true()).values(**values))
    return bool(result.rowcount)


def record_dispatch_pass(conn: Connection, *, at: datetime, detail: str) -> None:
    """Remember the last successful pass (one row, written by every dispatcher)."""
    conn.execute(update(status).where(status.c.name == DISPATCH_STATUS).values(at=at, detail=detail))


def insert_sample(conn: Connection, sample: Sample) -> None:
    """One capacity sample (written with the pass record, in its transaction)."""
    conn.execute(
        insert(samples).values(
            at=sample.at, due=sample.due, queued=sample.queued, running=sample.running, demand=sample.demand, capacity=sample.capacity
        )
    )


def prune_samples(conn: Connection, *, taken_before: datetime, batch: int = 5000) -> int:
    """One batch of capacity samples older than the cutoff."""
    return _delete_oldest(conn, samples, samples.c.at, before=taken_before, batch=batch)
