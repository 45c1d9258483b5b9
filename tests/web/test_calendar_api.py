"""Calendar schedules over the JSON API: PATCH with an expression and a zone, the next 5 slots with
every schedule, the preview endpoint the settings page calls as the user types, 422 writing nothing."""

from __future__ import annotations

from datetime import datetime

from core.calendar import spread_start
from tests.conftest import T0, Backend
from tests.web.conftest import WebHarness, make_harness

ME = "/api/schedules/me"


def test_a_calendar_schedule_is_set_and_shows_its_next_five_slots(web: WebHarness) -> None:
    # The harness clock is Monday 2026-01-05 12:00 UTC.
    answer = web.client.patch(ME, json={"cron": "0 9 * * MON-FRI", "timeZone": "Europe/Berlin"}, headers=web.auth("alice"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["kind"], body["cron"], body["timeZone"], body["spreadSeconds"]) == ("cron", "0 9 * * MON-FRI", "Europe/Berlin", 0)
    assert body["nextRuns"] == ["2026-01-06T08:00:00Z", "2026-01-07T08:00:00Z", "2026-01-08T08:00:00Z",
                                "2026-01-09T08:00:00Z", "2026-01-12T08:00:00Z"]
    assert body["nextRunAt"] == body["nextRuns"][0]

    back = web.client.patch(ME, json={"kind": "interval", "intervalMinutes": 30}, headers=web.auth("alice")).json()
    assert (back["kind"], back["cron"], back["intervalMinutes"]) == ("interval", None, 30)
    assert len(back["nextRuns"]) == 5


def test_bad_calendar_input_is_422_naming_the_problem_and_writes_nothing(web: WebHarness) -> None:
    web.client.patch(ME, json={"intervalMinutes": 15}, headers=web.auth("alice"))
    for body, problem in [
        ({"cron": "0 0 30 2 *"}, "never fires"),
        ({"cron": "0 9 * * * *"}, "seconds"),
        ({"cron": "0 9 * * *", "timeZone": "Mars/Olympus"}, "unknown time zone"),
        ({"cron": "0 9 * * *", "kind": "interval"}, "contradict"),
        ({"cron": "0 9 * * *", "spreadSeconds": 90000}, "spreadSeconds"),
    ]:
        answer = web.client.patch(ME, json=body, headers=web.auth("alice"))
        assert answer.status_code == 422, body
        assert problem in answer.text, answer.text
    mine = web.client.get(ME, headers=web.auth("alice")).json()
    assert (mine["kind"], mine["intervalMinutes"], mine["cron"]) == ("interval", 15, None)


def test_the_preview_endpoint_answers_what_the_scheduler_would_do(web: WebHarness) -> None:
    answer = web.client.get(f"{ME}/preview", params={"cron": "30 2 * * *", "timeZone": "Europe/Berlin", "count": 2},
                            headers=web.auth("alice"))
    assert answer.status_code == 200, answer.text
    assert [s["label"] for s in answer.json()["slots"]] == ["Tue 02:30", "Wed 02:30"]
    assert web.client.get(f"{ME}/preview", params={"cron": "0 0 30 2 *"}, headers=web.auth("alice")).status_code == 422
    assert web.client.get(f"{ME}/preview", params={"cron": "* * * * *"}).status_code == 401
    assert web.client.get(f"{ME}/preview", headers=web.auth("nobody")).json() == {"timeZone": "UTC", "slots": []}


def test_an_admin_sets_a_calendar_schedule(web: WebHarness) -> None:
    web.client.patch(ME, json={"intervalMinutes": 15}, headers=web.auth("alice"))
    answer = web.client.patch("/api/admin/schedules/alice", json={"cron": "*/30 * * * *", "timeZone": "Asia/Kolkata"},
                              headers=web.auth("root", admin=True))
    assert answer.status_code == 200, answer.text
    assert (answer.json()["kind"], answer.json()["timeZone"]) == ("cron", "Asia/Kolkata")


def test_with_spread_start_times_on_a_new_schedule_starts_at_its_phase(backend: Backend) -> None:
    harness = make_harness(backend, SPREAD_START_TIMES=True)
    try:
        body = harness.client.patch(ME, json={"intervalMinutes": 5}, headers=harness.auth("alice")).json()
    finally:
        harness.client.close()
        harness.app.close()
    assert datetime.fromisoformat(body["nextRunAt"]).replace(tzinfo=None) == spread_start("alice", T0, 5)
