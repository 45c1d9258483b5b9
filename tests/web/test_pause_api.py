"""The JSON API of paused schedules and of the failure policy (issue 17), on SQLite and MariaDB:
a paused schedule says so with why and since when; the user resumes their own, an admin anyone's;
only admins change retries / backoff / pause-after (users see what applies); a run carries its
attempt and its result; /metrics counts the paused schedules."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from core import writes
from core.domain import RunRecord
from tests import seeding
from tests.web.conftest import WebHarness, make_harness

REASON = 'paused after 3 consecutive failed slots; last error: <script>alert("x")</script>'


def pause(web: WebHarness, user_id: str = "alice") -> None:
    with web.backend.engine.begin() as conn:
        seeding.pause(conn, user_id, at=web.backend.clock.moment, reason=REASON)


def create(web: WebHarness, user_id: str = "alice", interval: int = 5) -> None:
    web.app.services.schedules.set(user_id, interval=interval)


def test_a_paused_schedule_says_why_and_since_when_and_has_no_next_runs(web: WebHarness) -> None:
    create(web)
    pause(web)
    body = web.client.get("/api/schedules/me", headers=web.auth("alice")).json()
    assert (body["paused"], body["pausedAt"], body["pausedReason"], body["failedSlots"]) == (True, "2026-01-05T12:00:00Z", REASON, 3)
    assert body["enabled"] is True, "paused is not disabled"
    assert body["nextRuns"] == []
    assert (body["retries"], body["retryBackoffSeconds"], body["pauseAfter"]) == (None, None, None)
    assert body["effective"] == {"retries": 0, "retryBackoffSeconds": 30, "pauseAfter": "off"}


def test_the_user_resumes_their_schedule_at_its_next_slot_from_now(web: WebHarness) -> None:
    create(web)
    pause(web)
    web.backend.clock.advance(minutes=62)
    response = web.client.post("/api/schedules/me/resume", headers=web.auth("alice"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["paused"], body["pausedAt"], body["pausedReason"], body["failedSlots"]) == (False, None, None, 0)
    assert body["nextRunAt"] == "2026-01-05T13:05:00Z", "T0 + 65 min: the next slot after now, not the 12 missed ones"
    again = web.client.post("/api/schedules/me/resume", headers=web.auth("alice"))
    assert again.status_code == 200 and again.json() == body, "not paused: nothing changes"


def test_resume_needs_a_signed_in_user_with_a_schedule_and_the_csrf_header_with_a_cookie(web: WebHarness) -> None:
    create(web)
    pause(web)
    assert web.client.post("/api/schedules/me/resume").status_code == 401
    assert web.client.post("/api/schedules/me/resume", headers=web.auth("bob")).status_code == 404
    browser = web.browser_client("alice")
    assert browser.post("/api/schedules/me/resume").status_code == 403
    assert web.backend.schedule("alice").paused, "nothing written"
    assert browser.post("/api/schedules/me/resume", headers={"x-csrf-token": web.csrf(browser)}).status_code == 200
    assert not web.backend.schedule("alice").paused


def test_an_admin_resumes_any_schedule_and_a_user_cannot_resume_another(web: WebHarness) -> None:
    create(web, "alice")
    create(web, "bob")
    pause(web, "alice")
    assert web.client.post("/api/admin/schedule/resume", params={"userId": "alice"}, headers=web.auth("bob")).status_code == 403
    assert web.backend.schedule("alice").paused
    response = web.client.post("/api/admin/schedule/resume", params={"userId": "alice"}, headers=web.auth("ops", admin=True))
    assert response.status_code == 200, response.text
    assert response.json()["paused"] is False and response.json()["lockedBy"] is None
    assert web.client.post("/api/admin/schedule/resume", params={"userId": "nobody"}, headers=web.auth("ops", admin=True)).status_code == 404


def test_users_cannot_change_the_failure_policy_and_are_told_who_can(web: WebHarness) -> None:
    create(web)
    for field, value in (("retries", 3), ("retryBackoffSeconds", 60), ("pauseAfter", 5)):
        response = web.client.patch("/api/schedules/me", json={"intervalMinutes": 30, field: value}, headers=web.auth("alice", admin=True))
        assert response.status_code == 422, response.text
        assert f"{field}: set by an administrator only" in response.json()["message"]
    schedule = web.backend.schedule("alice")
    assert (schedule.interval_minutes, schedule.retries, schedule.retry_backoff_seconds, schedule.pause_after) == (5, None, None, None)


def test_admins_set_the_failure_policy_and_null_puts_the_default_back(web: WebHarness) -> None:
    create(web)
    admin = web.auth("ops", admin=True)
    body = web.client.patch("/api/admin/schedule", params={"userId": "alice"}, json={"retries": 3, "retryBackoffSeconds": 30, "pauseAfter": 5},
                            headers=admin).json()
    assert (body["retries"], body["retryBackoffSeconds"], body["pauseAfter"]) == (3, 30, 5)
    assert body["effective"] == {"retries": 3, "retryBackoffSeconds": 30, "pauseAfter": 5}
    body = web.client.patch("/api/admin/schedule", params={"userId": "alice"}, json={"pauseAfter": "never"}, headers=admin).json()
    assert (body["retries"], body["pauseAfter"], body["effective"]["pauseAfter"]) == (3, "off", "off")
    assert web.backend.schedule("alice").pause_after == 0
    body = web.client.patch("/api/admin/schedule", params={"userId": "alice"}, json={"retries": None, "pauseAfter": None}, headers=admin).json()
    assert (body["retries"], body["retryBackoffSeconds"], body["pauseAfter"]) == (None, 30, None)
    # What the user sees: the effect, read-only.
    assert web.client.get("/api/schedules/me", headers=web.auth("alice")).json()["effective"] == {
        "retries": 0, "retryBackoffSeconds": 30, "pauseAfter": "off"}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"retries": 11}, "retries: Input should be less than or equal to 10"),
        ({"retries": -1}, "retries: Input should be greater than or equal to 0"),
        ({"retries": "3"}, "retries: Input should be a valid integer"),
        ({"retryBackoffSeconds": 0}, "retryBackoffSeconds: Input should be greater than or equal to 1"),
        ({"retryBackoffSeconds": 86_401}, "retryBackoffSeconds: Input should be less than or equal to 86400"),
        ({"pauseAfter": 0}, '0 is refused'),
        ({"pauseAfter": 1001}, "from 1 to 1000"),
        ({"pauseAfter": "never pause"}, "pauseAfter: Value error, pause after must be a whole number of failed slots from 1 to 1000"),
        ({"pauseAfter": "5"}, "pauseAfter: Value error, pause after must be"),
        ({"pauseAfter": True}, "pauseAfter: Value error, pause after must be"),
        ({"retries": 2, "pauseAfter": 0}, "0 is refused"),
    ],
)
def test_a_bad_failure_policy_is_422_naming_it_and_nothing_is_written(web: WebHarness, body: dict[str, object], says: str) -> None:
    create(web)
    before = web.backend.schedule("alice")
    response = web.client.patch("/api/admin/schedule", params={"userId": "alice"}, json=body, headers=web.auth("ops", admin=True))
    assert response.status_code == 422, response.text
    assert says in response.json()["message"]
    assert web.backend.schedule("alice") == before


def test_the_admin_list_filters_paused_schedules(web: WebHarness) -> None:
    for user_id in ("alice", "bob", "carol"):
        create(web, user_id)
    pause(web, "bob")
    body = web.client.get("/api/admin/schedules", params={"filter": "paused"}, headers=web.auth("ops", admin=True)).json()
    assert [(item["userId"], item["paused"], item["pausedReason"]) for item in body["items"]] == [("bob", True, REASON)]


def test_the_run_history_carries_attempt_and_result_or_the_note_why_not(web: WebHarness) -> None:
    create(web)
    at = web.backend.clock.moment
    results = ['{"checked": 12, "alerts": 1}', "result not kept: 5000 bytes of JSON, over the 4 KB limit", None, '"ok"', "NaN"]
    with web.backend.engine.begin() as conn:
        writes.insert_runs(conn, [RunRecord("alice", "schedule", at, attempt, "t", "succeeded", None, 0, at, at, at, 10, "w", result=result)
                                  for attempt, result in enumerate(results, start=1)])
    runs = web.client.get("/api/schedules/me/runs", headers=web.auth("alice")).json()
    assert [(r["attempt"], r["result"], r["resultNote"]) for r in reversed(runs)] == [
        (1, {"checked": 12, "alerts": 1}, None),
        (2, None, "result not kept: 5000 bytes of JSON, over the 4 KB limit"),
        (3, None, None),
        (4, "ok", None),
        (5, None, "NaN"),  # Python's json would read it; no JSON body can carry it
    ]
    admin_runs = web.client.get("/api/admin/runs", params={"userId": "alice"}, headers=web.auth("ops", admin=True)).json()
    assert admin_runs == runs


def test_metrics_count_the_paused_schedules(web: WebHarness) -> None:
    for user_id in ("alice", "bob", "carol"):
        create(web, user_id)
    pause(web, "alice")
    pause(web, "carol")

    def paused() -> float:
        families = {f.name: f for f in text_string_to_metric_families(web.client.get("/metrics").text)}
        return families["monitor_scheduler_paused_schedules"].samples[0].value

    assert paused() == 2
    web.app.services.schedules.resume("carol")
    assert paused() == 1


def test_the_openapi_document_types_the_new_fields(web: WebHarness) -> None:
    spec = web.client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert {"paused", "pausedAt", "pausedReason", "failedSlots", "effective"} <= set(schemas["ScheduleOut"]["required"])
    assert {"result", "resultNote"} <= set(schemas["RunOut"]["properties"])
    assert "/api/schedules/me/resume" in spec["paths"] and "/api/admin/schedule/resume" in spec["paths"]
    admin_body = spec["paths"]["/api/admin/schedule"]["patch"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"retries", "retryBackoffSeconds", "pauseAfter"} <= set(admin_body["properties"])
    user_body = spec["paths"]["/api/schedules/me"]["patch"]["requestBody"]["content"]["application/json"]["schema"]
    assert not {"retries", "retryBackoffSeconds", "pauseAfter"} & set(user_body["properties"])


def test_the_effective_values_come_from_the_settings(sqlite_backend) -> None:
    web = make_harness(sqlite_backend, DEFAULT_RETRIES=2, RETRY_BACKOFF_SECONDS=90, PAUSE_AFTER_FAILED_SLOTS=4)
    create(web)
    assert web.client.get("/api/schedules/me", headers=web.auth("alice")).json()["effective"] == {
        "retries": 2, "retryBackoffSeconds": 90, "pauseAfter": 4}
    web.client.close()

