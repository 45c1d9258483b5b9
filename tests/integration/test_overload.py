"""Demand above capacity degrades fairly, never into lost runs (issue 9, part 1), with real processes.

Given 22 users due every minute, a task that takes 3 s and one worker (capacity 20 runs a minute,
demand 22), and a lease of 3 s (so every job waits far longer than its lease), when a dispatcher
loop and the worker run for about 80 s, then: nothing is recorded lost or skipped, every user runs,
no user runs twice before every other user ran once (round robin: at every moment the run counts
differ by at most one), and the queue never holds more jobs than users, nor two jobs of one user.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from redis import Redis

from tests.conftest import Backend
from tests.integration.helpers import cli, queued_users, worker_env

pytestmark = [pytest.mark.mysql, pytest.mark.redis, pytest.mark.slow]

USERS = 22
TASK_SECONDS = 3
RUN_FOR_SECONDS = 80


def stop(process: subprocess.Popen) -> tuple[str, str]:
    """SIGTERM (warm: a running job finishes and is recorded), SIGKILL if that takes too long."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        return process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.communicate(timeout=10)


def test_overload_keeps_every_user_running_in_turn_with_nothing_lost(mysql_now_backend: Backend, redis_url: str, redis_conn: Redis, tmp_path: Path) -> None:
    users = mysql_now_backend.add_schedules(USERS, interval=1, spread_ms=10)
    env = worker_env(mysql_now_backend, redis_url, tmp_path, "tests.tasks:sleeping_task", MONITOR_TEST_SLEEP=str(TASK_SECONDS))
    dispatcher = cli("dispatch", "--loop", "--every", "2s", env=env, start_new_session=True)
    worker = cli("worker", "--concurrency", "1", env=env, start_new_session=True)
    queue_samples: list[list[str]] = []
    try:
        deadline = time.monotonic() + RUN_FOR_SECONDS
        while time.monotonic() < deadline:
            assert dispatcher.poll() is None and worker.poll() is None, "a process exited by itself"
            queue_samples.append(queued_users(redis_conn))
            time.sleep(1)
    finally:
        outputs = [stop(process) for process in (dispatcher, worker)]

    executions = [line.split()[0] for line in (tmp_path / "runs.log").read_text().splitlines()]
    history = mysql_now_backend.runs()
    statuses = Counter(run.status for run in history)
    assert statuses["lost"] == 0 and statuses["skipped"] == 0 and statuses["stale"] == 0, (statuses, outputs)
    assert set(executions) == set(users), "every user ran"
    counts: Counter[str] = Counter()
    for position, user in enumerate(executions):
        counts[user] += 1
        fewest = min(counts[u] for u in users)
        assert counts[user] - fewest <= 1, f"execution {position}: {user} ran {counts[user]} times while another ran {fewest}"
    assert len(executions) >= RUN_FOR_SECONDS // TASK_SECONDS - 3, "the worker kept busy"
    assert sorted(r.user_id for r in history if r.status == "succeeded") == sorted(executions), "each execution recorded once"
    for sample in queue_samples:
        assert len(sample) == len(set(sample)) <= USERS, f"a user queued twice, or more jobs than users: {sample}"
