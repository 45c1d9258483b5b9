"""The command line as operators use it: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import fcntl
import json
import re
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from typing_extensions import override

from core import claims, domain, queries, writes
from core.db import create_db_engine
from schema.models import schedules
from tests.conftest import PYTHON, REPO_ROOT, cli_env


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def run(workdir: Path, *args: str, env: dict[str, str] | None = None, **extra: str) -> subprocess.CompletedProcess:
    env = env or cli_env(DATABASE_URL=f"sqlite:///{workdir / 'cli.db'}", MONITOR_TASK="worker.tasks:noop_task", **extra)
    return subprocess.run([PYTHON, "-m", "monitor_scheduler.cli", *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=120)


def schedule_rows(workdir: Path) -> list[domain.Schedule]:
    engine = create_db_engine(f"sqlite:///{workdir / 'cli.db'}")
    try:
        with engine.connect() as conn:
            from datetime import datetime

            return queries.list_schedules(conn, now=datetime(2100, 1, 1))
    finally:
        engine.dispose()


def test_migrate_then_schedule_set_show_and_list(workdir: Path) -> None:
    assert run(workdir, "migrate").returncode == 0
    created = run(workdir, "schedule", "set", "alice", "--interval", "15")
    assert created.returncode == 0 and created.stdout.startswith("created")
    assert json.loads(created.stdout.split(" ", 1)[1])["intervalMinutes"] == 15
    assert run(workdir, "schedule", "set", "bob").returncode == 0
    assert run(workdir, "schedule", "set", "bob", "--disable").returncode == 0

    show = run(workdir, "schedule", "show", "alice")
    assert json.loads(show.stdout)["userId"] == "alice"
    listed = run(workdir, "schedule", "list", "--disabled", "--json")
    assert [r["userId"] for r in json.loads(listed.stdout)] == ["bob"]
    assert [r["userId"] for r in json.loads(run(workdir, "schedule", "list", "--due", "--json").stdout)] == ["alice"]


@pytest.mark.parametrize("bad", ["0", "1441", "abc", "2.5", "-3", "+-5", "\u0665"])
def test_a_bad_interval_exits_2_names_the_limits_and_writes_nothing(workdir: Path, bad: str) -> None:
    run(workdir, "migrate")
    result = run(workdir, "schedule", "set", "alice", f"--interval={bad}")
    assert result.returncode == 2
    assert "between 1 and 1440" in result.stderr and "Traceback" not in result.stderr
    assert schedule_rows(workdir) == []


@pytest.mark.parametrize("bad,says", [("alice ", "whitespace"), (" ", "whitespace"), ("ev\u202eil", "U+202E"), ("c1\x9b", "U+009B"),
                                      ("jose\u0301", "NFC form"), ("\u3164", "U+3164"), ("alice\u2800", "U+2800")])
def test_a_bad_user_id_exits_2_says_why_and_writes_nothing(workdir: Path, bad: str, says: str) -> None:
    run(workdir, "migrate")
    result = run(workdir, "schedule", "set", bad, "--interval=9")
    assert result.returncode == 2
    assert says in result.stderr and "Traceback" not in result.stderr
    assert schedule_rows(workdir) == []


def test_a_bad_setting_exits_2_naming_the_variable(workdir: Path) -> None:
    result = run(workdir, "dispatch", DISPATCH_BATCH_SIZE="lots")
    assert result.returncode == 2
    assert "DISPATCH_BATCH_SIZE" in result.stderr and "Traceback" not in result.stderr


def test_dispatch_defaults_to_sync_mode_without_redis_and_prints_one_line(workdir: Path) -> None:
    run(workdir, "migrate")
    run(workdir, "schedule", "set", "alice")
    result = run(workdir, "dispatch")
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.strip().splitlines()
    assert line.startswith("dispatch at=") and "mode=sync" in line and "claimed=1" in line and "succeeded=1" in line
    as_json = json.loads(run(workdir, "dispatch", "--json").stdout)
    assert (as_json["mode"], as_json["claimed"]) == ("sync", 0), "alice is not due again yet"


def test_direct_mode_exit_codes(workdir: Path) -> None:
    run(workdir, "migrate")
    run(workdir, "schedule", "set", "alice")
    unknown = run(workdir, "dispatch", "--user", "nobody")
    assert unknown.returncode == 2 and "nobody" in unknown.stderr

    engine = create_db_engine(f"sqlite:///{workdir / 'cli.db'}")
    from datetime import datetime, timedelta

    now = datetime.utcnow()
    with engine.begin() as conn:
        claims.claim_user(conn, user_id="alice", now=now, token="busy", lease_until=now + timedelta(minutes=5), trigger=domain.Trigger.MANUAL)
    engine.dispose()
    busy = run(workdir, "dispatch", "--user", "alice")
    assert busy.returncode == 3 and "running" in busy.stderr

    run_now = run(workdir, "dispatch", "--user", "bob")
    assert run_now.returncode == 2


def test_queue_mode_with_redis_down_fails_in_one_line_and_claims_nothing(workdir: Path) -> None:
    run(workdir, "migrate")
    run(workdir, "schedule", "set", "alice")
    result = run(workdir, "dispatch", "--mode", "queue", REDIS_URL="redis://127.0.0.1:1/0")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "Redis" in result.stderr
    [alice] = schedule_rows(workdir)
    assert alice.locked_by is None and alice.attempt == 0


def test_unlock_and_prune_commands(workdir: Path) -> None:
    run(workdir, "migrate")
    assert run(workdir, "unlock", "--expired").stdout.startswith("unlocked 0")
    assert run(workdir, "prune").stdout.startswith("pruned 0")
    assert run(workdir, "unlock").returncode == 2, "--expired is required: say what you unlock"


def _runs_in_history(workdir: Path) -> int:
    engine = create_db_engine(f"sqlite:///{workdir / 'cli.db'}")
    try:
        with engine.connect() as conn:
            return len(queries.recent_runs(conn, user_id=None, limit=1000))
    finally:
        engine.dispose()


@pytest.mark.parametrize("days", ["-1", "0", "36501", "abc", "1.5"])
def test_prune_refuses_days_outside_the_range_and_deletes_nothing(workdir: Path, days: str) -> None:
    run(workdir, "migrate")
    run(workdir, "schedule", "set", "alice")
    assert run(workdir, "dispatch").returncode == 0
    assert _runs_in_history(workdir) == 1
    result = run(workdir, "prune", f"--days={days}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--days" in result.stderr and "from 1 to 36500" in result.stderr
    assert _runs_in_history(workdir) == 1, "not even the run that just finished is deleted"
    assert run(workdir, "prune", "--days=1").stdout.startswith("pruned 0 run(s)")


@pytest.mark.parametrize(
    ("args", "says"),
    [(("schedule", "list", "--limit", "-2"), "--limit"), (("schedule", "list", "--limit", "0"), "--limit"),
     (("schedule", "list", "--offset", "-1"), "--offset"), (("schedule", "show", "alice", "--runs", "-1"), "--runs"),
     (("schedule", "show", "alice", "--runs", "0"), "--runs"), (("worker", "--concurrency", "-1"), "--concurrency")],
)
def test_negative_or_zero_paging_exits_2_naming_the_option_and_its_range(workdir: Path, args: tuple[str, ...], says: str) -> None:
    run(workdir, "migrate")
    run(workdir, "schedule", "set", "alice")
    result = run(workdir, *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"argument {says}: must be a whole number from" in result.stderr
    assert result.stdout == ""


def _cron_env(workdir: Path, **extra: str) -> dict[str, str]:
    """What cron gives a job: almost nothing. Settings come from crontab variables."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "SHELL": "/bin/sh", "DATABASE_URL": f"sqlite:///{workdir / 'cli.db'}",
           "MONITOR_TASK": "worker.tasks:noop_task", "CRON_DISPATCH_LOCK": str(workdir / "cron.lock")}
    if not (REPO_ROOT / ".venv" / "bin" / "python").exists():
        env["MONITOR_SCHEDULER_PYTHON"] = sys.executable  # a checkout without the project's venv
        env["PYTHONPATH"] = str(REPO_ROOT)
    env.update(extra)
    return env


