"""Is the scheduler doing its job? The answer behind `monitor-scheduler check`, /healthz/scheduler and /metrics.

Three facts catch the usual silent failures: no dispatch pass has succeeded for too long (cron line
lost, dispatcher loop dead, database credentials rotated), the oldest due row has waited too
long (workers down, queue stuck, passes capped too low for the load), and the schedules have
needed more runs at once than the workers offer for too long (the samples of the passes say since
when), which is the backlog's cause before it is its symptom.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection

from core import capacity, queries
from core.clock import utc_text
from core.settings import Settings


@dataclass(frozen=True)
class HealthReport:
    now: datetime
    last_pass_at: datetime | None
    oldest_due_at: datetime | None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def last_pass_age_seconds(self) -> float | None:
        return None if self.last_pass_at is None else (self.now - self.last_pass_at).total_seconds()

    @property
    def scheduling_lag_seconds(self) -> float:
        """Age of the oldest due row: 0 when nothing waits."""
        return 0.0 if self.oldest_due_at is None else max(0.0, (self.now - self.oldest_due_at).total_seconds())


# The per-user averages behind the demand cost one pass over the window's runs (about 0.65 s for
# 100k runs in the window on MariaDB, docs/operations.md); demand moves slowly, so it is computed
# once per period: the first sample of each period measures it, later readers in the same period
# (passes, the admin page, scrapes) take it from the newest sample.
DEMAND_PERIOD = timedelta(minutes=5)


def _period(moment: datetime) -> int:
    return int((moment - datetime(1970, 1, 1)) / DEMAND_PERIOD)


def capacity_report(
    conn: Connection, *, now: datetime, available: int | None, window_minutes: int, default_run_seconds: float
) -> capacity.CapacityReport:
    """The capacity figures, computed here only: the load now (`measure_load`), the runs at once
    the workers offer (`available`, read by the caller from RQ or the sync rule: None is unknown)
    and since when demand has stayed above capacity (from the samples). The admin page, the API,
    /metrics and `check` read it through services.status; a dispatch pass stores its `sample()`."""
    newest = queries.latest_sample(conn)
    load = _load(conn, now=now, window_minutes=window_minutes, default_run_seconds=default_run_seconds, newest=newest)
    return capacity.CapacityReport(now=now, load=load, capacity=available, overloaded_since=queries.overload_started(conn, newest))


def measure_load(
    conn: Connection, *, now: datetime, window_minutes: int, default_run_seconds: float, reuse: bool = True
) -> capacity.Load:
    """Due/queued/running now, and the runs at once the enabled schedules need, from each user's
    average run time over the last `window_minutes` (CAPACITY_RUN_WINDOW; users without a run in
    the window count at the window's average over all users, or `default_run_seconds`,
    CAPACITY_DEFAULT_RUN_SECONDS, when nothing ran). The demand comes from the newest sample when
    that was taken in the current DEMAND_PERIOD (and `reuse`), else it is measured."""
    newest = queries.latest_sample(conn) if reuse else None
    return _load(conn, now=now, window_minutes=window_minutes, default_run_seconds=default_run_seconds, newest=newest)


def _load(conn: Connection, *, now: datetime, window_minutes: int, default_run_seconds: float, newest: capacity.Sample | None) -> capacity.Load:
    since = now - timedelta(minutes=window_minutes)
    average = queries.average_run_seconds(conn, since=since)
    default = default_run_seconds if average is None else average
    if newest is not None and _period(newest.at) == _period(now):
        demand = newest.demand
    else:
        demand = capacity.demand(queries.interval_loads(conn, since=since), default)
    return capacity.Load(queries.run_counts(conn, now=now), demand, default)


def overload_problem(conn: Connection, *, now: datetime, settings: Settings) -> str | None:
    """The reason `check` fails when demand stayed above capacity longer than HEALTH_MAX_OVERLOAD,
    decided from the samples (one per pass); None otherwise."""
    newest = queries.latest_sample(conn)
    since = queries.overload_started(conn, newest)
    if since is None or newest is None:
        return None
    lasted = (now - since).total_seconds()
    if lasted <= settings.HEALTH_MAX_OVERLOAD:
        return None
    return (
        f"demand of {newest.demand:.1f} runs at once has exceeded capacity of {newest.capacity} for {lasted:.0f}s "
        f"(since {utc_text(since, sep=' ')}; backlog {newest.due + newest.queued}; HEALTH_MAX_OVERLOAD={settings.HEALTH_MAX_OVERLOAD})"
    )


def evaluate(conn: Connection, *, now: datetime, settings: Settings) -> HealthReport:
    last_pass_at, _ = queries.last_dispatch_pass(conn)
    oldest_due_at = queries.oldest_due(conn, now=now)
    report = HealthReport(now, last_pass_at, oldest_due_at)
    pass_age = report.last_pass_age_seconds
    if pass_age is None:
        report.problems.append("no dispatch pass has succeeded yet")
    elif pass_age > settings.HEALTH_MAX_PASS_AGE:
        report.problems.append(
            f"last successful dispatch pass was {pass_age:.0f}s ago (HEALTH_MAX_PASS_AGE={settings.HEALTH_MAX_PASS_AGE})"
        )
    if report.scheduling_lag_seconds > settings.HEALTH_MAX_DUE_AGE:
        report.problems.append(
            f"oldest due schedule has waited {report.scheduling_lag_seconds:.0f}s (HEALTH_MAX_DUE_AGE={settings.HEALTH_MAX_DUE_AGE})"
        )
    overload = overload_problem(conn, now=now, settings=settings)
    if overload:
        report.problems.append(overload)
    return report
