"""/healthz, /readyz and the dead-man check /healthz/scheduler, and the CLI side: `web` refuses to start without SECRET_KEY, `login-link`
prints a link the app accepts once."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from monitor_scheduler.wiring import App
from core.db import create_db_engine
from tests.conftest import PYTHON, Backend, cli_env
from tests.web.conftest import SECRET_KEY, WebHarness, make_harness


def test_healthz(web: WebHarness) -> None:
    assert web.client.get("/healthz").json() == {"status": "ok"}


def test_readyz_says_whether_this_process_can_serve_not_whether_the_dispatcher_runs(web: WebHarness) -> None:
    # A lagging dispatcher must not take the web app out of service: that is when operators need it.
    web.backend.add_schedules(1, prefix="waiting")
    web.backend.clock.advance(seconds=3600)
    response = web.client.get("/readyz")
    assert (response.status_code, response.json()) == (200, {"status": "ready", "database": "ok", "redis": "sync mode (no REDIS_URL)"})


def test_the_dead_man_check_has_its_own_endpoint(web: WebHarness) -> None:
    before = web.client.get("/healthz/scheduler")
    assert before.status_code == 503
    assert before.json()["status"] == "unhealthy"
    assert before.json()["problems"] == ["no dispatch pass has succeeded yet"]

    assert web.cron({}).status_code == 200  # any dispatcher's pass counts
    after = web.client.get("/healthz/scheduler")
    assert after.status_code == 200
    assert (after.json()["status"], after.json()["problems"], after.json()["schedulingLagSeconds"]) == ("ok", [], 0.0)


def test_the_dead_man_check_fails_when_due_users_wait_too_long(backend: Backend) -> None:
    harness = make_harness(backend, HEALTH_MAX_DUE_AGE=60, HEALTH_MAX_PASS_AGE=3600)
    harness.cron({})
    backend.add_schedules(1, prefix="waiting")
    backend.clock.advance(seconds=61)
    response = harness.client.get("/healthz/scheduler")
    assert response.status_code == 503 and response.json()["problems"][0].startswith("oldest due schedule has waited 61s")
    assert harness.client.get("/readyz").status_code == 200


def test_metrics_are_served_for_prometheus(web: WebHarness) -> None:
    web.backend.add_schedules(2)
    web.cron({})
    response = web.client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    assert 'monitor_scheduler_recent_runs{status="succeeded",trigger="sync"} 2.0' in response.text
    assert "monitor_scheduler_last_dispatch_pass_claimed 2.0" in response.text


@pytest.mark.redis
def test_readyz_with_redis(queue_web: WebHarness) -> None:
    assert queue_web.client.get("/readyz").json()["redis"] == "ok"


def test_readyz_is_503_when_redis_is_down(backend: Backend) -> None:
    harness = make_harness(backend, REDIS_URL="redis://127.0.0.1:1/0")
    response = harness.client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable" and response.json()["redis"].startswith("unreachable")


def test_readyz_is_503_when_the_database_is_not_migrated(sqlite_backend: Backend, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    engine = create_db_engine(url)
    settings = sqlite_backend.settings(DATABASE_URL=url, SECRET_KEY=SECRET_KEY)
    from web.app import create_app
    from fastapi.testclient import TestClient

    client = TestClient(create_app(App(settings, engine, sqlite_backend.clock).services))
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["database"].startswith("unreachable")
    scheduler = client.get("/healthz/scheduler")
    assert (scheduler.status_code, scheduler.json()["problems"]) == (503, ["database unreachable: OperationalError"])
    engine.dispose()


def run_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "monitor_scheduler.cli", *args], cwd=cwd, env=cli_env(**env),
                          capture_output=True, text=True, timeout=60)


def test_web_without_secret_key_exits_2_with_one_line(sqlite_url: str, tmp_path: Path) -> None:
    result = run_cli("web", "--port", "1", cwd=tmp_path, DATABASE_URL=sqlite_url, SECRET_KEY="")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["monitor-scheduler: SECRET_KEY is not set: the web app will not start without it (--dev uses a throwaway key)"]


@pytest.mark.parametrize("command", [("web", "--port", "1"), ("login-link", "alice")])
def test_a_short_secret_key_is_refused_naming_the_variable(sqlite_url: str, tmp_path: Path, command: tuple[str, ...]) -> None:
    result = run_cli(*command, cwd=tmp_path, DATABASE_URL=sqlite_url, SECRET_KEY="s" * 31)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "monitor-scheduler: invalid setting SECRET_KEY: must be at least 32 characters (a long random value)"
    ]


def test_a_short_cron_secret_stops_the_web_app_unless_dev(sqlite_backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    from core.exceptions import ConfigurationError
    from web.app import create_app

    app = App(sqlite_backend.settings(SECRET_KEY=SECRET_KEY, CRON_SECRET="c" * 15), sqlite_backend.engine, sqlite_backend.clock)
    with pytest.raises(ConfigurationError, match="CRON_SECRET: must be at least 16 characters"):
        create_app(app.services)
    create_app(app.services, dev=True)
    assert any("CRON_SECRET" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_login_link_without_secret_key_exits_2(sqlite_url: str, tmp_path: Path) -> None:
    result = run_cli("login-link", "alice", cwd=tmp_path, DATABASE_URL=sqlite_url, SECRET_KEY="")
    assert result.returncode == 2 and "SECRET_KEY" in result.stderr


def test_login_link_signs_in_once_with_the_admin_flag(sqlite_backend: Backend, tmp_path: Path) -> None:
    result = run_cli("login-link", "alice", "--admin", "--ttl", "2m", cwd=tmp_path, DATABASE_URL=sqlite_backend.url,
                     SECRET_KEY=SECRET_KEY, WEB_BASE_URL="https://monitor.example.com/")
    assert result.returncode == 0, result.stderr
    url = urlsplit(result.stdout.strip())
    assert (url.scheme, url.netloc, url.path) == ("https", "monitor.example.com", "/login")
    harness = make_harness(sqlite_backend)
    response = harness.client.get(f"{url.path}?{url.query}")
    assert (response.status_code, response.headers["location"]) == (303, "/admin")
    assert harness.client.get("/admin").status_code == 200
    harness.client.cookies.clear()
    assert harness.client.get(f"{url.path}?{url.query}").status_code == 401


@pytest.mark.parametrize("ttl", ["100000000000h", "169h", "0s", "-5m", "soon"])
def test_login_link_refuses_a_ttl_beyond_seven_days_or_below_one_second(sqlite_url: str, tmp_path: Path, ttl: str) -> None:
    result = run_cli("login-link", "alice", f"--ttl={ttl}", cwd=tmp_path, DATABASE_URL=sqlite_url, SECRET_KEY=SECRET_KEY)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "argument --ttl" in result.stderr and result.stdout == ""
    if ttl.endswith("h"):
        assert "from 1s to 168h (7 days)" in result.stderr


def test_login_link_accepts_seven_days(sqlite_url: str, tmp_path: Path) -> None:
    result = run_cli("login-link", "alice", "--ttl", "168h", cwd=tmp_path, DATABASE_URL=sqlite_url, SECRET_KEY=SECRET_KEY)
    assert result.returncode == 0 and "/login?token=" in result.stdout


def test_login_link_rejects_a_bad_user_id(sqlite_url: str, tmp_path: Path) -> None:
    result = run_cli("login-link", "x" * 65, cwd=tmp_path, DATABASE_URL=sqlite_url, SECRET_KEY=SECRET_KEY)
    assert result.returncode == 2 and "at most 64" in result.stderr


def test_the_web_command_serves_and_dispatch_via_http_uses_its_cron_endpoint(sqlite_backend: Backend, tmp_path: Path) -> None:
    import json
    import socket
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sqlite_backend.add_schedules(2)
    env = cli_env(DATABASE_URL=sqlite_backend.url, SECRET_KEY=SECRET_KEY, CRON_SECRET="via-http-secret-0123456789", REDIS_URL="",
                  MONITOR_TASK="worker.tasks:noop_task")
    server = subprocess.Popen([PYTHON, "-m", "monitor_scheduler.cli", "web", "--port", str(port)], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                    assert json.load(response) == {"status": "ok"}
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "web did not start"
                time.sleep(0.1)
        result = subprocess.run([PYTHON, "-m", "monitor_scheduler.cli", "dispatch", "--via-http", url, "--mode", "sync"],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert (json.loads(result.stdout)["mode"], json.loads(result.stdout)["ran"]) == ("sync", 2)
        wrong = subprocess.run([PYTHON, "-m", "monitor_scheduler.cli", "dispatch", "--via-http", url],
                               cwd=tmp_path, env={**env, "CRON_SECRET": "nope"}, capture_output=True, text=True, timeout=60)
        assert wrong.returncode != 0 and "401" in wrong.stderr
        # --mode queue from a host without REDIS_URL: the request is still sent (the web app
        # decides); here the web app has no Redis either and answers 503.
        queued = subprocess.run([PYTHON, "-m", "monitor_scheduler.cli", "dispatch", "--via-http", url, "--mode", "queue"],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert queued.returncode == 1 and "answered 503" in queued.stderr and "REDIS_URL" in queued.stderr, queued.stderr
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_the_dead_man_check_carries_the_capacity_figures_of_the_overview(web: WebHarness) -> None:
    # Given 3 users due and a pass that ran them, then 2 more due,
    web.backend.add_schedules(3, interval=1)
    web.cron({})
    web.backend.add_schedules(2, prefix="later")
    body = web.client.get("/healthz/scheduler").json()
    overview = web.client.get("/api/admin/overview", headers=web.auth("root", admin=True)).json()
    # then /healthz/scheduler carries the figures `check` prints, the same as the admin overview's.
    assert body["capacity"] == overview["capacity"]
    sync_threads = web.app.settings.SYNC_THREADS  # sync mode offers SYNC_THREADS runs at once
    assert (body["capacity"]["available"], body["capacity"]["due"], body["capacity"]["backlog"]) == (sync_threads, 2, 2)


def test_check_json_prints_the_dead_man_checks_body_with_the_capacity(sqlite_url: str, tmp_path: Path) -> None:
    # Sync mode (no REDIS_URL) with SYNC_THREADS=3: three runs at once available.
    unhealthy = run_cli("check", "--json", cwd=tmp_path, DATABASE_URL=sqlite_url, SYNC_THREADS="3")
    body = json.loads(unhealthy.stdout)
    assert unhealthy.returncode == 1 and body["status"] == "unhealthy" and body["problems"] == ["no dispatch pass has succeeded yet"]
    assert set(body) == {"status", "problems", "lastPassAgeSeconds", "schedulingLagSeconds", "capacity"}
    assert (body["capacity"]["available"], body["capacity"]["backlog"], body["capacity"]["overloaded"]) == (3, 0, False)
    assert run_cli("dispatch", cwd=tmp_path, DATABASE_URL=sqlite_url).returncode == 0
    healthy = run_cli("check", "--json", cwd=tmp_path, DATABASE_URL=sqlite_url)
    assert healthy.returncode == 0 and json.loads(healthy.stdout)["status"] == "ok"
    line = run_cli("check", cwd=tmp_path, DATABASE_URL=sqlite_url, SYNC_THREADS="3")
    assert line.returncode == 0 and line.stdout.startswith("ok ") and "capacity_available=3" in line.stdout
