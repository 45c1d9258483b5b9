"""The settings page's calendar mode (expression, zone, spread, the server's preview) and the admin
page's kind and expression per row, searchable."""

from __future__ import annotations

from tests.web.conftest import WebHarness


def test_the_settings_form_saves_a_calendar_schedule_and_shows_its_next_runs(web: WebHarness) -> None:
    client = web.browser_client("alice")
    csrf = web.csrf(client)
    response = client.post("/settings", data={"csrf_token": csrf, "enabled": "1", "kind": "cron", "cron": "0 9 * * MON-FRI",
                                              "time_zone": "Europe/Berlin", "spread": "0", "interval": "5"})
    assert response.status_code == 303, response.text
    page = client.get("/settings").text
    assert 'value="0 9 * * MON-FRI"' in page and 'value="Europe/Berlin"' in page
    assert 'id="kind-cron" checked' in page
    # The harness clock is Monday 2026-01-05 12:00 UTC: next Tuesday to Friday and Monday, 09:00 in Berlin.
    assert "Next runs: " in page and page.count('<time datetime="2026-01-') >= 5
    assert '<time datetime="2026-01-06T08:00:00.000Z">Tue 09:00</time>' in page
    schedule = web.backend.schedule("alice")
    assert (schedule.cron_expr, schedule.time_zone) == ("0 9 * * MON-FRI", "Europe/Berlin")


def test_a_bad_expression_on_the_page_is_422_with_the_message_and_saves_nothing(web: WebHarness) -> None:
    client = web.browser_client("alice")
    csrf = web.csrf(client)
    client.post("/settings", data={"csrf_token": csrf, "enabled": "1", "interval": "15"})
    for data, problem in [({"cron": "0 0 30 2 *"}, "never fires"), ({"cron": "0 9 * * *", "time_zone": "Mars/Olympus"}, "unknown time zone"),
                          ({"cron": "0 9 * * *", "spread": "abc"}, "spread")]:
        response = client.post("/settings", data={"csrf_token": csrf, "enabled": "1", "kind": "cron", **data})
        assert response.status_code == 422
        assert problem in response.text
        assert 'id="kind-cron" checked' in response.text, "the form keeps what the user typed"
    schedule = web.backend.schedule("alice")
    assert (schedule.kind, schedule.interval_minutes) == ("interval", 15)


def test_the_admin_page_shows_the_kind_and_expression_and_searches_them(web: WebHarness) -> None:
    web.client.patch("/api/schedules/me", json={"cron": "15 7 * * SAT", "timeZone": "Asia/Tokyo"}, headers=web.auth("carol"))
    web.client.patch("/api/schedules/me", json={"intervalMinutes": 10}, headers=web.auth("dave"))
    admin = web.browser_client("root", admin=True)
    page = admin.get("/admin").text
    assert '<code class="cron">15 7 * * SAT</code>' in page and "Asia/Tokyo" in page
    found = admin.get("/admin", params={"q": "SAT"}).text
    assert 'data-user="carol"' in found and 'data-user="dave"' not in found
