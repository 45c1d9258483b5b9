"""POST /api/cron/one-click-start: every status code, the three modes, and "nothing is claimed on
any error" checked against the database (and the queue), never a mock."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from redis import Redis
from rq import Queue

from core import claims, domain, queries
from core.exceptions import ConfigurationError
from tests.web.conftest import WebHarness, make_harness


def leased(harness: WebHarness) -> list[str]:
    with harness.backend.engine.connect() as conn:
        now = harness.backend.clock.moment
        return [s.user_id for s in queries.list_schedules(conn, now=now, which=domain.ScheduleFilter.RUNNING)]


def assert_nothing_claimed(harness: WebHarness) -> None:
    assert leased(harness) == []
    assert harness.backend.runs() == []


def hold_lease(harness: WebHarness, user_id: str) -> None:
    """A run of `user_id` in flight: what a worker holds while it works."""
    now = harness.backend.clock.moment
    with harness.backend.engine.begin() as conn:
        assert claims.claim_user(conn, user_id=user_id, now=now, token="test:1:held", lease_until=now + timedelta(minutes=10), trigger=domain.Trigger.MANUAL)


# --- the secret -----------------------------------------------------------------------------------


@pytest.mark.parametrize("secret", [None, "", "wrong", "web-tests-cron-secret-4", "web-tests-cron-secret-42 "])
def test_a_wrong_or_missing_secret_is_401_and_claims_nothing(web: WebHarness, secret: str | None) -> None:
    web.backend.add_schedules(3)
    response = web.cron({"mode": "sync"}, secret=secret)
    assert response.status_code == 401
    assert "x-cron-secret" in response.json()["message"]
    assert_nothing_claimed(web)


def test_a_wrong_secret_is_401_even_with_a_malformed_body(web: WebHarness) -> None:
    assert web.cron(raw=b"{nope", secret="wrong").status_code == 401


def test_unset_cron_secret_is_503_with_the_reason_logged(backend, caplog: pytest.LogCaptureFixture) -> None:
    harness = make_harness(backend, CRON_SECRET="")
    backend.add_schedules(2)
    with caplog.at_level(logging.ERROR, logger="web.routes.cron"):
        response = harness.cron({}, secret="anything")
    assert response.status_code == 503
    assert "CRON_SECRET is not set" in response.json()["message"]
    assert any("CRON_SECRET is not set" in r.getMessage() for r in caplog.records)
    assert harness.cron(None, secret=None).status_code == 503  # never an open endpoint
    assert_nothing_claimed(harness)


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"{not json", 400),
        (b"[1, 2]", 400),
        (b'"sync"', 400),
        (b'{"mode": "fast"}', 422),
        (b'{"mode": 1}', 422),
        (b'{"userId": 7}', 422),
        (b'{"userId": ""}', 422),
        (b'{"userId": "' + b"x" * 65 + b'"}', 422),
        (b'{"user": "user-000000"}', 422),
        (b'{"mode": "sync", "extra": true}', 422),
    ],
)
def test_malformed_or_invalid_bodies_are_refused_with_a_message_and_claim_nothing(web: WebHarness, raw: bytes, status: int) -> None:
    web.backend.add_schedules(3)
    response = web.cron(raw=raw)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["message"]
    assert_nothing_claimed(web)


# --- the three modes ------------------------------------------------------------------------------


def test_sync_mode_runs_the_due_users_and_returns_the_summary(web: WebHarness) -> None:
    users = web.backend.add_schedules(3)
    web.backend.add_schedules(2, prefix="later", due_at=web.backend.clock.moment + timedelta(minutes=5))
    response = web.cron({"mode": "sync"})
    assert response.status_code == 200
    body = response.json()
    assert (body["mode"], body["claimed"], body["ran"], body["succeeded"], body["released"]) == ("sync", 3, 3, 3, 0)
    assert {"claimed", "enqueued", "released", "skipped_backpressure", "duration_ms"} <= body.keys()
    assert sorted(r.user_id for r in web.backend.runs()) == users


def test_no_body_without_redis_runs_a_sync_pass(web: WebHarness) -> None:
    web.backend.add_schedules(2)
    body = web.cron(None).json()
    assert (body["mode"], body["ran"]) == ("sync", 2)


def test_queue_mode_without_redis_is_503_and_claims_nothing(web: WebHarness) -> None:
    web.backend.add_schedules(2)
    response = web.cron({"mode": "queue"})
    assert response.status_code == 503
    assert response.json()["message"] == "invalid setting REDIS_URL: required here (queue mode, workers, rq-scheduler tick)"
    assert_nothing_claimed(web)


def test_a_setting_missing_for_a_request_is_503_naming_it(web: WebHarness) -> None:
    # The core raises ConfigurationError where a setting is needed; the web maps it once, to 503.
    @web.api.get("/api/needs-a-setting")
    def needs_a_setting() -> None:
        raise ConfigurationError("invalid setting EXAMPLE: required here")

    response = web.client.get("/api/needs-a-setting")
    assert (response.status_code, response.json()) == (503, {"message": "invalid setting EXAMPLE: required here"})


@pytest.mark.redis
@pytest.mark.parametrize("body", [None, {}, {"mode": "queue"}])
def test_no_body_or_empty_object_is_one_queue_pass(queue_web: WebHarness, redis_conn: Redis, body: dict | None) -> None:
    users = queue_web.backend.add_schedules(4)
    response = queue_web.cron(body)
    assert response.status_code == 200
    summary = response.json()
    assert (summary["mode"], summary["claimed"], summary["enqueued"], summary["released"]) == ("queue", 4, 4, 0)
    assert Queue(queue_web.app.settings.QUEUE_NAME, connection=redis_conn).count == 4
    assert sorted(leased(queue_web)) == users


@pytest.mark.redis
def test_redis_down_is_503_and_claims_nothing(backend) -> None:
    harness = make_harness(backend, REDIS_URL="redis://127.0.0.1:1/0")
    backend.add_schedules(2)
    for body in ({}, {"userId": "user-000000"}):
        response = harness.cron(body)
        assert response.status_code == 503
        assert "Redis" in response.json()["message"]
    assert_nothing_claimed(harness)


# --- direct mode ----------------------------------------------------------------------------------


def test_user_id_runs_that_user_now_inline_without_redis(web: WebHarness) -> None:
    web.backend.add_schedules(1, prefix="other")
    [user] = web.backend.add_schedules(1, due_at=web.backend.clock.moment + timedelta(hours=1))
    response = web.cron({"userId": user})
    assert response.status_code == 200
    assert (response.json()["claimed"], response.json()["ran"]) == (1, 1)
    assert [(r.user_id, r.trigger, r.status) for r in web.backend.runs()] == [(user, "manual", "succeeded")]


@pytest.mark.redis
def test_user_id_is_queued_when_redis_is_configured(queue_web: WebHarness, redis_conn: Redis) -> None:
    [user] = queue_web.backend.add_schedules(1, due_at=queue_web.backend.clock.moment + timedelta(hours=1))
    body = queue_web.cron({"userId": user}).json()
    assert (body["mode"], body["enqueued"]) == ("queue", 1)
    assert Queue(queue_web.app.settings.QUEUE_NAME, connection=redis_conn).count == 1
    # ...and while that queued run holds the lease, a second one is refused.
    assert queue_web.cron({"userId": user}).status_code == 409


def test_unknown_user_is_404(web: WebHarness) -> None:
    response = web.cron({"userId": "nobody"})
    assert response.status_code == 404
    assert "nobody" in response.json()["message"]


def test_a_user_whose_run_holds_the_lease_is_409_and_nothing_changes(web: WebHarness) -> None:
    [user] = web.backend.add_schedules(1)
    hold_lease(web, user)
    before = web.backend.schedule(user)
    response = web.cron({"userId": user})
    assert response.status_code == 409
    assert "running" in response.json()["message"]
    assert web.backend.schedule(user) == before
    assert web.backend.runs() == []


@pytest.mark.parametrize("user_id", ["exit-1", "interrupt-1"])
def test_a_task_that_exits_fails_its_run_and_the_web_keeps_serving(backend, user_id: str) -> None:
    """Issue 11 #2: a task raising SystemExit/KeyboardInterrupt in sync mode ("Run now" and the
    cron endpoint's pass) ends its run as failed and recorded; the web process answers on."""
    harness = make_harness(backend, MONITOR_TASK="tests.web.tasks:exiting_task")
    try:
        backend.add_schedules(1, prefix=user_id.split("-")[0])
        other = f"{user_id.split('-')[0]}-000000"
        response = harness.client.post("/api/schedules/me/run", headers=harness.auth(other))
        assert response.status_code == 200, response.text
        assert response.json()["summary"]["failed"] == 1
        backend.add_schedules(2, prefix="fine")
        assert harness.cron({"mode": "sync"}).json()["succeeded"] == 2
        row = backend.schedule(other)
        assert row.last_status == "failed" and row.locked_by is None
        assert harness.client.get("/healthz").status_code == 200
    finally:
        harness.client.close()
