"""Is the scheduler doing its job? The answer behind `monitor-scheduler check`, /healthz/scheduler and /metrics.

Two facts catch the usual silent failures: no dispatch pass has succeeded for too long (cron line
lost, dispatcher loop dead, database credentials rotated), and the oldest due row has waited too
long (workers down, queue stuck, passes capped too low for the load).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection

from core import queries
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
    return report
