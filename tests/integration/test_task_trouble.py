"""A task that misbehaves harms its own run only, in every mode (issue 15, items 1-3).

For each way to run (the default worker, simple and fork, the threaded worker, a sync-mode pass) and each trouble
(an async task that raises SystemExit, an async task that never returns, a sync task that never
returns), the first user's run misbehaves and two more users run after it in the same process:
the troubled run is recorded failed (a timeout says so), the RQ job of a timed-out run is failed,
not finished, a hanging coroutine is cancelled, and the next runs of the process succeed.
JOB_TIMEOUT is 2 s.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from sqlalchemy import text

from tests.conftest import Backend, cli_env
from tests.integration.helpers import QUEUE, cli, dispatch_once, wait_for, worker_env
from tests.tasks import cancelled_marker, release_marker, started_marker

pytestmark = [pytest.mark.mysql, pytest.mark.slow]

TROUBLES = {
    "async-exit": ("tests.tasks:async_trouble_task", "exit"),
    "async-hang": ("tests.tasks:async_trouble_task", "hang"),
    "sync-hang": ("tests.tasks:hanging_sync_task", ""),
}
WORKERS = {
    "default": ["--concurrency", "1"],
    "fork": ["--concurrency", "1", "--worker-class", "fork"],
    "threaded": ["--concurrency", "1", "--threads", "2"],
}


def _three_users(backend: Backend) -> list[str]:
    return backend.add_schedules(3, interval=5, spread_ms=10)  # user-000000 runs first


def _finish(proc: subprocess.Popen, test_dir: Path, user: str, timeout: float) -> tuple[int, str, str]:
    """Wait for the process; then release the hanging task and kill a process that hung."""
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        release_marker(test_dir, user).write_text("go")
        if proc.poll() is None:  # it hung (before the fix): do not leave it running
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def _check_runs(backend: Backend, users: list[str], trouble: str, test_dir: Path) -> None:
    troubled, *others = users
    run, *late = backend.runs(troubled)
    assert run.status == "failed", run
    assert {r.status for r in late} <= {"stale"}, "a cancelled coroutine's late end is refused"
    if trouble.endswith("hang"):
        assert "timed out" in (run.error or ""), run.error
    else:
        assert "SystemExit" in (run.error or ""), run.error
    assert backend.schedule(troubled).locked_by is None, "the user moves on"
    for user in others:
        assert [r.status for r in backend.runs(user)] == ["succeeded"], (user, backend.runs(user))
    if trouble == "async-hang":
        assert cancelled_marker(test_dir, troubled).exists(), "the coroutine was cancelled at the timeout"


@pytest.mark.redis
@pytest.mark.parametrize("trouble", list(TROUBLES))
@pytest.mark.parametrize("worker", list(WORKERS))
def test_a_troubled_run_on_a_worker_leaves_the_next_runs_of_its_process_succeeding(
    mysql_now_backend: Backend, redis_url: str, redis_conn: Redis, tmp_path: Path, worker: str, trouble: str,
) -> None:
    task, mode = TROUBLES[trouble]
    users = _three_users(mysql_now_backend)
    assert dispatch_once(mysql_now_backend, redis_url, JOB_TIMEOUT=2).enqueued == 3
    env = worker_env(mysql_now_backend, redis_url, tmp_path, task, JOB_TIMEOUT="2", MONITOR_TEST_TROUBLE=mode)

    returncode, _, log = _finish(cli("worker", *WORKERS[worker], "--burst", env=env), tmp_path, users[0], 45)

    assert returncode == 0, log
    _check_runs(mysql_now_backend, users, trouble, tmp_path)
    queue = Queue(QUEUE, connection=redis_conn)
    failed = 1 if trouble.endswith("hang") else 0  # a task's SystemExit is its run's failure, not the job's
    assert (queue.failed_job_registry.count, queue.finished_job_registry.count) == (failed, 3 - failed), log


@pytest.mark.parametrize("trouble", list(TROUBLES))
def test_a_troubled_run_in_a_sync_pass_leaves_the_pass_going_on(mysql_now_backend: Backend, tmp_path: Path, trouble: str) -> None:
    task, mode = TROUBLES[trouble]
    users = _three_users(mysql_now_backend)
    env = cli_env(
        DATABASE_URL=mysql_now_backend.url, MONITOR_TASK=task, MONITOR_TEST_DIR=str(tmp_path), MONITOR_TEST_TROUBLE=mode, JOB_TIMEOUT="2",
    )

    returncode, out, err = _finish(cli("dispatch", "--mode", "sync", "--json", env=env), tmp_path, users[0], 30)

    assert returncode == 0, (out, err)
    _check_runs(mysql_now_backend, users, trouble, tmp_path)


@pytest.mark.redis
def test_a_timeout_whose_recording_waits_for_the_database_holds_up_no_other_timeout(
    mysql_now_backend: Backend, redis_url: str, tmp_path: Path,
) -> None:
    """Given two runs on one threaded worker whose tasks never return (JOB_TIMEOUT 2 s), and the
    first user's row locked by another connection once its run started (its timeout's write waits
    on the lock, as during a database stall), then the second run is still recorded timed out at
    its own time: the watchdog only decides, another thread writes."""
    first, second = mysql_now_backend.add_schedules(2, interval=5, spread_ms=10)
    assert dispatch_once(mysql_now_backend, redis_url, JOB_TIMEOUT=2).enqueued == 2
    env = worker_env(mysql_now_backend, redis_url, tmp_path, "tests.tasks:blocking_task", JOB_TIMEOUT="2")
    worker = cli("worker", "--concurrency", "1", "--threads", "2", env=env)
    locker = mysql_now_backend.engine.connect()
    try:
        wait_for(lambda: started_marker(tmp_path, first).exists() and started_marker(tmp_path, second).exists(), 30, "both runs to start")
        transaction = locker.begin()
        locker.execute(text("SELECT userId FROM UserMonitorSchedule WHERE userId = :u FOR UPDATE"), {"u": first})

        [timed_out] = wait_for(lambda: mysql_now_backend.runs(second), 8, "the second run's timeout to be recorded")
        assert timed_out.status == "failed" and "timed out" in (timed_out.error or "")
        assert mysql_now_backend.runs(first) == [], "the first one's write still waits for the lock"
        transaction.rollback()
        [recorded] = wait_for(lambda: mysql_now_backend.runs(first), 20, "the first run's timeout to be recorded")
        assert recorded.status == "failed"
    finally:
        locker.close()
        for user in (first, second):
            release_marker(tmp_path, user).write_text("go")
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=60)


def test_ctrl_c_during_a_sync_pass_records_the_run_and_stops_at_once(sqlite_backend: Backend, tmp_path: Path) -> None:
    """The task runs on a run thread in sync mode (so that the pass can time it out); Ctrl-C still
    stops the pass at once, with the run recorded failed and its lease released."""
    [user] = sqlite_backend.add_schedules(1)
    env = cli_env(DATABASE_URL=sqlite_backend.url, MONITOR_TASK="tests.tasks:hanging_sync_task", MONITOR_TEST_DIR=str(tmp_path))
    proc = cli("dispatch", "--mode", "sync", env=env)
    try:
        wait_for(lambda: started_marker(tmp_path, user).exists(), 30, "the run to start")
        proc.send_signal(signal.SIGINT)
        returncode, _, err = _finish(proc, tmp_path, user, 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert returncode == 130, err
    [run] = sqlite_backend.runs(user)
    assert run.status == "failed", run
    assert sqlite_backend.schedule(user).locked_by is None
