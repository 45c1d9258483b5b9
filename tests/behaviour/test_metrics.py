"""/metrics content, computed from the database at scrape time."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from dispatcher.service import Dispatcher
from services.metrics import SchedulerCollector
from services.status import Status
from tests.conftest import Backend
from core.executor import Runner


def scrape(backend: Backend, *, redis: Redis | None = None, **settings: object) -> dict[tuple[str, tuple], float]:
    registry = CollectorRegistry()
    registry.register(SchedulerCollector(Status(backend.settings(**settings), backend.engine, backend.clock, redis)))
    samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_reflect_runs_backlog_and_the_last_pass(backend: Backend) -> None:
    backend.add_schedules(3, interval=5)
    backend.add_schedules(2, due_at=backend.clock.moment - timedelta(seconds=40), prefix="late")
    cfg = backend.settings(DISPATCH_BATCH_SIZE=4)
    calls = []

    def task(user_id, context):
        calls.append(user_id)
        if user_id == "user-000001":
            raise RuntimeError("down")

    Dispatcher.inline(cfg, backend.engine, backend.clock, Runner(backend.engine, cfg, backend.clock, task)).tick()
    m = scrape(backend)

    assert m[("monitor_scheduler_recent_runs", (("status", "succeeded"), ("trigger", "sync")))] == 3
    assert m[("monitor_scheduler_recent_runs", (("status", "failed"), ("trigger", "sync")))] == 1
    assert m[("monitor_scheduler_recent_run_duration_seconds_count", ())] == 4
    assert m[("monitor_scheduler_due_schedules", ())] == 1, "the batch cap left one user due"
    assert m[("monitor_scheduler_last_dispatch_pass_claimed", ())] == 4
    assert m[("monitor_scheduler_scheduling_lag_seconds", ())] == 0, "the late ones went first; the one left is due now"
    assert ("monitor_scheduler_queue_depth", ()) not in m, "no Redis: no queue metrics"
    backend.clock.advance(minutes=10)
    assert m != scrape(backend)
    assert scrape(backend)[("monitor_scheduler_scheduling_lag_seconds", ())] == 600
