"""Prometheus metrics, computed from the database (and Redis) when scraped.

Why at scrape time: runs happen in any number of worker processes on any number of hosts, and none
of them serves HTTP. Reading the shared state when Prometheus asks gives one consistent answer
from one endpoint, with no multiprocess directory to share and nothing lost when a worker restarts.
The price is a few indexed queries per scrape. Run counts and durations cover a sliding window
(RUN_WINDOW), so they are gauges: use them directly (e.g. failed runs in the last 5 minutes),
not with rate().
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from sqlalchemy import Engine
from typing_extensions import override

from core import queries
from core.capacity import SYNC_CAPACITY, Load, expected_wait_seconds
from core.clock import Clock, epoch_ms
from core.exceptions import QueueUnavailable
from core.health import measure_load
from dispatcher.workers import worker_capacity

logger = logging.getLogger(__name__)

PREFIX = "monitor_scheduler"
RUN_WINDOW = timedelta(minutes=5)
DURATION_BUCKETS_MS = (10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000)


class SchedulerCollector(Collector):
    def __init__(
        self, engine: Engine, clock: Clock, *, redis: Redis | None = None, queue_name: str = "monitor-user-tasks",
        capacity_window_minutes: int = 60, default_run_seconds: float = 10.0,
    ) -> None:
        self.engine, self.clock, self.redis, self.queue_name = engine, clock, redis, queue_name
        self.capacity_window_minutes, self.default_run_seconds = capacity_window_minutes, default_run_seconds

    @override
    def collect(self) -> Iterator[GaugeMetricFamily | HistogramMetricFamily]:
        available = self._available()
        with self.engine.connect() as conn:
            now = self.clock.now(conn)
            since = now - RUN_WINDOW
            yield from self._capacity(
                measure_load(conn, now=now, window_minutes=self.capacity_window_minutes, default_run_seconds=self.default_run_seconds),
                available,
            )
            yield self._runs(queries.run_counts_since(conn, since=since))
            yield self._durations(*queries.duration_buckets_since(conn, since=since, bounds_ms=DURATION_BUCKETS_MS))
            yield from self._backlog(queries.count_due(conn, now=now), queries.oldest_due(conn, now=now), now)
            yield GaugeMetricFamily(f"{PREFIX}_expired_leases", "Leases expired and not yet recovered (runs lost, due again)", value=queries.count_expired_leases(conn, now=now))
            yield from self._last_pass(*queries.last_dispatch_pass(conn))
        yield from self._queue()

    def _runs(self, counts: list[tuple[str, str, int]]) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            f"{PREFIX}_recent_runs", f"Runs finished in the last {int(RUN_WINDOW.total_seconds())} s, by status and trigger "
            "(status=lost counts expired leases recovered)", labels=["status", "trigger"],
        )
        for status, trigger, count in counts:
            family.add_metric([status, trigger], count)
        return family

    def _durations(self, cumulative: list[int], count: int, total_ms: int) -> HistogramMetricFamily:
        buckets = [(str(bound / 1000), value) for bound, value in zip(DURATION_BUCKETS_MS, cumulative)]
        buckets.append(("+Inf", count))
        return HistogramMetricFamily(
            f"{PREFIX}_recent_run_duration_seconds", f"Duration of runs finished in the last {int(RUN_WINDOW.total_seconds())} s",
            buckets=buckets, sum_value=total_ms / 1000,
        )

    def _backlog(self, due: int, oldest: datetime | None, now: datetime) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(f"{PREFIX}_due_schedules", "Schedules due now and not leased (the backlog)", value=due)
        lag = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
        yield GaugeMetricFamily(f"{PREFIX}_scheduling_lag_seconds", "Age of the oldest due schedule", value=lag)

    def _available(self) -> int | None:
        """The live workers' threads (sync mode: the dispatcher, one at a time); None: Redis failed."""
        if self.redis is None:
            return SYNC_CAPACITY
        try:
            return worker_capacity(Queue(self.queue_name, connection=self.redis))
        except QueueUnavailable as exc:
            logger.warning("metrics: workers unknown: %s", exc)
            return None

    def _capacity(self, load: Load, available: int | None) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            f"{PREFIX}_capacity_needed", "Runs at once the enabled schedules need: sum of average run seconds / interval seconds", value=load.demand,
        )
        if available is not None:
            yield GaugeMetricFamily(f"{PREFIX}_capacity_available", "Runs the live workers execute at once (workers x threads; 1 in sync mode)", value=available)
        yield GaugeMetricFamily(f"{PREFIX}_backlog", "Runs waiting for a worker: due plus queued", value=load.counts.backlog)
        family = GaugeMetricFamily(f"{PREFIX}_runs", "Schedules by where their run is", labels=["state"])
        for state, count in (("due", load.counts.due), ("queued", load.counts.queued), ("running", load.counts.running)):
            family.add_metric([state], count)
        yield family
        wait = expected_wait_seconds(load.counts.backlog, load.average_run_seconds, available)
        if wait is not None:
            yield GaugeMetricFamily(f"{PREFIX}_expected_wait_seconds", "Backlog x average run seconds / capacity (absent when no worker is live)", value=wait)

    def _last_pass(self, at: datetime | None, detail: str | None) -> Iterator[GaugeMetricFamily]:
        if at is None:
            return
        yield GaugeMetricFamily(f"{PREFIX}_last_dispatch_pass_timestamp_seconds", "When the last successful dispatch pass ended (unix time)", value=epoch_ms(at) / 1000)
        summary = json.loads(detail) if detail else {}
        yield GaugeMetricFamily(f"{PREFIX}_last_dispatch_pass_duration_seconds", "Duration of the last successful dispatch pass", value=summary.get("duration_ms", 0) / 1000)
        for key in ("claimed", "enqueued", "released", "skipped_backpressure"):
            yield GaugeMetricFamily(f"{PREFIX}_last_dispatch_pass_{key}", f"Users {key.replace('_', ' ')} by the last successful dispatch pass", value=summary.get(key, 0))

    def _queue(self) -> Iterator[GaugeMetricFamily]:
        if self.redis is None:
            return
        try:
            queue = Queue(self.queue_name, connection=self.redis)
            depth, failed = queue.count, queue.failed_job_registry.count
        except RedisError as exc:
            logger.warning("metrics: Redis unreachable: %s", exc)
            yield GaugeMetricFamily(f"{PREFIX}_queue_up", "1 when Redis answered the scrape", value=0)
            return
        yield GaugeMetricFamily(f"{PREFIX}_queue_up", "1 when Redis answered the scrape", value=1)
        yield GaugeMetricFamily(f"{PREFIX}_queue_depth", "Jobs waiting in the RQ queue", value=depth)
        yield GaugeMetricFamily(f"{PREFIX}_queue_failed_jobs", "Jobs in RQ's failed registry", value=failed)
