"""The pages in a real browser: Debian's Chromium driven by Playwright (never a downloaded browser),
against the app served by uvicorn on a free loopback port, on a real SQLite database (and the
throwaway Redis plus a real `monitor-scheduler worker` for queue mode).

Screenshots of the main pages go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import uvicorn

from core import domain, queries, writes
from core.capacity import Sample
from core.clock import Clock, FixedClock
from core.domain import Mode
from monitor_scheduler.wiring import App
from core.settings import load_settings
from tests import seeding
from tests.conftest import PYTHON, REPO_ROOT, cli_env
from tests.web.conftest import SECRET_KEY
from tests.web.tasks import STEPS
from web.app import create_app
from web.auth import sign_in_url
from web.state import WebState

pytestmark = pytest.mark.browser
playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
TASK = "tests.web.tasks:picky_task"
TIMEOUT_MS = 15_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    app: App
    web: WebState

    def link(self, user_id: str, *, admin: bool = False) -> str:
        return sign_in_url(self.url, self.web.token_key, user_id, admin=admin, ttl_seconds=300)

    def seed(self, user_id: str, *, interval: int = 5, enabled: bool = True) -> None:
        self.web.services.schedules.set(user_id, interval=interval, enabled=enabled)

    def run_once(self, user_id: str) -> None:
        self.web.services.runs.run_now(user_id, Mode.SYNC)

    def schedule(self, user_id: str) -> domain.Schedule:
        with self.app.engine.connect() as conn:
            found = queries.get_schedule(conn, user_id)
        assert found is not None
        return found


def serve(database_url: str, clock: Clock | None = None, **overrides: str) -> Iterator[LiveServer]:
    """The app with the production clock (or `clock`), served by uvicorn in a background thread.
    SPREAD_START_TIMES off: the tests state exact slots."""
    port = free_port()
    settings = load_settings(env_file=None, DATABASE_URL=database_url, REDIS_URL=overrides.pop("REDIS_URL", ""),
                             MONITOR_TASK=TASK, SECRET_KEY=SECRET_KEY, WEB_BASE_URL=f"http://127.0.0.1:{port}",
                             SPREAD_START_TIMES=False, **overrides)
    app = App.from_settings(settings, clock=clock)
    api = create_app(app.services)
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning", log_config=None))
    thread = threading.Thread(target=server.run, name="uvicorn-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield LiveServer(f"http://127.0.0.1:{port}", app, api.state.web)
    server.should_exit = True
    thread.join(timeout=10)
    app.close()


@pytest.fixture
def live(sqlite_url: str) -> Iterator[LiveServer]:
    yield from serve(sqlite_url)


@pytest.fixture
def live_queue(sqlite_url: str, redis_url: str) -> Iterator[LiveServer]:
    yield from serve(sqlite_url, REDIS_URL=redis_url)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium chromium-driver (scripts/install-test-deps)")
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    # A fixed zone other than UTC, so "shown in the browser's time zone" is visible in the test.
    context = browser.new_context(timezone_id="Europe/Berlin", locale="en-GB", viewport={"width": 1280, "height": 860})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def next_run_attr(page) -> datetime:
    value = page.locator("#next-run time").get_attribute("datetime")
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ")


expect = playwright_sync.expect


# --- the user's page ------------------------------------------------------------------------------


def test_a_user_signs_in_changes_the_interval_and_runs_now(live: LiveServer, page) -> None:
    live.seed("alice", interval=5)
    live.run_once("alice")  # a first run, so the cadence has a slot to continue from
    page.goto(live.link("alice"))
    expect(page).to_have_url(f"{live.url}/settings")
    expect(page.locator("#signed-in-as")).to_have_text("alice")
    expect(page.locator("#status")).to_have_text("succeeded")
    # Times are shown in the browser's zone (Europe/Berlin: CET/CEST), not as UTC.
    expect(page.locator("#next-run time")).to_contain_text(re.compile(r"CES?T|GMT\+[12]"))
    before = next_run_attr(page)
    assert before is not None
    slot = live.schedule("alice").run_slot
    assert slot is not None
    assert before == slot + timedelta(minutes=5)

    page.fill("#interval", "60")
    page.click("#save")
    expect(page.locator("#saved-note")).to_have_text("Saved.")
    expect(page.locator("#next-run time")).not_to_have_attribute("datetime", before.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z")
    assert next_run_attr(page) == slot + timedelta(minutes=60)
    assert live.schedule("alice").interval_minutes == 60
    screenshot(page, "settings")

    last_run_before = page.locator("#last-run time").get_attribute("datetime")
    page.click("#run-now")
    expect(page.locator("#runs tbody tr")).to_have_count(2)
    expect(page.locator("#last-run time")).not_to_have_attribute("datetime", last_run_before)
    expect(page.locator("#status")).to_have_text("succeeded")
    expect(page.locator("#run-now")).to_be_enabled()
    assert [r.trigger for r in reversed(repo_runs(live, "alice"))] == ["manual", "manual"]


def repo_runs(live: LiveServer, user_id: str) -> list[domain.RunRecord]:
    with live.app.engine.connect() as conn:
        return queries.recent_runs(conn, user_id=user_id)


def test_a_calendar_schedule_made_in_the_browser_is_claimed_at_its_slot_and_moves_on(sqlite_url: str, page) -> None:
    # Monday 2026-03-23 23:00 UTC; the clock is the app's own, moved by the test (no waiting, the session stays live).
    clock = FixedClock(datetime(2026, 3, 23, 23, 0))
    for live in serve(sqlite_url, clock=clock):
        live.seed("carol", interval=5)
        page.goto(live.link("carol"))
        page.check("#kind-cron")
        page.fill("#cron", "30 2 * * MON-FRI")
        page.fill("#time-zone", "Europe/Berlin")
        # The preview is the server's, as the user types: Tuesday, Wednesday... at 02:30 Berlin time.
        expect(page.locator("#preview time").first).to_have_text("Tue 02:30")
        page.fill("#cron", "0 0 30 2 *")
        expect(page.locator("#cron-error")).to_contain_text("never fires")
        page.fill("#cron", "30 2 * * MON-FRI")
        expect(page.locator("#cron-error")).to_be_hidden()
        page.click("#save")
        expect(page.locator("#saved-note")).to_have_text("Saved.")
        schedule = live.schedule("carol")
        assert (schedule.cron_expr, schedule.time_zone) == ("30 2 * * MON-FRI", "Europe/Berlin")
        assert schedule.next_run_at == datetime(2026, 3, 24, 1, 30)  # Tuesday 02:30 CET
        screenshot(page, "settings-calendar")

        clock.moment = datetime(2026, 3, 24, 1, 30)
        summary = live.web.services.runs.dispatch_pass(Mode.SYNC)
        assert summary.claimed == 1 and summary.succeeded == 1, summary
        [run] = repo_runs(live, "carol")
        assert run.slot == datetime(2026, 3, 24, 1, 30)
        assert live.schedule("carol").next_run_at == datetime(2026, 3, 25, 1, 30), "Wednesday 02:30 CET"
        page.reload()
        expect(page.locator("#next-run time")).to_have_attribute("datetime", "2026-03-25T01:30:00.000Z")


def test_a_failing_monitor_shows_its_status_and_error(live: LiveServer, page) -> None:
    live.seed("failing-fred")
    page.goto(live.link("failing-fred"))
    expect(page.locator("#status")).to_have_text("never run")
    page.click("#run-now")
    expect(page.locator("#status")).to_have_text("failed")
    expect(page.locator("#last-error")).to_contain_text("monitored endpoint answered HTTP 500")
    screenshot(page, "settings-failed")


def test_a_paused_schedule_shows_why_and_since_when_and_resume_brings_it_back(live: LiveServer, page) -> None:
    live.seed("paula")
    live.run_once("paula")
    reason = "paused after 3 consecutive failed slots; last error: <b>HTTP 503</b>"
    at = live.schedule("paula").last_run_at
    assert at is not None
    with live.app.engine.begin() as conn:
        writes.insert_runs(conn, [domain.RunRecord("paula", "schedule", at, 2, "t", "succeeded", None, 0, at, at, at, 7, "w",
                                                   result='{"checked": 12, "alerts": 1}')])
        seeding.pause(conn, "paula", at=at, reason=reason)
    page.goto(live.link("paula"))
    banner = page.locator("#paused-banner")
    expect(banner).to_be_visible()
    expect(page.locator("#paused-reason")).to_have_text(reason)  # as text: the markup is shown, not applied
    expect(page.locator("#paused-since time")).to_contain_text(re.compile(r"CES?T|GMT\+[12]"))
    expect(page.locator("#status")).to_have_text("paused")
    expect(page.locator("#next-run")).to_have_text("— (paused)")
    expect(page.locator("#runs tbody tr").first.locator("td.attempt")).to_have_text("2")
    expect(page.locator("#runs tbody tr").first.locator("td.result pre")).to_have_text('{\n  "alerts": 1,\n  "checked": 12\n}')
    screenshot(page, "settings-paused")

    page.click("#resume")
    expect(banner).to_be_hidden()
    expect(page.locator("#saved-note")).to_have_text("Resumed.")
    expect(page.locator("#status")).to_have_text("succeeded")
    expect(page.locator("#next-run time")).to_have_count(1)
    # The history as the script renders it (after the resume it refreshed from the API): the same cells.
    expect(page.locator("#runs tbody tr").first.locator("td.result pre")).to_have_text('{\n  "alerts": 1,\n  "checked": 12\n}')
    schedule = live.schedule("paula")
    assert (schedule.paused, schedule.paused_reason, schedule.failed_slots) == (False, None, 0)


@pytest.mark.redis
def test_run_now_in_queue_mode_shows_the_run_in_progress_until_a_worker_runs_it(live_queue: LiveServer, page, tmp_path: Path) -> None:
    live_queue.seed("bob")
    live_queue.run_once("bob")
    page.goto(live_queue.link("bob"))
    expect(page.locator("#runs tbody tr")).to_have_count(1)
    page.click("#run-now")
    expect(page.locator("#status")).to_have_text("queued")
    expect(page.locator("#progress-message")).to_have_text("Waiting in the queue…")
    expect(page.locator("#run-now")).to_be_disabled()
    expect(page.locator("#run-now")).to_have_text("Run in progress…")
    expect(page.locator("#next-run")).to_have_text("after the current run")
    page.reload()  # the server renders the same state: no second run can be started from here
    expect(page.locator("#run-now")).to_be_disabled()
    screenshot(page, "settings-running")

    env = cli_env(DATABASE_URL=live_queue.app.settings.DATABASE_URL, REDIS_URL=live_queue.app.settings.REDIS_URL or "", MONITOR_TASK=TASK)
    worker = subprocess.run([PYTHON, "-m", "monitor_scheduler.cli", "worker", "--concurrency", "1", "--burst"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert worker.returncode == 0, worker.stderr
    # The page polls the API: the status changes without a reload.
    expect(page.locator("#status")).to_have_text("succeeded")
    expect(page.locator("#run-now")).to_be_enabled()
    expect(page.locator("#runs tbody tr")).to_have_count(2)


@pytest.mark.redis
def test_the_queued_note_of_a_form_post_goes_when_the_worker_starts_the_run(live_queue: LiveServer, page, tmp_path: Path) -> None:
    live_queue.seed("quinn")
    page.goto(live_queue.link("quinn"))
    # The form posted without the script's handler (form.submit() fires no submit event), as a
    # browser does before the script loaded: the server answers with its note.
    page.evaluate("document.getElementById('run-form').submit()")
    expect(page.locator("#flash")).to_have_text("Run of quinn queued for a worker.")
    expect(page.locator("#status")).to_have_text("queued")
    screenshot(page, "settings-queued-note")
    env = cli_env(DATABASE_URL=live_queue.app.settings.DATABASE_URL, REDIS_URL=live_queue.app.settings.REDIS_URL or "", MONITOR_TASK=TASK)
    worker = subprocess.run([PYTHON, "-m", "monitor_scheduler.cli", "worker", "--concurrency", "1", "--burst"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert worker.returncode == 0, worker.stderr
    # The page's poll sees the run finished and drops the note that said it waits.
    expect(page.locator("#status")).to_have_text("succeeded")
    expect(page.locator("#flash")).to_have_count(0)
    screenshot(page, "settings-queued-note-gone")


@pytest.mark.redis
def test_a_slow_run_shows_its_progress_without_a_reload_then_the_finished_run(live_queue: LiveServer, page, tmp_path: Path) -> None:
    live_queue.seed("slow-sam")
    page.goto(live_queue.link("slow-sam"))
    expect(page.locator("#progress")).to_be_hidden()
    page.evaluate("window.sameDocument = true")  # gone if the page reloads
    page.click("#run-now")
    expect(page.locator("#status")).to_have_text("queued")
    expect(page.locator("#progress-message")).to_have_text("Waiting in the queue…")
    expect(page.locator("#progress-bar")).to_be_hidden()

    env = cli_env(DATABASE_URL=live_queue.app.settings.DATABASE_URL, REDIS_URL=live_queue.app.settings.REDIS_URL or "",
                  MONITOR_TASK="tests.web.tasks:stepping_task", MONITOR_TEST_DIR=str(tmp_path))
    worker = subprocess.Popen([PYTHON, "-m", "monitor_scheduler.cli", "worker", "--concurrency", "1", "--burst"],
                              env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Started, nothing reported yet: an indeterminate bar.
        expect(page.locator("#status")).to_have_text("running")
        expect(page.locator("#progress-message")).to_have_text("Running…")
        expect(page.locator("#progress-bar")).to_be_visible()
        for n, (fraction, message) in enumerate(STEPS):
            (tmp_path / f"go-{n}").touch()
            expect(page.locator("#progress-message")).to_have_text(message)  # as text: no markup from the task
            expect(page.locator("#progress-bar")).to_have_js_property("value", fraction)
            expect(page.locator("#progress-percent")).to_have_text(f"{fraction * 100:.0f} %")
            screenshot(page, f"settings-progress-{n}")
        (tmp_path / f"go-{len(STEPS)}").touch()
        _, stderr = worker.communicate(timeout=60)
        assert worker.returncode == 0, stderr
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    expect(page.locator("#status")).to_have_text("succeeded")
    expect(page.locator("#progress")).to_be_hidden()
    expect(page.locator("#runs tbody tr")).to_have_count(1)
    expect(page.locator("#runs tbody tr td.progress-message")).to_have_text(STEPS[-1][1])
    assert page.evaluate("window.sameDocument") is True, "the page was never reloaded"
    screenshot(page, "settings-progress-finished")


def test_a_bad_interval_shows_the_inline_error_and_saves_nothing(live: LiveServer, page) -> None:
    live.seed("carol", interval=15)
    before = live.schedule("carol")
    page.goto(live.link("carol"))
    for bad in ("0", "1441", "-3"):
        page.fill("#interval", bad)
        page.click("#save")
        expect(page.locator("#interval-error")).to_be_visible()
        expect(page.locator("#interval-error")).to_contain_text("between 1 and 1440")
        expect(page.locator("#interval")).to_have_attribute("aria-invalid", "true")
    screenshot(page, "settings-invalid")
    assert live.schedule("carol") == before
    page.reload()
    expect(page.locator("#interval")).to_have_value("15")
    # The server checks again: a request that skips the page's check is refused the same way.
    status = page.evaluate(
        """async () => (await fetch('/api/schedules/me', {method: 'PATCH', headers: {'Content-Type': 'application/json',
           'X-CSRF-Token': document.body.dataset.csrf}, body: JSON.stringify({intervalMinutes: 5000})})).status"""
    )
    assert status == 422
    assert live.schedule("carol") == before


def test_a_user_cannot_reach_another_users_data_or_the_admin_page(live: LiveServer, page) -> None:
    live.seed("dave", interval=7)
    live.seed("erin", interval=33)
    live.run_once("erin")
    link = live.link("dave")
    page.goto(link)
    expect(page.locator("#signed-in-as")).to_have_text("dave")
    expect(page.locator("body")).not_to_contain_text("erin")
    expect(page.locator("nav")).not_to_contain_text("Admin")
    response = page.goto(f"{live.url}/admin")
    assert response.status == 403
    expect(page.locator("#message")).to_contain_text("administrators")
    screenshot(page, "admin-forbidden")
    for path in ("/api/admin/schedules", "/api/admin/schedules/erin", "/api/admin/schedules/erin/runs"):
        assert page.goto(live.url + path).status == 403
    assert '"userId":"dave"' in page.goto(f"{live.url}/api/schedules/me").text()
    assert page.goto(f"{live.url}/api/schedules/me/runs").json() == []
    # The link was one-time; a fresh browser cannot reuse it.
    other = page.context.browser.new_context()
    assert other.new_page().goto(link).status == 401
    other.close()


# --- admin ----------------------------------------------------------------------------------------


def test_an_admin_sees_all_users_and_uses_the_filters(live: LiveServer, page) -> None:
    for user_id, interval in (("alice", 5), ("bob", 10), ("carol", 60), ("failing-fred", 15), ("<b>mallory</b>", 30)):
        live.seed(user_id, interval=interval)
    live.seed("paused-pat", enabled=False)
    for user_id in ("alice", "bob", "failing-fred"):
        live.run_once(user_id)
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(live.link("root", admin=True))
    expect(page).to_have_url(f"{live.url}/admin")
    rows = page.locator("#schedules tbody tr[data-user]")
    expect(rows).to_have_count(6)
    expect(page.locator("#schedules")).to_contain_text("<b>mallory</b>")  # shown as text, not markup
    expect(page.locator("#queue-health")).to_contain_text("sync mode")
    expect(page.locator("#due-now")).to_have_text("2")  # carol and mallory never ran
    screenshot(page, "admin")

    page.click("a[data-filter=failing]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-user", "failing-fred")
    expect(rows.first).to_contain_text("monitored endpoint answered HTTP 500")
    screenshot(page, "admin-failing")
    page.click("a[data-filter=disabled]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-user", "paused-pat")
    page.click("a[data-filter=due]")
    expect(rows).to_have_count(2)

    page.click("text=All")
    page.fill("#search", "ca")
    page.press("#search", "Enter")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-user", "carol")

    # Row actions: enable paused-pat, change bob's interval, run carol now, unlock.
    page.goto(f"{live.url}/admin?filter=disabled")
    page.locator("tr[data-user=paused-pat] button.toggle").click()
    expect(page.locator("#flash")).to_have_text("Saved paused-pat.")
    expect(rows).to_have_count(0)
    assert live.schedule("paused-pat").enabled is True
    page.goto(f"{live.url}/admin")
    page.locator("tr[data-user=bob] input[name=interval]").fill("45")
    page.locator("tr[data-user=bob] .interval-form button").click()
    expect(page.locator("#flash")).to_have_text("Saved bob.")
    assert live.schedule("bob").interval_minutes == 45
    page.locator("tr[data-user=carol] button", has_text="Run now").click()
    expect(page.locator("#flash")).to_have_text("Run of carol finished.")
    expect(page.locator("tr[data-user=carol]")).to_contain_text("succeeded")
    page.click("#unlock")
    expect(page.locator("#flash")).to_contain_text("Unlocked 0 expired lease(s).")


def test_the_capacity_chart_has_axes_a_capacity_line_and_a_gap_where_no_pass_ran(live: LiveServer, page) -> None:
    # Given passes every minute for the last 4 hours, except none for 40 minutes 2 hours ago,
    with live.app.engine.begin() as conn:
        now = live.app.clock.now(conn)
        for m in range(240):
            if not 100 <= m < 140:
                writes.insert_sample(conn, Sample(now - timedelta(minutes=m), due=(m // 20) % 5, queued=(m // 30) % 3, running=2, demand=2.5, capacity=3))
    page.goto(live.link("root", admin=True))
    chart = page.locator("#capacity-chart")
    expect(chart).to_be_visible()
    # Axes: the baseline, five labelled y gridlines from 0 and hourly UTC labels along x.
    axis = chart.locator("line.axis").bounding_box()  # a horizontal line: no height, so not "visible" to Playwright
    assert axis is not None and axis["width"] > 600
    expect(chart.locator(".y-labels text")).to_have_count(5)
    expect(chart.locator(".y-labels text").first).to_have_text("0")
    assert all(re.fullmatch(r"\d\d:00", t) for t in chart.locator(".x-labels text[text-anchor=middle]").all_text_contents())
    expect(chart.locator(".x-labels text[text-anchor=middle]")).to_have_count(6)
    # The capacity is a dashed line at 3; every series breaks at the gap, which is a shaded band.
    capacity = chart.locator("polyline.series-capacity")
    expect(capacity).to_have_count(2)
    assert capacity.first.evaluate("el => getComputedStyle(el).strokeDasharray") not in ("", "none")
    expect(chart.locator("polyline.series-due")).to_have_count(2)
    gap = chart.locator("rect.gap")
    expect(gap).to_have_count(1)
    expect(gap).to_be_visible()
    expect(gap.locator("title")).to_contain_text("No dispatch pass from")
    box, plot = gap.bounding_box(), chart.bounding_box()
    assert box is not None and plot is not None and 0.05 * plot["width"] < box["width"] < 0.15 * plot["width"], "40 minutes of 6 hours"
    expect(page.locator(".legend [data-series=gap]")).to_have_text("no dispatch pass")
    chart.scroll_into_view_if_needed()
    screenshot(page, "admin-capacity-gap")
