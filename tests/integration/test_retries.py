"""Retries within the slot (issue 17) in queue mode, proved by real processes against real MariaDB
and Redis on the database's clock: racing dispatchers and the threaded worker, the async task on
the default worker, a worker SIGKILLed during attempt 1.

What ran is read from what the tasks wrote (tests/tasks.py: executions.log, runs.log) and from the
history; the order of a task's own start and end lines shows overlap, never the wall clock.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from core.tasks import decode_result
from schema.models import schedules
from tests.conftest import PYTHON, Backend
from tests.integration.helpers import cli, dispatch_once, wait_for, worker_env
from tests.tasks import started_marker

pytestmark = [pytest.mark.mysql, pytest.mark.redis, pytest.mark.slow]


def set_policy(backend: Backend, users: Sequence[str], **columns: object) -> None:
    with backend.engine.begin() as conn:
        conn.execute(update(schedules).where(schedules.c.userId.in_(users)).values(**columns))


@contextmanager
def processes(commands: Sequence[Sequence[str]], env: dict[str, str], logs: Path) -> Iterator[None]:
    """The CLI commands running side by side (their output in files: a full pipe would block a
    long-running process), stopped with SIGTERM (then SIGKILL) at the end."""
    procs = []
    try:
        for i, command in enumerate(commands):
            out = open(logs / f"proc-{i}.log", "w")
            procs.append(subprocess.Popen([PYTHON, "-m", "monitor_scheduler.cli", *command], env=env, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True))
            out.close()
        yield
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def executions(test_dir: Path) -> dict[str, list[tuple[str, str, int, float]]]:
    """Per user, the (S|E, slot, attempt, time) lines its task wrote, in file order."""
    seen: dict[str, list[tuple[str, str, int, float]]] = defaultdict(list)
    log = test_dir / "executions.log"
    for line in log.read_text().splitlines() if log.exists() else []:
        kind, user, slot, attempt, _pid, at = line.split()
        seen[user].append((kind, slot, int(attempt), float(at)))
    return seen


def finished(backend: Backend, users: Sequence[str], status: str = "succeeded") -> bool:
    return all(any(r.status == status for r in backend.runs(user)) for user in users)


def test_racing_dispatchers_and_a_threaded_worker_run_each_retry_once_never_beside_a_running_attempt(
    mysql_now_backend: Backend, redis_url: str, tmp_path: Path,
) -> None:
    backend = mysql_now_backend
    users = backend.add_schedules(10, interval=60)
    set_policy(backend, users, retries=3, retryBackoffSeconds=1)
    env = worker_env(backend, redis_url, tmp_path, "tests.tasks:flaky_task")
    dispatcher = ["dispatch", "--loop", "--every", "200ms", "--mode", "queue"]

    with processes([dispatcher, dispatcher, dispatcher, ["worker", "--threads", "4"]], env, tmp_path):
        wait_for(lambda: finished(backend, users), 90, lambda: f"every user's third attempt; logs: {(tmp_path / 'proc-3.log').read_text()[-2000:]}")

    ran = executions(tmp_path)
    for user in users:
        lines = ran[user]
        assert [(kind, attempt) for kind, _, attempt, _ in lines] == [("S", 1), ("E", 1), ("S", 2), ("E", 2), ("S", 3), ("E", 3)], \
            f"each attempt once, each after the one before ended: {lines}"
        assert len({slot for _, slot, _, _ in lines}) == 1, "one slot"
        history = backend.runs(user)
        assert [(r.attempt, r.status) for r in history] == [(1, "failed"), (2, "failed"), (3, "succeeded")]
        assert len({r.slot for r in history}) == 1
        for earlier, later in zip(history, history[1:]):
            assert later.started_at is not None and later.started_at >= earlier.finished_at + timedelta(seconds=1), "spaced by the backoff"
        assert decode_result(history[-1].result) == ({"attempt": 3}, None), "the threaded worker stores the result"
        row = backend.schedule(user)
        assert (row.last_status, row.failed_slots, row.retrying, row.locked_by) == ("succeeded", 0, False, None)


def test_an_async_tasks_retry_and_result_on_the_default_worker(mysql_now_backend: Backend, redis_url: str, tmp_path: Path) -> None:
    backend = mysql_now_backend
    [user] = backend.add_schedules(1, interval=60)
    set_policy(backend, [user], retries=1, retryBackoffSeconds=1)
    env = worker_env(backend, redis_url, tmp_path, "tests.tasks:async_flaky_task", MONITOR_TEST_SUCCEEDS_AT="2")

    with processes([["dispatch", "--loop", "--every", "200ms", "--mode", "queue"], ["worker", "--concurrency", "1"]], env, tmp_path):
        wait_for(lambda: finished(backend, [user]), 60, lambda: (tmp_path / "proc-1.log").read_text()[-2000:])

    history = backend.runs(user)
    assert [(r.attempt, r.status) for r in history] == [(1, "failed"), (2, "succeeded")]
    assert decode_result(history[-1].result) == ({"attempt": 2, "async": 1}, None)


def test_a_worker_sigkilled_during_attempt_1_leads_to_exactly_one_further_attempt(mysql_now_backend: Backend, redis_url: str, tmp_path: Path) -> None:
    backend = mysql_now_backend
    [user] = backend.add_schedules(1, interval=60)
    set_policy(backend, [user], retries=1, retryBackoffSeconds=1)
    env = worker_env(backend, redis_url, tmp_path, "tests.tasks:dies_first_task")
    assert dispatch_once(backend, redis_url).enqueued == 1
    worker = cli("worker", "--concurrency", "1", env=env, start_new_session=True)
    try:
        wait_for(lambda: started_marker(tmp_path, user).exists(), 30, "attempt 1 to start")
    finally:
        os.killpg(worker.pid, signal.SIGKILL)  # during attempt 1 (or, if it never started, at once)
        worker.communicate(timeout=10)

    summary = wait_for(lambda: (s := dispatch_once(backend, redis_url)).claimed and s, 15, "the lost attempt to be taken over", 0.2)
    assert summary.enqueued == 1
    burst = cli("worker", "--concurrency", "1", "--burst", env=env)
    burst.communicate(timeout=60)
    assert burst.returncode == 0
    for _ in range(3):
        assert dispatch_once(backend, redis_url).claimed == 0, "no third attempt: the lost one used the slot's retry"

    attempts = [line.split()[2] for line in (tmp_path / "runs.log").read_text().splitlines()]
    assert attempts == ["1", "2"]
    assert [(r.attempt, r.status) for r in backend.runs(user)] == [(1, "lost"), (2, "failed")]
    row = backend.schedule(user)
    slot = backend.runs(user)[0].slot
    assert (row.last_status, row.failed_slots, row.retrying, row.locked_by) == ("failed", 1, False, None)
    assert row.next_run_at == slot + timedelta(minutes=60), "on to the next slot"