def test_cron_dispatch_runs_one_pass_from_a_bare_environment(workdir: Path) -> None:
    run(workdir, "migrate")
    run(workdir, "schedule", "set", "alice")
    result = subprocess.run([str(REPO_ROOT / "scripts" / "cron-dispatch")], cwd="/", env=_cron_env(workdir), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    output = (result.stdout + result.stderr).strip().splitlines()
    assert len(output) == 1 and "claimed=1" in output[0], output
    assert schedule_rows(workdir)[0].last_status == "succeeded"


def test_cron_dispatch_never_overlaps_itself(workdir: Path) -> None:
    run(workdir, "migrate")
    run(workdir, "schedule", "set", "alice")
    with open(workdir / "cron.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a previous pass still running
        result = subprocess.run([str(REPO_ROOT / "scripts" / "cron-dispatch")], env=_cron_env(workdir), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "skipped" in result.stdout
    assert schedule_rows(workdir)[0].last_status is None, "nothing was dispatched"


def test_cron_dispatch_exits_non_zero_when_the_pass_fails(workdir: Path) -> None:
    run(workdir, "migrate")
    result = subprocess.run([str(REPO_ROOT / "scripts" / "cron-dispatch"), "--mode", "queue"], env=_cron_env(workdir, REDIS_URL="redis://127.0.0.1:1/0"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Redis" in result.stderr


def test_dispatch_via_http_posts_the_secret_and_prints_the_answer(workdir: Path) -> None:
    requests: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            requests.append({"path": self.path, "secret": self.headers.get("x-cron-secret"), "body": body})
            payload = json.dumps({"claimed": 3, "enqueued": 3}).encode()
            self.send_response(200 if requests[-1]["secret"] == "s3cret" else 401)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        @override
        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        ok = run(workdir, "dispatch", "--via-http", url, "--mode", "sync", CRON_SECRET="s3cret")
        wrong = run(workdir, "dispatch", "--via-http", url, CRON_SECRET="wrong")
        missing = run(workdir, "dispatch", "--via-http", url)
    finally:
        server.shutdown()
    assert ok.returncode == 0 and json.loads(ok.stdout)["claimed"] == 3
    assert requests[0] == {"path": "/api/cron/one-click-start", "secret": "s3cret", "body": {"mode": "sync"}}
    assert len(requests) == 2, "no request without a secret"
    assert wrong.returncode == 1 and "401" in wrong.stderr
    assert missing.returncode == 2 and "CRON_SECRET" in missing.stderr


def test_json_logs_carry_the_run_identity(workdir: Path) -> None:
    run(workdir, "migrate")
    run(workdir, "schedule", "set", "alice")
    result = run(workdir, "dispatch", LOG_FORMAT="json", LOG_LEVEL="INFO")
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stderr.strip().splitlines()]  # every line is JSON
    [finished] = [e for e in entries if e["message"].startswith("run finished")]
    assert finished["user_id"] == "alice" and finished["lease_token"] and finished["slot"].endswith("Z")
    assert {e["level"] for e in entries} <= {"INFO", "WARNING"}


@pytest.mark.parametrize("command", [("worker", "--burst"), ("tick", "status"), ("dispatch", "--mode", "queue")])
def test_commands_that_need_redis_say_so_without_a_traceback(workdir: Path, command: tuple[str, ...]) -> None:
    run(workdir, "migrate")
    result = run(workdir, *command)
    assert result.returncode == 2
    assert "REDIS_URL" in result.stderr and "Traceback" not in result.stderr


def test_schedule_json_says_null_for_a_time_that_is_not_set(workdir: Path) -> None:
    assert run(workdir, "migrate").returncode == 0
    created = json.loads(run(workdir, "schedule", "set", "alice").stdout.split(" ", 1)[1])
    shown = json.loads(run(workdir, "schedule", "show", "alice").stdout)
    listed = json.loads(run(workdir, "schedule", "list", "--json").stdout)[0]
    for body in (created, shown, listed):
        assert (body["lastRunAt"], body["lockedUntil"], body["runStartedAt"], body["progressAt"]) == (None, None, None, None)
        assert "-" not in body.values()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["nextRunAt"]), "ISO 8601, as the API writes times"
    table = run(workdir, "schedule", "list").stdout.splitlines()[1].split()
    assert table[5:] == ["-", "-", "-"], "the table for people keeps its dash (lastRunAt, lastStatus, lockedBy)"


def test_schedule_show_prints_the_state_and_progress_and_history_keeps_the_last_message(workdir: Path) -> None:
    assert run(workdir, "migrate").returncode == 0
    assert run(workdir, "schedule", "set", "alice").returncode == 0
    shown = json.loads(run(workdir, "schedule", "show", "alice").stdout)
    assert (shown["state"], shown["progress"], shown["progressMessage"], shown["runStartedAt"]) == ("idle", None, None, None)

    env = cli_env(DATABASE_URL=f"sqlite:///{workdir / 'cli.db'}", MONITOR_TASK="tests.tasks:progress_task")
    assert run(workdir, "dispatch", env=env).returncode == 0

    shown = json.loads(run(workdir, "schedule", "show", "alice").stdout)
    assert (shown["state"], shown["progress"], shown["progressMessage"]) == ("idle", 1.0, "all of alice's endpoints answered")
    assert shown["runStartedAt"].endswith("Z") and shown["progressAt"].endswith("Z")
    assert shown["recentRuns"][0]["progressMessage"] == "all of alice's endpoints answered"

    engine = create_db_engine(f"sqlite:///{workdir / 'cli.db'}")
    try:
        with engine.begin() as conn:  # a dispatcher leases alice; no worker has started the job yet
            now = datetime.now(UTC).replace(tzinfo=None)
            claims.claim_user(conn, user_id="alice", now=now, token="host:1:queued", lease_until=now + timedelta(minutes=15), trigger=domain.Trigger.MANUAL)
    finally:
        engine.dispose()
    shown = json.loads(run(workdir, "schedule", "show", "alice").stdout)
    assert (shown["state"], shown["progress"], shown["progressMessage"]) == ("queued", None, None)


def test_schedule_show_cleans_errors_stored_before_errors_were_cleaned(workdir: Path) -> None:
    assert run(workdir, "migrate").returncode == 0
    assert run(workdir, "schedule", "set", "alice").returncode == 0
    raw = "boom \x9b2J\x1b[31m\u202egnp.exe"
    engine = create_db_engine(f"sqlite:///{workdir / 'cli.db'}")
    try:
        with engine.begin() as conn:  # rows as an older version stored them: the error verbatim
            conn.execute(schedules.update().where(schedules.c.userId == "alice").values(lastError=raw))
            now = datetime.now(UTC).replace(tzinfo=None)
            writes.insert_runs(conn, [domain.RunRecord(
                user_id="alice", trigger="schedule", slot=now, attempt=1, lease_token="t", status="failed", error=raw,
                skipped_slots=0, enqueued_at=None, started_at=now, finished_at=now, duration_ms=1, worker="w",
            )])
    finally:
        engine.dispose()
    shown = run(workdir, "schedule", "show", "alice")
    assert shown.returncode == 0
    assert "\x9b" not in shown.stdout and "\x1b" not in shown.stdout and "\u202e" not in shown.stdout
    data = json.loads(shown.stdout)
    assert data["lastError"] == data["recentRuns"][0]["error"] == "boom  2J [31mgnp.exe"
