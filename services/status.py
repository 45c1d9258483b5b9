"""Status: capacity, queue health, the dispatcher's status, readiness and the dead-man check.

Every reader asks here: the admin page and API, /metrics (services.metrics) and `check`. The
capacity figures themselves are computed in one function (core.health.capacity_report), which a
dispatch pass also uses for its sample; the runs at once the workers offer are counted by one
function too (dispatcher.workers.available_capacity). RQ's queue statistics are read only by
`queue_health`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Worker
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from core import health, queries
from core.capacity import CapacityReport, Sample
from core.clock import Clock
from core.domain import DispatchSummary
from core.health import HealthReport
from core.settings import Settings
from dispatcher.workers import available_capacity

logger = logging.getLogger(__name__)

CHART_HOURS = 6  # the admin chart's span


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


def _iso(moment: datetime | None) -> str | None:
    """Naive UTC from the database as ISO 8601 with its zone, as the API writes times."""
    return None if moment is None else moment.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def capacity_figures(report: CapacityReport) -> dict[str, object]:
    """The capacity as the API spells it (JSON-ready, camelCase): the admin overview,
    /healthz/scheduler and `check --json` give these same figures, which `check` prints."""
    counts = report.load.counts
    return {
        "needed": report.needed, "available": report.capacity,
        "due": counts.due, "queued": counts.queued, "running": counts.running, "backlog": report.backlog,
        "averageRunSeconds": report.load.average_run_seconds, "expectedWaitSeconds": report.expected_wait_seconds,
        "overloaded": report.overloaded, "overloadedSince": _iso(report.overloaded_since),
    }


@dataclass(frozen=True)
class SchedulerHealth:
    problems: list[str]
    last_pass_age_seconds: float | None = None
    scheduling_lag_seconds: float | None = None
    capacity: CapacityReport | None = None  # None when the database could not be read

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, object]:
        """The body of GET /healthz/scheduler and of `monitor-scheduler check --json`."""
        return {
            "status": "ok" if self.ok else "unhealthy", "problems": self.problems,
            "lastPassAgeSeconds": self.last_pass_age_seconds, "schedulingLagSeconds": self.scheduling_lag_seconds,
            "capacity": None if self.capacity is None else capacity_figures(self.capacity),
        }


class Status:
    """Read-only answers about the whole scheduler. `redis` is None in sync mode (no REDIS_URL)."""

    def __init__(self, settings: Settings, engine: Engine, clock: Clock, redis: Redis | None) -> None:
        self.settings = settings
        self.engine = engine
        self.clock = clock
        self.redis = redis

    def _queue(self) -> Queue | None:
        return None if self.redis is None else Queue(self.settings.QUEUE_NAME, connection=self.redis)

    # --- capacity ---------------------------------------------------------------------------------

    def capacity(self) -> CapacityReport:
        """Needed against available now, the backlog and its expected wait, and since when demand
        has stayed above capacity (from the passes' samples)."""
        available = available_capacity(self._queue(), sync_threads=self.settings.SYNC_THREADS)
        with self.engine.connect() as conn:
            return health.capacity_report(
                conn, now=self.clock.now(conn), available=available,
                window_minutes=self.settings.CAPACITY_RUN_WINDOW, default_run_seconds=self.settings.CAPACITY_DEFAULT_RUN_SECONDS,
            )

    def capacity_history(self, hours: int = CHART_HOURS) -> tuple[datetime, list[Sample]]:
        """The samples of the last `hours`, oldest first, and the "now" they end at."""
        with self.engine.connect() as conn:
            now = self.clock.now(conn)
            return now, queries.samples_between(conn, start=now - timedelta(hours=hours), end=now)

    # --- the queue and the dispatcher -------------------------------------------------------------

    def queue_health(self) -> QueueHealth:
        """From RQ's own registries; "sync" when there is no Redis."""
        queue = self._queue()
        if queue is None:
            return QueueHealth(mode="sync")
        try:
            return QueueHealth(
                mode="queue",
                reachable=True,
                queue_length=queue.count,
                workers=Worker.count(connection=queue.connection, queue=queue),
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

    # --- health -----------------------------------------------------------------------------------

    def health(self) -> HealthReport:
        """The dead-man check: passes succeed and due users do not wait too long."""
        with self.engine.connect() as conn:
            return health.evaluate(conn, now=self.clock.now(conn), settings=self.settings)

    def readiness(self) -> Readiness:
        database = redis = "ok"
        try:
            with self.engine.connect() as conn:
                queries.ping(conn)
        except Exception as exc:  # any driver error means "not ready", never a 500
            logger.warning("readyz: database unreachable: %s", exc)
            database = f"unreachable: {exc.__class__.__name__}"
        if self.redis is None:
            redis = "sync mode (no REDIS_URL)"
        else:
            try:
                self.redis.ping()
            except (RedisError, OSError) as exc:
                logger.warning("readyz: Redis unreachable: %s", exc)
                redis = f"unreachable: {exc.__class__.__name__}"
        return Readiness(database == "ok" and not redis.startswith("unreachable"), database, redis)

    def scheduler_health(self) -> SchedulerHealth:
        """The dead-man check of `monitor-scheduler check` and /healthz/scheduler: a recent
        successful pass, no due user waiting too long, demand not above capacity for too long, with
        the capacity figures; a database it cannot read is a problem, never a 500 or a traceback."""
        try:
            report = self.health()
            capacity = self.capacity()
        except SQLAlchemyError as exc:
            logger.warning("scheduler health: database unreachable: %s", exc)
            return SchedulerHealth([f"database unreachable: {exc.__class__.__name__}"])
        if not report.ok:
            logger.warning("scheduler health: %s", "; ".join(report.problems))
        return SchedulerHealth(list(report.problems), report.last_pass_age_seconds, report.scheduling_lag_seconds, capacity)


def _summary_from_json(detail: str | None) -> DispatchSummary | None:
    if not detail:
        return None
    known = set(DispatchSummary.__dataclass_fields__)
    # Rows written by an older release may carry fields this one dropped (e.g. "batches").
    return DispatchSummary(**{k: v for k, v in json.loads(detail).items() if k in known})
