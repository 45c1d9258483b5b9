"""Claiming: who holds a schedule's lease. Conditional writes are the locks.

Callers pass the connection (inside the transaction they own) and "now" explicitly; nothing here
reads a clock or commits. The writes of a run that holds a lease (start, renew, finish, progress)
are in core.fenced.

- `claim_due`: the due rows, oldest first, over the (enabled, paused, nextRunAt) index with
  `FOR UPDATE SKIP LOCKED` (MySQL/MariaDB; on SQLite the transaction is BEGIN IMMEDIATE and so
  already exclusive), one UPDATE that gives each a lease and moves `nextRunAt` to the lease
  expiry (out of the due range), then one read of what that UPDATE wrote (the slot/attempt rule
  lives in the UPDATE alone).
- The expired-lease rule: `claim_due` and `claim_user` park an expired lease (`_park_expired`)
  when the caller will ask the queue about its job, and `take_over` takes the ones whose job is
  gone, fenced on the holder's token.
- `release_leases` (fenced on the claimer's token) and `unlock_expired` give leases back.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import (
    Connection,
    Select,
    Update,
    and_,
    bindparam,
    case,
    false,
    func,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.sql.elements import ColumnElement

from core.calendar import stored_rule
from core.clock import utc_text
from core.domain import ClaimedRun, RunRecord, RunStatus, Trigger
from core.outcome import paused_record, settle
from core.retry import RetryDefaults, retry_policy
from core.writes import insert_runs
from schema.models import schedules

s = schedules.c
logger = logging.getLogger(__name__)


def new_lease_token() -> str:
    """Unique per claim batch; says which host and process holds a lease (≤ 64 chars)."""
    return f"{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:16]}"


def lease_until(now: datetime, lease_ms: int) -> datetime:
    return now + timedelta(milliseconds=lease_ms)


def lease_is_free(now: datetime) -> ColumnElement[bool]:
    return or_(s.lockedUntil.is_(None), s.lockedUntil <= now)


def slot_of() -> ColumnElement[datetime]:
    """The slot of a leased row's run, the one place this rule is written: its runSlot (a row
    leased before runSlot existed has only nextRunAt). Reads of leased rows select it as `slot`
    (the parked run, the lost run's record); a takeover retries it; a release makes the row due
    at it."""
    return func.coalesce(s.runSlot, s.nextRunAt)


# What a claim reads of a row it may take over or park (`_LeasedRow`).
_LEASED_COLUMNS = (s.userId, s.lockedBy, s.lockedUntil, s.attempt, slot_of().label("slot"), s.retries)


class _LeasedRow(Protocol):
    """A row a claim may take over or park, or unlock release (`_LEASED_COLUMNS`)."""

    userId: str
    lockedBy: str | None
    lockedUntil: datetime | None
    attempt: int
    slot: datetime  # slot_of()
    retries: int | None  # the schedule's own retries (None: the default): how many lost attempts its slot may have


# --- claiming -------------------------------------------------------------------------------------


def due_rows_query(now: datetime, limit: int) -> Select[Any]:
    """The due query. Exposed so a test can EXPLAIN exactly what the dispatcher runs."""
    return (
        select(*_LEASED_COLUMNS)
        # Pin the plan: on a small or freshly loaded table the optimizer may prefer a scan plus
        # filesort, and with SKIP LOCKED that locks every row it scans.
        .with_hint(schedules, "FORCE INDEX (ix_UserMonitorSchedule_due)", "mysql")
        .where(s.enabled == true(), s.paused == false(), s.nextRunAt <= now, lease_is_free(now))
        .order_by(s.nextRunAt)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


# A claimed run has not started yet: no start time, no progress (the previous run's are cleared).
_NOT_STARTED = ((s.runStartedAt, None), (s.progress, None), (s.progressMessage, None), (s.progressAt, None))


def _take_lease(token: str, lease_until: datetime, now: datetime, *, restart: bool = False) -> Update:
    # The slot/attempt rule, written once (claim_due and take_over read the result back):
    #   a takeover of an expired lease retries the same slot (attempt + 1);
    #   a row released without running (nextRunAt back at runSlot) retries it too;
    #   a row whose failed attempt waits for its retry (`retrying`, set by the finish with
    #   nextRunAt = now + backoff: core.outcome) retries it too;
    #   otherwise nextRunAt is a new slot, attempt 1;
    #   `restart` (a manual run) makes `now` the slot, attempt 1: the user's cadence restarts there.
    # The claim clears `retrying`: the retry is now this lease's run.
    # MySQL evaluates SET assignments left to right, each seeing the ones before it; SQLite sees
    # the old row in all of them. Ordering them so that every CASE runs before the columns it reads
    # are overwritten makes both agree.
    same_slot = or_(s.lockedBy.is_not(None), s.retrying == true())
    retry = or_(same_slot, s.runSlot == s.nextRunAt)
    slot_and_attempt = (
        ((s.attempt, literal(1)), (s.runSlot, now)) if restart else (
            (s.attempt, case((retry, s.attempt + 1), else_=literal(1))),
            (s.runSlot, case((same_slot, slot_of()), else_=s.nextRunAt)),
        )
    )
    return (
        update(schedules)
        .where(s.userId.in_(bindparam("claim_ids", expanding=True)))
        .ordered_values(
            *slot_and_attempt,
            (s.retrying, false()),
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
    select(*_LEASED_COLUMNS)
    .where(s.userId.in_(bindparam("ids", expanding=True)))
    .with_for_update()
)

# The read-back goes through the primary key (userId IN ...), so it costs the same on any table size.
_CLAIMED_BY = select(s.userId, slot_of().label("slot"), s.attempt).where(
    s.userId.in_(bindparam("claimed_ids", expanding=True)), s.lockedBy == bindparam("token")
)


@dataclass(frozen=True)
class Claim:
    """What one claim transaction took: runs leased to the claimer, and (when asked to park them)
    runs whose lease had expired, left with their holder's token until the caller has asked the
    queue whether their job still lives (see `take_over`)."""

    claimed: list[ClaimedRun]
    parked: list[ClaimedRun]

    @property
    def rows(self) -> int:
        return len(self.claimed) + len(self.parked)


def _park_expired(conn: Connection, rows: Sequence[_LeasedRow], *, now: datetime, extend_until: datetime | None) -> list[ClaimedRun]:
    """The expired-lease rule's first half, for every claim: an expired lease is not taken over in
    the claim but parked, its run returned under its holder's token, so the claimer can ask the
    queue (outside the transaction: no row lock across a network call) whether the job still
    waits there (it keeps its place) or is gone (`take_over`, fenced on that token). A claim over
    the due range extends the parked leases to `extend_until`, which moves them out of the range
    (the next batch of the pass, or another dispatcher, does not ask again); a claim of one user
    by id leaves the row as it is (None)."""
    if not rows:
        return []
    if extend_until is not None:
        conn.execute(_EXTEND_EXPIRED, {"parked_ids": [r.userId for r in rows], "until": extend_until, "now": now})
    return [ClaimedRun(r.userId, r.slot, r.attempt, r.lockedBy or "", Trigger.SCHEDULE, now) for r in rows]


def claim_due(
    conn: Connection, *, now: datetime, limit: int, token: str, lease_until: datetime, trigger: Trigger, park_expired: bool = False,
    defaults: RetryDefaults = RetryDefaults(),
) -> Claim:
    """Lease up to `limit` due rows, oldest nextRunAt first.

    A due row whose lease expired is either taken over at once (recorded as a lost run in the same
    transaction), or, with `park_expired`, parked (`_park_expired`) with its lease extended to
    `lease_until`. A queue that holds jobs longer than a lease therefore never loses them, and the
    normal path (no expired lease) costs no call to the queue. `defaults`: the settings' retry
    defaults (a lost attempt is a failed attempt: `_lease`).
    """
    rows = conn.execute(due_rows_query(now, limit)).all()
    if not rows:
        return Claim([], [])
    parked: list[ClaimedRun] = []
    if park_expired:
        parked = _park_expired(conn, [r for r in rows if r.lockedBy is not None], now=now, extend_until=lease_until)
        rows = [r for r in rows if r.lockedBy is None]
        if not rows:
            return Claim([], parked)
    return Claim(_lease(conn, rows, token=token, lease_until=lease_until, trigger=trigger, now=now, defaults=defaults), parked)


def _lease(
    conn: Connection, rows: Sequence[_LeasedRow], *, token: str, lease_until: datetime, trigger: Trigger, now: datetime,
    defaults: RetryDefaults, restart: bool = False,
) -> list[ClaimedRun]:
    """Lease `rows` (free, or expired and to be taken over: those are recorded lost once) to
    `token`, and read back the slot and attempt the UPDATE gave each, in the order of `rows`.
    An expired lease whose slot has used up its lost attempts (`_spent`) is not leased: its slot
    ends lost (`_end_lost_slots`), unless `restart` (a manual run) starts a new slot anyway."""
    lost = [r for r in rows if r.lockedBy is not None]
    if lost:
        _record_lost(conn, lost, now=now)
        spent = [] if restart else [r for r in lost if _spent(r, defaults)]
        if spent:
            _end_lost_slots(conn, spent, now=now, defaults=defaults)
            rows = [r for r in rows if r not in spent]
            if not rows:
                return []
    ids = [r.userId for r in rows]
    conn.execute(_take_lease(token, lease_until, now, restart=restart), {"claim_ids": ids})
    written = {r.userId: r for r in conn.execute(_CLAIMED_BY, {"claimed_ids": ids, "token": token})}
    return [ClaimedRun(user_id, written[user_id].slot, written[user_id].attempt, token, trigger, now) for user_id in ids]


def _spent(row: _LeasedRow, defaults: RetryDefaults) -> bool:
    """A lost attempt is a failed attempt: its slot is retried (at once) only while it has lost
    attempts left (core.retry.RetryPolicy.lost_retries)."""
    return row.attempt > max(defaults.retries if row.retries is None else row.retries, 1)


def take_over(
    conn: Connection, *, parked: Sequence[ClaimedRun], token: str, lease_until: datetime, trigger: Trigger, now: datetime, restart: bool = False,
    defaults: RetryDefaults = RetryDefaults(),
) -> list[ClaimedRun]:
    """The expired-lease rule's second half: take the parked runs whose job is gone from the queue,
    fenced on the holder's token (a lease that changed hands meanwhile is not ours to take),
    recorded as lost once, retried in the same slot (attempt + 1) or, with `restart` (a manual
    run), in the slot `now`."""
    if not parked:
        return []
    by_id = {run.user_id: run for run in parked}
    rows = conn.execute(_LEASED_ROWS, {"ids": list(by_id)}).all()
    still_parked = [r for r in rows if r.lockedBy is not None and r.lockedBy == by_id[r.userId].token]
    if not still_parked:
        return []
    taken = {run.user_id: run for run in _lease(conn, still_parked, token=token, lease_until=lease_until, trigger=trigger, now=now,
                                                 defaults=defaults, restart=restart)}
    return [taken[run.user_id] for run in parked if run.user_id in taken]


def claim_user(
    conn: Connection, *, user_id: str, now: datetime, token: str, lease_until: datetime, trigger: Trigger, park_expired: bool = False,
    cooldown: timedelta | None = None, defaults: RetryDefaults = RetryDefaults(),
) -> Claim | None:
    """Lease one user for a run now, whatever its nextRunAt; None when it is unknown or its lease
    is live. The run's slot is `now`: a manual run restarts the user's cadence from the moment it
    ran. An expired lease follows the same rule as in `claim_due`: taken over at once, or with
    `park_expired` parked (left as it is) for the caller to ask the queue and `take_over` with
    `restart`.

    With `cooldown` (a user's own "Run now") the claim also needs the user's last such run to be at
    least `cooldown` old, and notes its time in manualRunAt: None when it is too soon."""
    admitted = lease_is_free(now) if cooldown is None else and_(lease_is_free(now), _cooled_down(now, cooldown))
    row = conn.execute(
        select(*_LEASED_COLUMNS)
        .where(s.userId == user_id, admitted)
        .with_for_update()
    ).first()
    if row is None:
        return None
    if park_expired and row.lockedBy is not None:
        return Claim([], _park_expired(conn, [row], now=now, extend_until=None))
    if cooldown is not None and not _note_manual_run(conn, user_id=user_id, now=now, cooldown=cooldown):
        return None
    return Claim(_lease(conn, [row], token=token, lease_until=lease_until, trigger=trigger, now=now, defaults=defaults, restart=True), [])


def _cooled_down(now: datetime, cooldown: timedelta) -> ColumnElement[bool]:
    return or_(s.manualRunAt.is_(None), s.manualRunAt <= now - cooldown)


def _note_manual_run(conn: Connection, *, user_id: str, now: datetime, cooldown: timedelta) -> bool:
    """The cooldown as a conditional write, not a read before it: of two racing requests (on a
    database that ignores FOR UPDATE, SQLite) one is admitted."""
    noted = conn.execute(update(schedules).where(s.userId == user_id, _cooled_down(now, cooldown)).values(manualRunAt=now))
    return noted.rowcount == 1


def _record_lost(conn: Connection, rows: Sequence[_LeasedRow], *, now: datetime) -> None:
    records = [
        RunRecord(
            user_id=r.userId,
            trigger=Trigger.SCHEDULE,
            slot=r.slot,
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


# What ending a lost slot reads of its row (locked already by the claim's read).
_SLOT_END_COLUMNS = (s.userId, s.intervalMinutes, s.cronExpr, s.timeZone, s.spreadSeconds, s.retryBackoffSeconds, s.pauseAfter, s.failedSlots)


def _end_lost_slots(conn: Connection, rows: Sequence[_LeasedRow], *, now: datetime, defaults: RetryDefaults) -> None:
    """End the slots of expired leases that used up their lost attempts (`_spent`; their lost runs
    are recorded already): the slot's final outcome is `lost`, the row goes to its next slot,
    unleased, and counts a failed slot, which may pause it (core.outcome.settle). Rare (a run
    that kills its worker again and again), so one statement per row is fine."""
    by_id = {r.userId: r for r in rows}
    records: list[RunRecord] = []
    for row in conn.execute(select(*_SLOT_END_COLUMNS).where(s.userId.in_(bindparam("ids", expanding=True))), {"ids": list(by_id)}):
        leased = by_id[row.userId]
        rule = stored_rule(user_id=row.userId, interval_minutes=row.intervalMinutes, cron_expr=row.cronExpr,
                           time_zone=row.timeZone, spread_seconds=row.spreadSeconds)
        policy = retry_policy(retries=leased.retries, backoff_seconds=row.retryBackoffSeconds, pause_after=row.pauseAfter, defaults=defaults)
        error = f"slot lost: attempt {leased.attempt} was lost too, and the slot has {policy.lost_retries} lost attempt(s) to retry"
        outcome = settle(user_id=row.userId, rule=rule, slot=leased.slot, attempt=leased.attempt, now=now, status=RunStatus.LOST,
                         error=error, policy=policy, failed_slots=row.failedSlots)
        paused = {} if outcome.paused_reason is None else {"paused": True, "pausedAt": now, "pausedReason": outcome.paused_reason}
        conn.execute(
            update(schedules).where(s.userId == row.userId, s.lockedBy == leased.lockedBy).values(
                lockedBy=None, lockedUntil=None, nextRunAt=outcome.next_run_at, retrying=False, lastStatus=RunStatus.LOST.value,
                lastError=error, failedSlots=outcome.failed_slots, updatedAt=now, **paused,
            )
        )
        logger.error("slot lost for good user=%s slot=%s attempt=%s token=%s: %s", row.userId, leased.slot, leased.attempt, leased.lockedBy, error)
        if outcome.paused_reason is not None:
            records.append(paused_record(row.userId, leased.slot, leased.attempt, outcome.paused_reason, now))
    insert_runs(conn, records)


# --- giving leases back ----------------------------------------------------------------------------


_RELEASE = (
    update(schedules)
    .where(s.userId.in_(bindparam("release_ids", expanding=True)), s.lockedBy == bindparam("token"))
    .values(lockedBy=None, lockedUntil=None, nextRunAt=slot_of())
)


def release_leases(conn: Connection, *, user_ids: Sequence[str], token: str) -> int:
    """Give back leases that never ran: the rows are due again at once (at their slot)."""
    if not user_ids:
        return 0
    return conn.execute(_RELEASE, {"release_ids": list(user_ids), "token": token}).rowcount


def unlock_expired(conn: Connection, *, now: datetime, defaults: RetryDefaults = RetryDefaults()) -> list[str]:
    """Release every expired lease, recording the lost runs; the rows are due again at once (the
    lost attempt's retry), or at their next slot when their slot has used up its lost attempts."""
    rows = conn.execute(
        select(*_LEASED_COLUMNS)
        .where(s.lockedBy.is_not(None), s.lockedUntil <= now)
        .with_for_update(skip_locked=True)
    ).all()
    if not rows:
        return []
    _record_lost(conn, rows, now=now)
    spent = [r for r in rows if _spent(r, defaults)]
    if spent:
        _end_lost_slots(conn, spent, now=now, defaults=defaults)
    ids = [r.userId for r in rows if r not in spent]
    if not ids:
        return [r.userId for r in rows]
    conn.execute(
        update(schedules)
        .where(s.userId.in_(bindparam("unlock_ids", expanding=True)), s.lockedUntil <= now)
        .values(lockedBy=None, lockedUntil=None, nextRunAt=slot_of(), updatedAt=now),
        {"unlock_ids": ids},
    )
    return [r.userId for r in rows]
