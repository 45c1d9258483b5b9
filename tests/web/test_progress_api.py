"""A run's state and progress through the web: `GET /api/schedules/me`, the admin API, the run
history and the pages (server-rendered, escaped). On SQLite and MariaDB, with a fixed clock; the
lease and the progress are written through the lease protocol, as a dispatcher and a worker would."""

from __future__ import annotations

from datetime import timedelta

from core import claims, fenced
from core.clock import FixedClock
from core.domain import Trigger
from core.executor import Runner
from core.tasks import RunContext
from tests.conftest import T0
from tests.web.conftest import WebHarness

ME = "/api/schedules/me"
MESSAGE = "<b>checking</b> \"alice\" & co"


def lease_user(web: WebHarness, user_id: str, token: str = "host:1:abc") -> None:
    with web.backend.engine.begin() as conn:
        claims.claim_user(conn, user_id=user_id, now=T0, token=token, lease_until=T0 + timedelta(minutes=15), trigger=Trigger.MANUAL)


def start_and_report(web: WebHarness, user_id: str, fraction: float, message: str, token: str = "host:1:abc") -> None:
    with web.backend.engine.begin() as conn:
        clock = FixedClock(T0 + timedelta(seconds=1))
        assert fenced.start_run(conn, user_id=user_id, token=token, lease_until=clock.sql_now(15 * 60_000), now=clock.sql_now())
        clock.advance(seconds=2)
        assert fenced.set_progress(conn, user_id=user_id, token=token, fraction=fraction, message=message, now=clock.sql_now())


def test_an_idle_schedule_says_so_and_has_no_progress(web: WebHarness) -> None:
    [user] = web.backend.add_schedules(1, prefix="alice")
    body = web.client.get(ME, headers=web.auth(user)).json()
    assert {k: body[k] for k in ("state", "running", "runStartedAt", "progress", "progressMessage", "progressAt")} == {
        "state": "idle", "running": False, "runStartedAt": None, "progress": None, "progressMessage": None, "progressAt": None,
    }


def test_a_leased_run_no_worker_started_is_queued(web: WebHarness) -> None:
    [user] = web.backend.add_schedules(1, prefix="alice")
    lease_user(web, user)
    body = web.client.get(ME, headers=web.auth(user)).json()
    assert (body["state"], body["running"], body["runStartedAt"], body["progress"]) == ("queued", True, None, None)
    admin = web.client.get("/api/admin/schedule", params={"userId": user}, headers=web.auth("root", admin=True)).json()
    assert (admin["state"], admin["lockedBy"]) == ("queued", "host:1:abc")


def test_a_running_run_shows_its_progress_to_the_user_and_the_admin(web: WebHarness) -> None:
    [user] = web.backend.add_schedules(1, prefix="alice")
    lease_user(web, user)
    start_and_report(web, user, 0.3, MESSAGE)

    body = web.client.get(ME, headers=web.auth(user)).json()
    assert (body["state"], body["progress"], body["progressMessage"]) == ("running", 0.3, MESSAGE)
    assert (body["runStartedAt"], body["progressAt"]) == ("2026-01-05T12:00:01Z", "2026-01-05T12:00:03Z")
    admin = web.auth("root", admin=True)
    one = web.client.get("/api/admin/schedule", params={"userId": user}, headers=admin).json()
    assert (one["state"], one["progress"], one["progressMessage"]) == ("running", 0.3, MESSAGE)
    [listed] = web.client.get("/api/admin/schedules", params={"filter": "running"}, headers=admin).json()["items"]
    assert (listed["userId"], listed["state"], listed["progress"]) == (user, "running", 0.3)


def test_a_finished_run_keeps_its_last_message_in_the_history(web: WebHarness) -> None:
    [user] = web.backend.add_schedules(1, prefix="alice")

    def task(user_id: str, context: RunContext) -> None:
        context.progress(0.5, "half way")
        context.progress(1.0, MESSAGE)

    runner = Runner(web.backend.engine, web.app.settings, web.backend.clock, task, worker_name="test")
    with web.backend.engine.begin() as conn:
        [run] = claims.claim_due(conn, now=T0, limit=1, token="tok", lease_until=T0 + timedelta(minutes=15), trigger=Trigger.SCHEDULE).claimed
    runner.execute(run)

    [last] = web.client.get(ME + "/runs", headers=web.auth(user)).json()
    assert (last["status"], last["progressMessage"]) == ("succeeded", MESSAGE)
    [admin_last] = web.client.get("/api/admin/runs", params={"userId": user}, headers=web.auth("root", admin=True)).json()
    assert admin_last["progressMessage"] == MESSAGE
    body = web.client.get(ME, headers=web.auth(user)).json()
    assert (body["state"], body["progress"], body["progressMessage"]) == ("idle", 1.0, MESSAGE), "the last progress stays until the next run"


def test_the_pages_render_the_state_and_the_escaped_message(web: WebHarness) -> None:
    [user] = web.backend.add_schedules(1, prefix="alice")
    browser = web.browser_client(user)
    lease_user(web, user)
    page = browser.get("/settings").text
    assert 'data-state="queued"' in page and "Waiting in the queue…" in page
    assert 'pill-queued' in page

    start_and_report(web, user, 0.3, MESSAGE)
    page = browser.get("/settings").text
    assert 'data-state="running"' in page
    assert '<progress id="progress-bar" max="1"' in page and 'value="0.3"' in page and "30 %" in page
    assert "&lt;b&gt;checking&lt;/b&gt; &#34;alice&#34; &amp; co" in page and MESSAGE not in page

    admin_page = web.browser_client("root", admin=True).get("/admin").text
    assert 'data-state="running"' in admin_page and "&lt;b&gt;checking&lt;/b&gt;" in admin_page and MESSAGE not in admin_page
