"""The operations pages and API share, as calls into the core services and repository.

Everything here is the same code the CLI runs (schedules.set_schedule, Dispatcher.run_user_now,
repository queries); this module only gathers what one screen or endpoint needs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.exceptions import RedisError
from rq import Queue, Worker
from sqlalchemy.exc import SQLAlchemyError

from dispatcher.service import DispatchSummary, Mode
from monitor_scheduler import repository as repo
from monitor_scheduler.health import evaluate as evaluate_health
from monitor_scheduler import schedules as schedule_service
from monitor_scheduler.repository import RunRecord, Schedule, ScheduleFilter
from web.state import WebState

logger = logging.getLogger(__name__)

HISTORY_LIMIT = 20


@dataclass(frozen=True)
class Snapshot:
    """A schedule (or None) with the "now" it was read at, to tell whether it is running."""

    schedule: Schedule | None
    now: datetime


def read_schedule(web: WebState, user_id: str) -> Snapshot:
    with web.app.engine.connect() as conn:
        return Snapshot(repo.get_schedule(conn, user_id), web.app.clock.now(conn))


def history(web: WebState, user_id: str, limit: int = HISTORY_LIMIT) -> list[RunRecord]:
    with web.app.engine.connect() as conn:
        return repo.recent_runs(conn, user_id=user_id, limit=limit)


def update_schedule(web: WebState, user_id: str, *, enabled: bool | None, interval: object | None, create: bool) -> Snapshot:
    """Validate and save (InvalidInput/UnknownUser raise before anything is written)."""
    change = schedule_service.set_schedule(
        web.app.engine, web.app.clock, user_id=user_id, interval=interval, enabled=enabled,
        default_interval=web.app.settings.DEFAULT_INTERVAL_MINUTES, create=create,
    )
    return read_schedule(web, change.schedule.user_id)


def run_now(web: WebState, user_id: str, mode: Mode | None = None) -> tuple[DispatchSummary, Snapshot]:
    """Direct mode: queued when Redis is configured, inline otherwise. Raises UnknownUser/LeaseHeld."""
    mode = mode or web.app.default_mode()
    summary = web.dispatcher(mode).run_user_now(user_id, mode)
    return summary, read_schedule(web, user_id)


def dispatch_pass(web: WebState, mode: Mode) -> DispatchSummary:
    return web.dispatcher(mode).tick(mode)


@dataclass(frozen=True)
class SchedulePage:
    rows: list[Schedule]
    now: datetime
    has_more: bool


def list_page(web: WebState, *, which: ScheduleFilter | None, search: str | None, limit: int, offset: int) -> SchedulePage:
    with web.app.engine.connect() as conn:
        now = web.app.clock.now(conn)
        # One row more than asked tells whether a next page exists without a COUNT over the table.
        rows = repo.list_schedules(conn, now=now, which=which, search=search or None, limit=limit + 1, offset=offset)
    return SchedulePage(rows[:limit], now, len(rows) > limit)


def unlock_expired(web: WebState) -> list[str]:
    with web.app.engine.begin() as conn:
        return repo.unlock_expired(conn, now=web.app.clock.now(conn))


@dataclass(frozen=True)
class QueueHealth:
    mode: str
    reachable: bool | None = None
    queue_length: int | None = None
    workers: int | None = None
    failed_jobs: int | None = None
    started_jobs: int | None = None
    error: str | None = None


def queue_health(web: WebState) -> QueueHealth:
    """From RQ's own registries; "sync" when there is no Redis."""
    if not web.app.settings.queue_mode_available:
        return QueueHealth(mode=Mode.SYNC.value)
    try:
        queue = Queue(web.app.settings.QUEUE_NAME, connection=web.app.redis)
        return QueueHealth(
            mode=Mode.QUEUE.value,
            reachable=True,
            queue_length=queue.count,
            workers=Worker.count(connection=web.app.redis, queue=queue),
            failed_jobs=queue.failed_job_registry.count,
            started_jobs=queue.started_job_registry.count,
        )
    except (RedisError, OSError) as exc:
        logger.warning("queue health: Redis unreachable: %s", exc)
        return QueueHealth(mode=Mode.QUEUE.value, reachable=False, error=f"Redis unreachable: {exc.__class__.__name__}")


@dataclass(frozen=True)
class DispatcherStatus:
    last_pass: DispatchSummary | None
    last_pass_at: datetime | None
    last_run_finished_at: datetime | None
    due_now: int
    oldest_due_age_seconds: float | None


def dispatcher_status(web: WebState) -> DispatcherStatus:
    with web.app.engine.connect() as conn:
        now = web.app.clock.now(conn)
        last_pass_at, detail = repo.last_dispatch_pass(conn)
        last_pass = DispatchSummary(**json.loads(detail)) if detail else None
        newest = repo.recent_runs(conn, limit=1)
        oldest = repo.oldest_due(conn, now=now)
        due = repo.count_due(conn, now=now)
    return DispatcherStatus(
        last_pass=last_pass,
        last_pass_at=last_pass_at.replace(tzinfo=UTC) if last_pass_at else None,  # stored naive UTC
        last_run_finished_at=newest[0].finished_at if newest else None,
        due_now=due,
        oldest_due_age_seconds=(now - oldest).total_seconds() if oldest is not None else None,
    )


@dataclass(frozen=True)
class Readiness:
    """Can this process serve? Not whether the dispatcher keeps up: that is `scheduler_health`."""

    ready: bool
    database: str
    redis: str


def readiness(web: WebState) -> Readiness:
    database = redis = "ok"
    try:
        with web.app.engine.connect() as conn:
            repo.ping(conn)
    except Exception as exc:  # any driver error means "not ready", never a 500
        logger.warning("readyz: database unreachable: %s", exc)
        database = f"unreachable: {exc.__class__.__name__}"
    if not web.app.settings.queue_mode_available:
        redis = "sync mode (no REDIS_URL)"
    else:
        try:
            web.app.redis.ping()
        except (RedisError, OSError) as exc:
            logger.warning("readyz: Redis unreachable: %s", exc)
            redis = f"unreachable: {exc.__class__.__name__}"
    return Readiness(database == "ok" and not redis.startswith("unreachable"), database, redis)


@dataclass(frozen=True)
class SchedulerHealth:
    problems: list[str]
    last_pass_age_seconds: float | None = None
    scheduling_lag_seconds: float | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def scheduler_health(web: WebState) -> SchedulerHealth:
    """The dead-man check of `monitor-scheduler check`: a recent successful pass, no due user waiting too long."""
    try:
        with web.app.engine.connect() as conn:
            report = evaluate_health(conn, now=web.app.clock.now(conn), settings=web.app.settings)
    except SQLAlchemyError as exc:  # cannot tell: unhealthy, never a 500
        logger.warning("scheduler health: database unreachable: %s", exc)
        return SchedulerHealth([f"database unreachable: {exc.__class__.__name__}"])
    if not report.ok:
        logger.warning("scheduler health: %s", "; ".join(report.problems))
    return SchedulerHealth(list(report.problems), report.last_pass_age_seconds, report.scheduling_lag_seconds)
