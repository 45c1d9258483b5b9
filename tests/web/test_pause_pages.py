"""The pages of paused schedules without a browser (issue 17), on SQLite and MariaDB: the settings
page's banner with why (escaped) and since when, its Resume form (CSRF), the history's attempt and
result (escaped, indented when JSON), the failure policy every user sees and only admins change,
and the admin overview's "paused" filter, Resume button and policy form."""

from __future__ import annotations

from html import unescape

from core import writes
from core.domain import RunRecord
from tests import seeding
from tests.web.conftest import WebHarness

REASON = 'paused after 3 consecutive failed slots; last error: <img src=x onerror=alert(1)>'


def pause(web: WebHarness, user_id: str = "alice") -> None:
    with web.backend.engine.begin() as conn:
        seeding.pause(conn, user_id, at=web.backend.clock.moment, reason=REASON)


def banner(html: str) -> str:
    start = html.index('id="paused-banner"')
    return html[start : html.index("</section>", start)]


def test_the_settings_page_shows_the_paused_banner_with_the_reason_escaped_and_since_when(web: WebHarness) -> None:
    web.app.services.schedules.set("alice", interval=5)
    user = web.browser_client("alice")
    assert 'id="paused-banner" aria-labelledby="paused-title" hidden' in user.get("/settings").text, "not paused: hidden"
    pause(web)
    html = user.get("/settings").text
    shown = banner(html)
    assert " hidden" not in shown.split(">", 1)[0]
    assert "&lt;img src=x onerror=alert(1)&gt;" in shown and "<img src=x" not in html
    assert '<time class="local-time" datetime="2026-01-05T12:00:00.000Z">2026-01-05 12:00:00 UTC</time>' in shown
    assert 'action="/settings/resume"' in shown and 'id="resume"' in shown
    assert "— (paused)" in html and '<span class="pill pill-paused">paused</span>' in html


def test_the_resume_form_needs_the_csrf_token_and_resumes(web: WebHarness) -> None:
    web.app.services.schedules.set("alice", interval=5)
    pause(web)
    user = web.browser_client("alice")
    assert user.post("/settings/resume", data={}).status_code == 403
    assert web.backend.schedule("alice").paused
    response = user.post("/settings/resume", data={"csrf_token": web.csrf(user)})
    assert (response.status_code, response.headers["location"]) == (303, "/settings")
    assert not web.backend.schedule("alice").paused
    assert "Resumed alice" in user.get("/settings").text


def test_the_history_shows_the_attempt_and_the_result_escaped_and_indented(web: WebHarness) -> None:
    web.app.services.schedules.set("alice", interval=5)
    at = web.backend.clock.moment
    runs = [(1, "failed", None), (2, "succeeded", '{"checked": 12, "note": "<b>hi</b>"}'), (3, "succeeded", "result not kept: <too large>")]
    with web.backend.engine.begin() as conn:
        writes.insert_runs(conn, [RunRecord("alice", "schedule", at, attempt, "t", status, None, 0, at, at, at, 5, "w", result=result)
                                  for attempt, status, result in runs])
    html = web.browser_client("alice").get("/settings").text
    assert "<th>Attempt</th>" in html and "<th>Result</th>" in html
    assert '<td class="attempt">2</td>' in html
    assert '<pre>{\n  &#34;checked&#34;: 12,\n  &#34;note&#34;: &#34;&lt;b&gt;hi&lt;/b&gt;&#34;\n}</pre>' in html
    assert "<pre>result not kept: &lt;too large&gt;</pre>" in html
    assert "<b>hi</b>" not in html


def test_users_see_the_failure_policy_and_only_admins_change_it(web: WebHarness) -> None:
    web.app.services.schedules.set("alice", interval=5)
    web.app.services.schedules.set("ops", interval=5)
    user = web.browser_client("alice")
    html = user.get("/settings").text
    assert "not retried (the next slot runs as usual); never paused" in html
    assert 'id="policy-form"' not in html
    csrf = web.csrf(user)
    assert user.post("/settings/policy", data={"csrf_token": csrf, "retries": "3"}).status_code == 403
    assert user.post("/admin/schedules/policy", data={"csrf_token": csrf, "user_id": "alice", "retries": "3"}).status_code == 403
    assert user.post("/admin/schedules/resume", data={"csrf_token": csrf, "user_id": "alice"}).status_code == 403
    assert web.backend.schedule("alice").retries is None

    admin = web.browser_client("ops", admin=True)
    assert 'id="policy-form"' in admin.get("/settings").text
    saved = admin.post("/settings/policy", data={"csrf_token": web.csrf(admin), "retries": "3", "retry_backoff": "5m", "pause_after": "5"})
    assert saved.status_code == 303
    schedule = web.backend.schedule("ops")
    assert (schedule.retries, schedule.retry_backoff_seconds, schedule.pause_after) == (3, 300, 5)
    assert "retried up to 3 times in the same slot, first after 5 m (then longer); paused after 5 failed slots in a row" in admin.get("/settings").text

    refused = admin.post("/settings/policy", data={"csrf_token": web.csrf(admin), "retries": "1", "retry_backoff": "5m", "pause_after": "0"})
    assert refused.status_code == 422
    assert "0 is refused" in unescape(refused.text)
    assert web.backend.schedule("ops").retries == 3, "nothing written"


def test_the_admin_page_filters_paused_schedules_resumes_them_and_edits_their_policy(web: WebHarness) -> None:
    for user_id in ("alice", "bob"):
        web.app.services.schedules.set(user_id, interval=5)
    pause(web, "bob")
    admin = web.browser_client("ops", admin=True)
    html = admin.get("/admin", params={"filter": "paused"}).text
    assert 'data-filter="paused" aria-current="true"' in html
    assert 'data-user="bob"' in html and 'data-user="alice"' not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img src=x" not in html
    csrf = web.csrf(admin, "/admin")

    response = admin.post("/admin/schedules/policy", data={"csrf_token": csrf, "user_id": "alice", "retries": "2", "retry_backoff": "",
                                                           "pause_after": "off", "filter": "paused"})
    assert (response.status_code, response.headers["location"]) == (303, "/admin?filter=paused")
    alice = web.backend.schedule("alice")
    assert (alice.retries, alice.retry_backoff_seconds, alice.pause_after) == (2, None, 0)
    admin.post("/admin/schedules/policy", data={"csrf_token": csrf, "user_id": "alice", "retries": "99", "pause_after": ""})
    assert web.backend.schedule("alice") == alice, "refused (flashed), nothing written"
    assert "retries must be a whole number from 0 to 10" in unescape(admin.get("/admin").text)

    response = admin.post("/admin/schedules/resume", data={"csrf_token": csrf, "user_id": "bob", "filter": "paused"})
    assert response.status_code == 303
    assert not web.backend.schedule("bob").paused
    assert 'data-user="bob"' not in admin.get("/admin", params={"filter": "paused"}).text
