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
from collections.abc import Iterator
from datetime import datetime, timedelta

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from typing_extensions import override

from core import queries
from core.capacity import CapacityReport
from core.clock import epoch_ms
from services.status import QueueHealth, Status

PREFIX = "monitor_scheduler"
RUN_WINDOW = timedelta(minutes=5)
DURATION_BUCKETS_MS = (10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000)


class SchedulerCollector(Collector):
    """The capacity figures and the queue statistics come from `status`, as the admin page's do."""

    def __init__(self, status: Status) -> None:
        self.status = status

    @override
    def collect(self) -> Iterator[GaugeMetricFamily | HistogramMetricFamily]:
        yield from self._capacity(self.status.capacity())
        with self.status.engine.connect() as conn:
            now = self.status.clock.now(conn)
            since = now - RUN_WINDOW
            yield self._runs(queries.run_counts_since(conn, since=since))
            yield self._durations(*queries.duration_buckets_since(conn, since=since, bounds_ms=DURATION_BUCKETS_MS))
            yield from self._backlog(queries.count_due(conn, now=now), queries.oldest_due(conn, now=now), now)
            yield GaugeMetricFamily(f"{PREFIX}_paused_schedules", "Schedules paused after consecutive failed slots, not run until resumed",
                                    value=queries.count_paused(conn))
            yield GaugeMetricFamily(f"{PREFIX}_expired_leases", "Leases expired and not yet recovered (runs lost, due again)", value=queries.count_expired_leases(conn, now=now))
            yield from self._last_pass(*queries.last_dispatch_pass(conn))
        yield from self._queue(self.status.queue_health())

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

    def _capacity(self, report: CapacityReport) -> Iterator[GaugeMetricFamily]:
        counts = report.load.counts
        yield GaugeMetricFamily(
            f"{PREFIX}_capacity_needed", "Runs at once the enabled schedules need: sum of average run seconds / interval seconds", value=report.needed,
        )
        if report.capacity is not None:
            yield GaugeMetricFamily(f"{PREFIX}_capacity_available", "Runs the live workers execute at once (workers x threads; SYNC_THREADS in sync mode)", value=report.capacity)
        yield GaugeMetricFamily(f"{PREFIX}_backlog", "Runs waiting for a worker: due plus queued", value=report.backlog)
        family = GaugeMetricFamily(f"{PREFIX}_runs", "Schedules by where their run is", labels=["state"])
        for state, count in (("due", counts.due), ("queued", counts.queued), ("running", counts.running)):
            family.add_metric([state], count)
        yield family
        wait = report.expected_wait_seconds
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

    def _queue(self, queue: QueueHealth) -> Iterator[GaugeMetricFamily]:
        if queue.mode == "sync":
            return
        yield GaugeMetricFamily(f"{PREFIX}_queue_up", "1 when Redis answered the scrape", value=1 if queue.reachable else 0)
        if queue.reachable:
            yield GaugeMetricFamily(f"{PREFIX}_queue_depth", "Jobs waiting in the RQ queue", value=queue.queue_length or 0)
            yield GaugeMetricFamily(f"{PREFIX}_queue_failed_jobs", "Jobs in RQ's failed registry", value=queue.failed_jobs or 0)
