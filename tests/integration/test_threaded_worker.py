"""`monitor-scheduler worker --threads N`: many runs at once in one RQ worker process, proved with
real worker processes against real MariaDB or PostgreSQL and Redis.

- N slow runs overlap in one process, each recorded once; the jobs are ordinary RQ jobs (finished
  registry), the worker is listed by `rq info` and announces N in its worker hash;
- SIGTERM with runs in flight: every one finishes and is recorded before the process exits;
- SIGKILL with runs in flight: each run's lease expires, the dispatcher records it lost once and
  runs it again;
- a run past JOB_TIMEOUT on a thread: recorded failed (timeout), the user moves on, the RQ job is
  failed, and the task's late result is refused (stale);
- an async task: N runs at once on one event loop; sync mode runs an async task to completion.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue, Worker

from core.capacity import WORKER_THREADS_FIELD
from core.domain import RunRecord
from dispatcher.workers import worker_capacity
from tests.conftest import Backend, cli_env, on_one_server
from tests.integration.helpers import QUEUE, cli, dispatch_once, rq_info, wait_for, worker_env
from tests.tasks import release_marker, started_marker

# Threads, signals and RQ are the subject here, not the database: each test runs on one server,
# dealt out between MariaDB and PostgreSQL (tests/conftest.py `on_one_server`).
pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _overlap(runs: list[RunRecord]) -> bool:
    """Every run was in progress at one moment: the latest start precedes the earliest finish."""
    starts = [r.started_at for r in runs if r.started_at is not None]
    return len(starts) == len(runs) and max(starts) < min(r.finished_at for r in runs)


def _succeeded_once(backend: Backend, users: list[str]) -> list[RunRecord]:
    runs = [r for u in users for r in backend.runs(u)]
    assert Counter(r.user_id for r in runs) == Counter(users), "each user is recorded exactly once"
    assert {r.status for r in runs} == {"succeeded"}, [(r.user_id, r.status, r.error) for r in runs]
    return runs


def _pids(test_dir: Path) -> set[str]:
    return {line.split()[3] for line in (test_dir / "runs.log").read_text().splitlines()}


@on_one_server("postgresql")
def test_n_slow_runs_overlap_in_one_process_as_ordinary_rq_jobs(server_now_backend: Backend, redis_url: str, redis_conn: Redis, tmp_path: Path) -> None:
    # Given 6 users whose task sleeps 2 s, and one worker process with 6 threads
    users = server_now_backend.add_schedules(6, interval=7)
    assert dispatch_once(server_now_backend, redis_url).enqueued == 6
    env = worker_env(server_now_backend, redis_url, tmp_path, "tests.tasks:sleeping_task", MONITOR_TEST_SLEEP="2")
    worker = cli("worker", "--concurrency", "1", "--threads", "6", env=env)
    try:
        # When it runs them
        finished = Queue(QUEUE, connection=redis_conn).finished_job_registry
        wait_for(lambda: finished.count == 6, 60, lambda: f"6 finished jobs (have {finished.get_job_ids()}, log {worker.stderr})")
        listing = rq_info(redis_url, "--only-workers")
        [rq_worker] = Worker.all(connection=redis_conn)
        announced = redis_conn.hget(rq_worker.key, WORKER_THREADS_FIELD)
        capacity = worker_capacity(Queue(QUEUE, connection=redis_conn))
    finally:
        worker.send_signal(signal.SIGTERM)
        _, log = worker.communicate(timeout=60)

    # Then they ran at once, in one process, each recorded once, as ordinary RQ jobs
    runs = _succeeded_once(server_now_backend, users)
    assert _overlap(runs), [(r.started_at, r.finished_at) for r in runs]
    assert len(_pids(tmp_path)) == 1
    assert worker.returncode == 0, log
    assert "1 workers" in listing.stdout and QUEUE in listing.stdout, listing.stdout
    assert announced == b"6" and capacity == 6, "the capacity figures count the worker's 6 threads"
    assert Queue(QUEUE, connection=redis_conn).failed_job_registry.count == 0


@on_one_server("mysql")
def test_processes_times_threads_runs_are_in_flight_at_once(server_now_backend: Backend, redis_url: str, redis_conn: Redis, tmp_path: Path) -> None:
    # Given 6 users whose task sleeps 3 s, and 2 worker processes (RQ's WorkerPool) x 3 threads
    users = server_now_backend.add_schedules(6, interval=7)
    assert dispatch_once(server_now_backend, redis_url).enqueued == 6
    env = worker_env(server_now_backend, redis_url, tmp_path, "tests.tasks:sleeping_task", MONITOR_TEST_SLEEP="3")

    # When they run
    worker = cli("worker", "--concurrency", "2", "--threads", "3", "--burst", env=env)
    _, log = worker.communicate(timeout=90)

    # Then all 6 were in flight at once, 3 in each of the 2 processes
    assert worker.returncode == 0, log
    runs = _succeeded_once(server_now_backend, users)
    assert _overlap(runs), [(r.started_at, r.finished_at) for r in runs]
    per_process = Counter(line.split()[3] for line in (tmp_path / "runs.log").read_text().splitlines())
    assert sorted(per_process.values()) == [3, 3], per_process


@on_one_server("postgresql")
def test_sigterm_lets_every_run_in_flight_finish_and_record(server_now_backend: Backend, redis_url: str, tmp_path: Path) -> None:
    users = server_now_backend.add_schedules(4)
    assert dispatch_once(server_now_backend, redis_url).enqueued == 4
    env = worker_env(server_now_backend, redis_url, tmp_path, "tests.tasks:sleeping_task", MONITOR_TEST_SLEEP="3")
    worker = cli("worker", "--concurrency", "1", "--threads", "4", env=env)
    wait_for(lambda: all(started_marker(tmp_path, u).exists() for u in users), 30, "all 4 runs to start")

    worker.send_signal(signal.SIGTERM)
    _, log = worker.communicate(timeout=60)

    assert worker.returncode == 0, log
    runs = _succeeded_once(server_now_backend, users)
    assert _overlap(runs)
    assert {server_now_backend.schedule(u).locked_by for u in users} == {None}


@on_one_server("mysql")
def test_a_killed_threaded_worker_has_each_run_recovered_once(server_now_backend: Backend, redis_url: str, tmp_path: Path) -> None:
    users = server_now_backend.add_schedules(3, interval=1)
    assert dispatch_once(server_now_backend, redis_url).enqueued == 3
    worker = cli("worker", "--concurrency", "1", "--threads", "3", env=worker_env(server_now_backend, redis_url, tmp_path, "tests.tasks:blocking_task"), start_new_session=True)
    try:
        wait_for(lambda: all(started_marker(tmp_path, u).exists() for u in users), 30, "all 3 runs to start")
        # The lease is 3 s; no pass may claim them while the worker lives (the keeper renews all 3).
        live_until = time.monotonic() + 4.5
        while time.monotonic() < live_until:
            assert dispatch_once(server_now_backend, redis_url).claimed == 0, "claimed while the worker lives"
            time.sleep(0.5)
        os.killpg(worker.pid, signal.SIGKILL)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        worker.communicate(timeout=10)

    claimed = 0
    deadline = time.monotonic() + 20
    while claimed < 3 and time.monotonic() < deadline:
        claimed += dispatch_once(server_now_backend, redis_url).claimed
        time.sleep(0.2)
    assert claimed == 3
    rerun = cli("worker", "--concurrency", "1", "--threads", "3", "--burst", env=worker_env(server_now_backend, redis_url, tmp_path, "tests.tasks:recording_task"))
    _, log = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, log
    for user in users:
        assert [(r.status, r.attempt) for r in server_now_backend.runs(user)] == [("lost", 1), ("succeeded", 2)]


@on_one_server("postgresql")
def test_a_thread_run_past_job_timeout_is_failed_and_its_late_result_is_stale(server_now_backend: Backend, redis_url: str, redis_conn: Redis, tmp_path: Path) -> None:
    # Given a run whose task blocks past JOB_TIMEOUT (2 s) on a worker with threads
    [user] = server_now_backend.add_schedules(1, interval=1)
    assert dispatch_once(server_now_backend, redis_url, JOB_TIMEOUT=2).enqueued == 1
    env = worker_env(server_now_backend, redis_url, tmp_path, "tests.tasks:blocking_task", JOB_TIMEOUT="2")
    worker = cli("worker", "--concurrency", "1", "--threads", "2", env=env)
    try:
        # Then it is recorded failed with a timeout, the lease released, the user due at its next slot
        wait_for(lambda: server_now_backend.runs(user), 30, "the timed-out run to be recorded")
        [failed] = server_now_backend.runs(user)
        assert failed.status == "failed" and "timed out" in (failed.error or ""), failed
        row = server_now_backend.schedule(user)
        assert (row.last_status, row.locked_by) == ("failed", None)
        assert row.next_run_at == failed.slot + timedelta(minutes=1)
        registry = Queue(QUEUE, connection=redis_conn).failed_job_registry
        wait_for(lambda: registry.count == 1, 10, "the RQ job to be failed")
        [job_id] = registry.get_job_ids()
        rq_job = Queue(QUEUE, connection=redis_conn).fetch_job(job_id)
        result = rq_job.latest_result() if rq_job is not None else None
        assert result is not None and "JobTimeoutException" in (result.exc_string or "")

        # When the task finally returns, its result is refused
        release_marker(tmp_path, user).write_text("go")
        wait_for(lambda: len(server_now_backend.runs(user)) == 2, 30, "the late result to be recorded")
    finally:
        worker.send_signal(signal.SIGTERM)
        _, log = worker.communicate(timeout=60)
    assert [r.status for r in server_now_backend.runs(user)] == ["failed", "stale"]
    assert server_now_backend.schedule(user) == row, "the late result changed nothing on the schedule"
    assert Queue(QUEUE, connection=redis_conn).finished_job_registry.count == 0, "the RQ job stays failed"
    assert worker.returncode == 0, log


@pytest.mark.parametrize("task", ["tests.tasks:async_sleeping_task", "tests.tasks:async_callable_task"])
@on_one_server("mysql")
def test_an_async_task_runs_n_at_once_on_one_event_loop(server_now_backend: Backend, redis_url: str, tmp_path: Path, task: str) -> None:
    users = server_now_backend.add_schedules(5, interval=7)
    assert dispatch_once(server_now_backend, redis_url).enqueued == 5
    env = worker_env(server_now_backend, redis_url, tmp_path, task, MONITOR_TEST_SLEEP="2")

    worker = cli("worker", "--concurrency", "1", "--threads", "5", "--burst", env=env)
    _, log = worker.communicate(timeout=60)

    assert worker.returncode == 0, log
    runs = _succeeded_once(server_now_backend, users)
    assert _overlap(runs), [(r.started_at, r.finished_at) for r in runs]
    lines = [line.split() for line in (tmp_path / "async.log").read_text().splitlines()]
    assert len(lines) == 5
    assert {thread for _, thread, _, _ in lines} == {"monitor-task-loop"}
    assert len({(loop, pid) for _, _, loop, pid in lines}) == 1, "one event loop in one process"


def test_sync_mode_runs_an_async_task_to_completion(sqlite_backend: Backend, tmp_path: Path) -> None:
    from core.clock import ProcessClock

    with sqlite_backend.engine.connect() as conn:
        sqlite_backend.clock.moment = ProcessClock().now(conn)
    users = sqlite_backend.add_schedules(2)
    env = cli_env(DATABASE_URL=sqlite_backend.url, MONITOR_TASK="tests.tasks:async_sleeping_task", MONITOR_TEST_DIR=str(tmp_path), MONITOR_TEST_SLEEP="0.2")

    proc = cli("dispatch", "--mode", "sync", env=env)
    out, err = proc.communicate(timeout=60)

    assert proc.returncode == 0, (out, err)
    _succeeded_once(sqlite_backend, users)
    assert len((tmp_path / "async.log").read_text().splitlines()) == 2


def test_pm2_and_systemd_expose_the_threads_setting(tmp_path: Path) -> None:
    import json
    import shutil
    import subprocess

    from tests.conftest import REPO_ROOT

    unit = (REPO_ROOT / "deploy" / "systemd" / "monitor-scheduler-worker@.service").read_text()
    assert "Environment=WORKER_THREADS=" in unit
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    shutil.copy(REPO_ROOT / "ecosystem.config.js", tmp_path / "ecosystem.config.js")
    env = {**cli_env(), "WORKER_THREADS": "7"}
    out = subprocess.run(
        ["node", "-e", "console.log(JSON.stringify(require('./ecosystem.config.js').apps))"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    [worker] = [app for app in json.loads(out) if app["name"] == "worker"]
    assert worker["args"][-2:] == ["--threads", "7"]


@pytest.mark.parametrize("args", [["--threads", "0"], ["--threads", "2", "--worker-class", "fork"]])
def test_bad_thread_settings_are_refused_before_any_worker_starts(tmp_path: Path, args: list[str]) -> None:
    env = cli_env(DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite", REDIS_URL="redis://127.0.0.1:1")
    proc = cli("worker", "--concurrency", "1", *args, env=env, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 2, err
    assert "invalid setting" in err
