"""The application services: every operation the CLI and the web offer, in one place.

Each method owns its transaction and its one clock read; the CLI and the web only parse input and
format output. The service is built on a `Wiring` (the entry layer's App satisfies it), so it
never constructs engines, Redis clients or dispatchers itself.

How nextRunAt moves when settings change (also in README "Semantics"):
- a new schedule is due at once (nextRunAt = now);
- disabling leaves nextRunAt alone; a run in flight still finishes and is recorded;
- enabling, or changing the interval, of a schedule that is not running sets
  nextRunAt = max(now, last slot + interval) (due now if it never ran);
- while a run holds the lease, only the settings change: the run's fenced finish computes the
  next slot from the new interval.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Worker
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from core import claims, queries, writes
from core.capacity import SYNC_CAPACITY, CapacityReport, Sample
from core.clock import Clock
from core.domain import DispatchSummary, RunRecord, Schedule, ScheduleFilter
from core.exceptions import InvalidInput, QueueUnavailable, UnknownUser
from core.health import HealthReport, evaluate, measure_load
from core.scheduling import (
    rescheduled_after_change,
    validate_interval,
    validate_user_id,
)
from core.settings import Settings
from dispatcher.service import Dispatcher, Mode
from dispatcher.workers import worker_capacity

logger = logging.getLogger(__name__)

HISTORY_LIMIT = 20
PRUNE_BATCH = 5000
CHART_HOURS = 6  # the admin chart's span


class Wiring(Protocol):
    """What the services need from the entry layer's wiring."""

    settings: Settings
    engine: Engine
    clock: Clock

    @property
    def redis(self) -> Redis: ...

    def dispatcher(self, mode: Mode) -> Dispatcher: ...


@dataclass(frozen=True)
class ScheduleChange:
    schedule: Schedule
    created: bool


@dataclass(frozen=True)
class Snapshot:
    """A schedule (or None) with the "now" it was read at, to tell whether it is running."""

    schedule: Schedule | None
    now: datetime


@dataclass(frozen=True)
class SchedulePage:
    rows: list[Schedule]
    now: datetime
    has_more: bool


@dataclass(frozen=True)
class QueueHealth:
    mode: Literal["queue", "sync"]
    reachable: bool | None = None
    queue_length: int | None = None
    workers: int | None = None
    failed_jobs: int | None = None
    started_jobs: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class DispatcherStatus:
    last_pass: DispatchSummary | None
    last_pass_at: datetime | None
    last_run_finished_at: datetime | None
    due_now: int
    oldest_due_age_seconds: float | None


@dataclass(frozen=True)
class Readiness:
    """Can this process serve? Not whether the dispatcher keeps up: that is `scheduler_health`."""

    ready: bool
    database: str
    redis: str


@dataclass(frozen=True)
class SchedulerHealth:
    problems: list[str]
    last_pass_age_seconds: float | None = None
    scheduling_lag_seconds: float | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


# --- schedule changes (functions: the behaviour tests call them on a bare engine and clock) -------


def _checked(user_id: str, interval: object | None) -> tuple[str, int | None]:
    try:
        validate_user_id(user_id)
        return user_id, (validate_interval(interval) if interval is not None else None)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def set_schedule(
    engine: Engine,
    clock: Clock,
    *,
    user_id: str,
    interval: object | None = None,
    enabled: bool | None = None,
    default_interval: int,
    create: bool = True,
) -> ScheduleChange:
    """Validate, then create or change a schedule in one transaction (InvalidInput/UnknownUser
    raise before anything is written)."""
    user_id, interval_minutes = _checked(user_id, interval)
    with engine.begin() as conn:
        now = clock.now(conn)
        current = queries.get_schedule(conn, user_id, for_update=True)
        if current is None:
            if not create:
                raise UnknownUser(f"no schedule for user {user_id!r}")
            writes.insert_schedule(
                conn,
                user_id=user_id,
                enabled=True if enabled is None else enabled,
                interval_minutes=interval_minutes or default_interval,
                next_run_at=now,
                now=now,
            )
            created = True
        else:
            new_enabled = current.enabled if enabled is None else enabled
            new_interval = current.interval_minutes if interval_minutes is None else interval_minutes
            writes.update_schedule(
                conn, user_id=user_id, now=now, enabled=new_enabled, interval_minutes=new_interval,
                next_run_at=_next_run_after_change(current, now, new_enabled, new_interval),
            )
            created = False
        schedule = queries.get_schedule(conn, user_id)
    assert schedule is not None  # written in this transaction
    return ScheduleChange(schedule, created)


def _next_run_after_change(current: Schedule, now: datetime, enabled: bool, interval: int) -> datetime | None:
    if current.locked_by is not None:
        # Even an expired lease owns nextRunAt until the run finishes, is taken over or unlocked.
        return None
    enabling = enabled and not current.enabled
    interval_changed = interval != current.interval_minutes
    if enabled and (enabling or interval_changed):
        return rescheduled_after_change(now, current.run_slot, interval)
    return None


