"""The command line of paused schedules and of the failure policy (issue 17), in-process (the
parser, the settings from the environment, the services, the real database; SQLite and MariaDB):
`schedule set --retries/--retry-backoff/--pause-after` (and back to the default), bad values exit 2
writing nothing, `schedule resume`, `schedule show` and `schedule list --paused`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core import writes
from core.domain import RunRecord
from monitor_scheduler import cli
from tests import seeding
from tests.conftest import Backend

REASON = "paused after 2 consecutive failed slots; last error: \x1b[31mboom\x1b[0m"


@pytest.fixture
def run(backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.chdir(tmp_path)  # no .env
    for name, value in {"DATABASE_URL": backend.url, "REDIS_URL": "", "MONITOR_TASK": "worker.tasks:noop_task", "SPREAD_START_TIMES": "false",
                        "DEFAULT_RETRIES": "1", "RETRY_BACKOFF_SECONDS": "45", "PAUSE_AFTER_FAILED_SLOTS": "0"}.items():
        monkeypatch.setenv(name, value)

    def invoke(*args: str) -> tuple[int, str, str]:
        try:
            code = cli.main(list(args))
        except SystemExit as exc:  # argparse's own refusals
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke


def printed(out: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(out.split(" ", 1)[1] if not out.startswith("{") else out)
    return body


def test_schedule_set_takes_the_failure_policy_and_default_puts_it_back(run, backend: Backend) -> None:
    code, out, _ = run("schedule", "set", "alice", "--retries", "3", "--retry-backoff", "30s", "--pause-after", "5")
    assert code == 0, out
    body = printed(out)
    assert (body["retries"], body["retryBackoffSeconds"], body["pauseAfter"]) == (3, 30, 5)
    code, out, _ = run("schedule", "set", "alice", "--retry-backoff", "5m", "--pause-after", "off")
    assert printed(out)["effective"] == {"retries": 3, "retryBackoffSeconds": 300, "pauseAfter": "off"}
    code, out, _ = run("schedule", "set", "alice", "--retries", "default", "--retry-backoff", "default", "--pause-after", "default")
    body = printed(out)
    assert (body["retries"], body["retryBackoffSeconds"], body["pauseAfter"]) == (None, None, None)
    assert body["effective"] == {"retries": 1, "retryBackoffSeconds": 45, "pauseAfter": "off"}, "the settings defaults"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--retries", "11"), "retries must be a whole number from 0 to 10"),
        (("--retry-backoff", "0s"), "retry backoff must be a duration from 1s to 24h"),
        (("--retry-backoff", "2d"), "retry backoff must be"),
        (("--pause-after", "0"), "0 is refused"),
        (("--pause-after", "1001"), "from 1 to 1000"),
        (("--retries", "2", "--pause-after", "0"), "0 is refused"),
    ],
)
def test_a_bad_failure_policy_exits_2_and_writes_nothing(run, backend: Backend, args: tuple[str, ...], says: str) -> None:
    code, out, err = run("schedule", "set", "alice", "--interval", "10", *args)
    assert (code, out) == (2, "")
    assert says in err and "Traceback" not in err
    assert run("schedule", "show", "alice")[0] == 2, "not created"
    assert run("schedule", "set", "alice", "--interval", "10")[0] == 0
    before = backend.schedule("alice")
    assert run("schedule", "set", "alice", "--interval", "20", *args)[0] == 2
    assert backend.schedule("alice") == before


def test_schedule_show_resume_and_list_paused(run, backend: Backend) -> None:
    run("schedule", "set", "alice", "--interval", "5")
    run("schedule", "set", "bob", "--interval", "5")
    paused_at = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    with backend.engine.begin() as conn:
        seeding.pause(conn, "alice", at=paused_at, reason=REASON, failed_slots=2)
        writes.insert_runs(conn, [RunRecord("alice", "schedule", paused_at, 2, "t", "failed", "boom", 0, None, paused_at, paused_at, 5, "w",
                                            result='{"checked": 3}')])

    code, out, _ = run("schedule", "show", "alice")
    shown = printed(out)
    assert (shown["paused"], shown["failedSlots"]) == (True, 2)
    assert "last error:" in shown["pausedReason"] and "boom" in shown["pausedReason"]
    assert "\x1b" not in shown["pausedReason"], "cleaned for a terminal, like lastError"
    assert shown["pausedAt"] == paused_at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert shown["effective"] == {"retries": 1, "retryBackoffSeconds": 45, "pauseAfter": "off"}
    assert shown["recentRuns"][0]["attempt"] == 2 and shown["recentRuns"][0]["result"] == {"checked": 3}

    code, out, _ = run("schedule", "list", "--paused", "--json")
    assert [r["userId"] for r in json.loads(out)] == ["alice"]
    code, out, _ = run("schedule", "list", "--paused")
    assert out.splitlines()[1].split()[6] == "paused", "in the lastStatus column"

    code, out, _ = run("schedule", "resume", "alice")
    assert code == 0 and out.startswith("resumed ")
    body = printed(out)
    assert (body["paused"], body["pausedAt"], body["pausedReason"], body["failedSlots"]) == (False, None, None, 0)
    code, out, _ = run("schedule", "resume", "alice")
    assert code == 0 and out.startswith("not paused, unchanged ")
    assert run("schedule", "resume", "nobody")[0] == 2
