"""Capacity on the admin overview (API and page, with its chart) and in /metrics."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rq import Queue, Worker

from core import queries, writes
from core.capacity import WORKER_THREADS_FIELD, Sample
from core.domain import RunRecord
from tests.conftest import T0
from tests.conftest import Backend
from tests.web.conftest import WebHarness, make_harness

ADMIN = "/api/admin"


def history(web: WebHarness, user_id: str, seconds: float) -> None:
    at = web.backend.clock.moment - timedelta(minutes=1)
    with web.backend.engine.begin() as conn:
        writes.insert_runs(conn, [RunRecord(user_id, "schedule", at, 1, "t", "succeeded", None, 0, None, at, at, int(seconds * 1000), "w")])


def given_samples(web: WebHarness, *rows: Sample) -> None:
    with web.backend.engine.begin() as conn:
        for row in rows:
            writes.insert_sample(conn, row)


@pytest.fixture
def web(backend: Backend) -> Iterator[WebHarness]:
    """Sync mode running one run at a time (SYNC_THREADS=1): the capacity these stories count on."""
    harness = make_harness(backend, SYNC_THREADS=1)
    yield harness
    harness.client.close()


def metrics(web: WebHarness) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(web.client.get("/metrics").text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_overview_reports_needed_available_backlog_and_wait(web: WebHarness) -> None:
    # Given 4 users every minute whose runs take 30 s (2 runs at once needed), all due now,
    web.backend.add_schedules(4, interval=1)
    for i in range(4):
        history(web, f"user-{i:06d}", 30)
    # and passes that have seen demand above the sync dispatcher's one run at a time since T0,
    given_samples(web, Sample(T0 - timedelta(minutes=5), 0, 0, 0, 0.5, 1), Sample(T0, 4, 0, 0, 2.0, 1))
    web.backend.clock.advance(minutes=3)
    body = web.client.get(f"{ADMIN}/overview", headers=web.auth("root", admin=True)).json()
    assert body["capacity"] == {
        "needed": pytest.approx(2.0), "available": 1, "due": 4, "queued": 0, "running": 0, "backlog": 4,
        "averageRunSeconds": pytest.approx(30.0), "expectedWaitSeconds": pytest.approx(120.0),
        "overloaded": True, "overloadedSince": "2026-01-05T12:00:00Z",
    }


def test_the_admin_page_shows_the_figures_and_a_chart_of_due_queued_running_and_capacity(web: WebHarness) -> None:
    web.backend.add_schedules(2, interval=1)
    given_samples(web, *(Sample(T0 - timedelta(minutes=m), due=m % 7, queued=m % 3, running=1, demand=1.5, capacity=1) for m in range(0, 200, 10)))
    page = web.browser_client("root", admin=True).get("/admin").text
    assert 'id="capacity-needed">1.5<' in page, "the demand of this period's sample"
    assert 'id="capacity-available">1 (sync mode' in page
    chart = page[page.index('<svg id="capacity-chart"') : page.index("</svg>", page.index('<svg id="capacity-chart"'))]
    series = re.findall(r'<polyline class="series series-(\w+)" data-series="\w+" points="([^"]+)"', chart)
    assert [name for name, _ in series] == ["due", "queued", "running", "capacity"]
    assert all(len(points.split()) == 20 for _, points in series), "one point per sample"
    assert "<title" in chart and "style=" not in chart, "labelled, and nothing the CSP would block"
    assert re.findall(r'text-anchor="middle">(\d\d:\d\d)</text>', chart)[:1] == ["07:00"], "hourly UTC labels from 6 hours before T0 (12:00)"
    legend = page[page.index('<figcaption class="legend">') :]
    assert [label for label in ("Due", "Queued", "Running", "Capacity") if label in legend] == ["Due", "Queued", "Running", "Capacity"]


def test_without_samples_the_page_says_so_instead_of_an_empty_chart(web: WebHarness) -> None:
    page = web.browser_client("root", admin=True).get("/admin").text
    assert 'id="capacity-chart-empty"' in page and 'id="capacity-chart"' not in page


def test_sync_mode_offers_sync_threads_runs_at_once(backend: Backend) -> None:
    # Given sync mode with SYNC_THREADS=3 and 6 due users whose runs take 40 s,
    harness = make_harness(backend, SYNC_THREADS=3)
    harness.backend.add_schedules(6, interval=2)
    for i in range(6):
        history(harness, f"user-{i:06d}", 40)
    # then the admin API and /metrics count 3 runs at once, and the wait is the backlog shared by 3.
    body = harness.client.get(f"{ADMIN}/overview", headers=harness.auth("root", admin=True)).json()
    assert (body["capacity"]["available"], body["capacity"]["expectedWaitSeconds"]) == (3, pytest.approx(6 * 40 / 3))
    assert metrics(harness)[("monitor_scheduler_capacity_available", ())] == 3
    harness.client.close()


def test_capacity_gauges_in_metrics(web: WebHarness) -> None:
    web.backend.add_schedules(6, interval=2)
    for i in range(6):
        history(web, f"user-{i:06d}", 40)  # 6 × 40 s ÷ 120 s = 2 runs at once
    m = metrics(web)
    assert m[("monitor_scheduler_capacity_needed", ())] == pytest.approx(2.0)
    assert m[("monitor_scheduler_capacity_available", ())] == 1, "sync mode: the dispatcher, one run at a time"
    assert m[("monitor_scheduler_backlog", ())] == 6
    assert m[("monitor_scheduler_runs", (("state", "due"),))] == 6
    assert m[("monitor_scheduler_expected_wait_seconds", ())] == pytest.approx(6 * 40)


@pytest.mark.redis
def test_queue_mode_capacity_is_live_workers_times_their_threads(queue_web: WebHarness, redis_conn: Redis) -> None:
    queue = Queue(queue_web.app.settings.QUEUE_NAME, connection=redis_conn)
    # Given three registered RQ workers on the queue: a plain one, one announcing 4 threads, and
    # one whose process died (its hash expired; RQ has not cleaned its registry entry yet),
    plain, threaded, dead = (Worker([queue], connection=redis_conn, name=n) for n in ("plain", "threaded", "dead"))
    for worker in (plain, threaded, dead):
        worker.register_birth()
    redis_conn.hset(threaded.key, WORKER_THREADS_FIELD, 4)
    redis_conn.delete(dead.key)
    queue_web.backend.add_schedules(3)
    # when a pass enqueues 3 runs, then its sample, the overview and /metrics all say 5 at once.
    queue_web.cron({})
    body = queue_web.client.get(f"{ADMIN}/overview", headers=queue_web.auth("root", admin=True)).json()
    assert (body["capacity"]["available"], body["capacity"]["queued"], body["capacity"]["due"]) == (5, 3, 0)
    assert metrics(queue_web)[("monitor_scheduler_capacity_available", ())] == 5
    with queue_web.backend.engine.connect() as conn:
        sample = queries.latest_sample(conn)
    assert sample is not None and sample.capacity == 5


def test_the_api_the_metrics_and_the_passs_sample_show_the_same_figures(web: WebHarness) -> None:
    # Given users with a run history and others due later, and a sync pass that ran the due ones,
    web.backend.add_schedules(3, interval=1)
    for i in range(3):
        history(web, f"user-{i:06d}", 12)
    web.backend.add_schedules(2, prefix="later", due_at=web.backend.clock.moment + timedelta(minutes=10))
    assert web.app.services.runs.dispatch_pass().ran == 3
    with web.backend.engine.connect() as conn:
        sample = queries.latest_sample(conn)
    assert sample is not None
    # then the admin API and /metrics, asked at the same moment, report what the pass stored:
    # one computation (core.health.capacity_report) behind all of them.
    capacity = web.client.get(f"{ADMIN}/overview", headers=web.auth("root", admin=True)).json()["capacity"]
    m = metrics(web)
    stored = (sample.due, sample.queued, sample.running, sample.demand, sample.capacity)
    assert (capacity["due"], capacity["queued"], capacity["running"], capacity["needed"], capacity["available"]) == stored
    assert (m[("monitor_scheduler_runs", (("state", "due"),))], m[("monitor_scheduler_runs", (("state", "queued"),))],
            m[("monitor_scheduler_runs", (("state", "running"),))], m[("monitor_scheduler_capacity_needed", ())],
            m[("monitor_scheduler_capacity_available", ())]) == stored