def get_schedule(engine: Engine, user_id: str) -> Schedule:
    with engine.connect() as conn:
        schedule = queries.get_schedule(conn, user_id)
    if schedule is None:
        raise UnknownUser(f"no schedule for user {user_id!r}")
    return schedule


# --- the service --------------------------------------------------------------------------------


class SchedulerService:
    def __init__(self, wiring: Wiring) -> None:
        self.wiring = wiring

    @property
    def settings(self) -> Settings:
        return self.wiring.settings

    @property
    def engine(self) -> Engine:
        return self.wiring.engine

    @property
    def clock(self) -> Clock:
        return self.wiring.clock

    def default_mode(self) -> Mode:
        return Mode.QUEUE if self.settings.queue_mode_available else Mode.SYNC

    # --- schedules --------------------------------------------------------------------------------

    def set_schedule(self, user_id: str, *, interval: object | None = None, enabled: bool | None = None, create: bool = True) -> ScheduleChange:
        return set_schedule(
            self.engine, self.clock, user_id=user_id, interval=interval, enabled=enabled,
            default_interval=self.settings.DEFAULT_INTERVAL_MINUTES, create=create,
        )

    def update_schedule(self, user_id: str, *, enabled: bool | None, interval: object | None, create: bool) -> Snapshot:
        change = self.set_schedule(user_id, interval=interval, enabled=enabled, create=create)
        return self.read_schedule(change.schedule.user_id)

    def get_schedule(self, user_id: str) -> Schedule:
        return get_schedule(self.engine, user_id)

    def read_schedule(self, user_id: str) -> Snapshot:
        with self.engine.connect() as conn:
            return Snapshot(queries.get_schedule(conn, user_id), self.clock.now(conn))

    def history(self, user_id: str | None, limit: int = HISTORY_LIMIT) -> list[RunRecord]:
        with self.engine.connect() as conn:
            return queries.recent_runs(conn, user_id=user_id, limit=limit)

    def list_page(self, *, which: ScheduleFilter | None, search: str | None, limit: int, offset: int) -> SchedulePage:
        with self.engine.connect() as conn:
            now = self.clock.now(conn)
            # One row more than asked tells whether a next page exists without a COUNT over the table.
            rows = queries.list_schedules(conn, now=now, which=which, search=search or None, limit=limit + 1, offset=offset)
        return SchedulePage(rows[:limit], now, len(rows) > limit)

    def seed_demo_users(self, users: Iterable[tuple[str, int]]) -> list[str]:
        """Create the demo schedules that do not exist yet (a restart keeps what the demo changed)."""
        seeded = []
        for user_id, interval in users:
            try:
                self.get_schedule(user_id)
            except UnknownUser:
                self.set_schedule(user_id, interval=interval, enabled=True)
            seeded.append(user_id)
        return seeded

    # --- running ----------------------------------------------------------------------------------

    def run_now(self, user_id: str, mode: Mode | None = None) -> tuple[DispatchSummary, Snapshot]:
        """Direct mode: queued when Redis is configured, inline otherwise. Raises UnknownUser/LeaseHeld."""
        summary = self.wiring.dispatcher(mode or self.default_mode()).run_user_now(user_id)
        return summary, self.read_schedule(user_id)

    def dispatch_pass(self, mode: Mode | None = None) -> DispatchSummary:
        return self.wiring.dispatcher(mode or self.default_mode()).tick()

    # --- operations -------------------------------------------------------------------------------

    def unlock_expired(self) -> list[str]:
        with self.engine.begin() as conn:
            return claims.unlock_expired(conn, now=self.clock.now(conn))

    def prune_history(self, days: int | None = None) -> tuple[int, datetime]:
        """Delete history older than `days` (HISTORY_RETENTION_DAYS) in short transactions."""
        return self._prune(lambda conn, cutoff: writes.prune_runs(conn, finished_before=cutoff, batch=PRUNE_BATCH),
                           days or self.settings.HISTORY_RETENTION_DAYS)

    def prune_samples(self) -> tuple[int, datetime]:
        """Delete capacity samples older than CAPACITY_SAMPLE_RETENTION days, in short transactions."""
        return self._prune(lambda conn, cutoff: writes.prune_samples(conn, taken_before=cutoff, batch=PRUNE_BATCH),
                           self.settings.CAPACITY_SAMPLE_RETENTION)

    def _prune(self, delete_batch: Callable[[Connection, datetime], int], days: int) -> tuple[int, datetime]:
        """Batches of `delete_batch` until one deletes nothing, each its own short transaction."""
        with self.engine.connect() as conn:
            cutoff = self.clock.now(conn) - timedelta(days=days)
        total = 0
        while True:
            with self.engine.begin() as conn:
                deleted = delete_batch(conn, cutoff)
            total += deleted
            if deleted == 0:
                return total, cutoff

    # --- capacity ---------------------------------------------------------------------------------

    def available_capacity(self) -> int | None:
        """Runs the live workers execute at once (RQ's worker registry × announced threads); in
        sync mode the dispatcher itself, one at a time; None when Redis does not answer."""
        if not self.settings.queue_mode_available:
            return SYNC_CAPACITY
        try:
            return worker_capacity(Queue(self.settings.QUEUE_NAME, connection=self.wiring.redis))
        except (QueueUnavailable, OSError) as exc:
            logger.warning("capacity: workers unknown: %s", exc)
            return None

    def capacity(self) -> CapacityReport:
        """Needed against available now, the backlog and its expected wait, and since when demand
        has stayed above capacity (from the passes' samples)."""
        available = self.available_capacity()
        with self.engine.connect() as conn:
            now = self.clock.now(conn)
            load = measure_load(
                conn, now=now, window_minutes=self.settings.CAPACITY_RUN_WINDOW,
                default_run_seconds=self.settings.CAPACITY_DEFAULT_RUN_SECONDS,
            )
            since = queries.overload_started(conn, queries.latest_sample(conn))
        return CapacityReport(now=now, load=load, capacity=available, overloaded_since=since)

    def capacity_history(self, hours: int = CHART_HOURS) -> tuple[datetime, list[Sample]]:
        """The samples of the last `hours`, oldest first, and the "now" they end at."""
        with self.engine.connect() as conn:
            now = self.clock.now(conn)
            return now, queries.samples_between(conn, start=now - timedelta(hours=hours), end=now)

    def health(self) -> HealthReport:
        """The dead-man check: passes succeed and due users do not wait too long."""
        with self.engine.connect() as conn:
            return evaluate(conn, now=self.clock.now(conn), settings=self.settings)

    def queue_health(self) -> QueueHealth:
        """From RQ's own registries; "sync" when there is no Redis."""
        if not self.settings.queue_mode_available:
            return QueueHealth(mode="sync")
        try:
            redis = self.wiring.redis
            queue = Queue(self.settings.QUEUE_NAME, connection=redis)
            return QueueHealth(
                mode="queue",
                reachable=True,
                queue_length=queue.count,
                workers=Worker.count(connection=redis, queue=queue),
                failed_jobs=queue.failed_job_registry.count,
                started_jobs=queue.started_job_registry.count,
            )
        except (RedisError, OSError) as exc:
            logger.warning("queue health: Redis unreachable: %s", exc)
            return QueueHealth(mode="queue", reachable=False, error=f"Redis unreachable: {exc.__class__.__name__}")

    def dispatcher_status(self) -> DispatcherStatus:
        with self.engine.connect() as conn:
            now = self.clock.now(conn)
            last_pass_at, detail = queries.last_dispatch_pass(conn)
            newest = queries.recent_runs(conn, limit=1)
            oldest = queries.oldest_due(conn, now=now)
            due = queries.count_due(conn, now=now)
        return DispatcherStatus(
            last_pass=_summary_from_json(detail),
            last_pass_at=last_pass_at.replace(tzinfo=UTC) if last_pass_at else None,  # stored naive UTC
            last_run_finished_at=newest[0].finished_at if newest else None,
            due_now=due,
            oldest_due_age_seconds=(now - oldest).total_seconds() if oldest is not None else None,
        )

    def readiness(self) -> Readiness:
        database = redis = "ok"
        try:
            with self.engine.connect() as conn:
                queries.ping(conn)
        except Exception as exc:  # any driver error means "not ready", never a 500
            logger.warning("readyz: database unreachable: %s", exc)
            database = f"unreachable: {exc.__class__.__name__}"
        if not self.settings.queue_mode_available:
            redis = "sync mode (no REDIS_URL)"
        else:
            try:
                self.wiring.redis.ping()
            except (RedisError, OSError) as exc:
                logger.warning("readyz: Redis unreachable: %s", exc)
                redis = f"unreachable: {exc.__class__.__name__}"
        return Readiness(database == "ok" and not redis.startswith("unreachable"), database, redis)

    def scheduler_health(self) -> SchedulerHealth:
        """The dead-man check of `monitor-scheduler check`, for the web: a recent successful pass,
        no due user waiting too long; a database it cannot read is a problem, never a 500."""
        try:
            report = self.health()
        except SQLAlchemyError as exc:
            logger.warning("scheduler health: database unreachable: %s", exc)
            return SchedulerHealth([f"database unreachable: {exc.__class__.__name__}"])
        if not report.ok:
            logger.warning("scheduler health: %s", "; ".join(report.problems))
        return SchedulerHealth(list(report.problems), report.last_pass_age_seconds, report.scheduling_lag_seconds)


def _summary_from_json(detail: str | None) -> DispatchSummary | None:
    if not detail:
        return None
    known = set(DispatchSummary.__dataclass_fields__)
    # Rows written by an older release may carry fields this one dropped (e.g. "batches").
    return DispatchSummary(**{k: v for k, v in json.loads(detail).items() if k in known})
