"""Concurrency claims, proved by racing real processes against real MariaDB / PostgreSQL and Redis.

The claims (racing dispatchers, the killed and the frozen worker, Redis dying mid-pass) are about
the database's locks, leases and fenced writes: they run on both servers. The last two tests are
about RQ and signals: one server each (tests/conftest.py `on_one_server`).


- several dispatchers over the same due users: each user enqueued exactly once;
- a worker killed with SIGKILL mid-job: the user runs again after the lease expires, never while
  the worker lives (its heartbeat keeps the lease past the TTL);
- a stale worker (frozen with SIGSTOP past its lease) finishing after a takeover: its write is
  refused and the newer run's result stands;
- Redis killed during a pass: leases of what was not enqueued are released, exit non-zero.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue

from core import domain, queries
from tests import servers
from tests.conftest import Backend, cli_env, on_one_server
from tests.integration.helpers import QUEUE, cli, dispatch_once, queued_users, real_now, rq_info, wait_for, worker_env
from tests.tasks import release_marker, started_marker

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.mark.parametrize("dispatchers", [3])
def test_racing_dispatchers_enqueue_each_user_exactly_once(server_now_backend: Backend, redis_url: str, redis_conn: Redis, dispatchers: int) -> None:
    users = server_now_backend.add_schedules(5000)
    env = cli_env(DATABASE_URL=server_now_backend.url, REDIS_URL=redis_url, DISPATCH_CHUNK_SIZE="50")

    procs = [cli("dispatch", "--mode", "queue", "--json", env=env) for _ in range(dispatchers)]
    outputs = [p.communicate(timeout=120) for p in procs]

    assert [p.returncode for p in procs] == [0] * dispatchers, outputs
    summaries = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert sum(s["claimed"] for s in summaries) == 5000
    assert sum(1 for s in summaries if s["claimed"] > 0) >= 2, f"the dispatchers did not overlap: {summaries}"
    enqueued = Counter(queued_users(redis_conn))
    assert len(enqueued) == 5000 and set(enqueued) == set(users)
    assert max(enqueued.values()) == 1, "a user was enqueued twice"


def test_racing_dispatchers_on_sqlite_enqueue_each_user_exactly_once(sqlite_backend: Backend, redis_url: str, redis_conn: Redis) -> None:
    from core.clock import ProcessClock

    with sqlite_backend.engine.connect() as conn:
        sqlite_backend.clock.moment = ProcessClock().now(conn)
    users = sqlite_backend.add_schedules(2000)
    env = cli_env(DATABASE_URL=sqlite_backend.url, REDIS_URL=redis_url, DISPATCH_CHUNK_SIZE="50")

    procs = [cli("dispatch", "--mode", "queue", "--json", env=env) for _ in range(3)]
    outputs = [p.communicate(timeout=120) for p in procs]

    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    enqueued = Counter(queued_users(redis_conn))
    assert set(enqueued) == set(users) and max(enqueued.values()) == 1


def test_a_killed_worker_is_rerun_after_its_lease_expires_never_while_it_lives(server_now_backend: Backend, redis_url: str, tmp_path: Path) -> None:
    [user] = server_now_backend.add_schedules(1, interval=1)
    env = worker_env(server_now_backend, redis_url, tmp_path, "tests.tasks:blocking_task")
    assert dispatch_once(server_now_backend, redis_url).enqueued == 1
    worker = cli("worker", "--concurrency", "1", env=env, start_new_session=True)
    try:
        wait_for(lambda: started_marker(tmp_path, user).exists(), 30, "the job to start")
        # The lease is 3 s; the job has run longer than that, and no pass may claim it while the
        # worker lives (its heartbeat renews the lease).
        live_until = time.monotonic() + 4.5
        while time.monotonic() < live_until:
            assert dispatch_once(server_now_backend, redis_url).claimed == 0, "claimed while the worker lives"
            time.sleep(0.5)
        os.killpg(worker.pid, signal.SIGKILL)
        killed_at = time.monotonic()
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        worker.communicate(timeout=10)

    summary = wait_for(lambda: (s := dispatch_once(server_now_backend, redis_url)).claimed and s, 15, "the user to be claimed again", 0.2)
    assert summary.claimed == 1
    assert time.monotonic() - killed_at > 1.0, "claimed again before the dead worker's lease could have expired"
    [lost] = server_now_backend.runs(user)
    assert lost.status == "lost" and lost.attempt == 1
    row = server_now_backend.schedule(user)
    assert row.attempt == 2 and row.run_slot == lost.slot, "the lost slot is retried"


def test_a_frozen_worker_cannot_overwrite_the_run_that_replaced_it(server_now_backend: Backend, redis_url: str, tmp_path: Path) -> None:
    [user] = server_now_backend.add_schedules(1, interval=5)
    assert dispatch_once(server_now_backend, redis_url).enqueued == 1
    stale = cli("worker", "--concurrency", "1", env=worker_env(server_now_backend, redis_url, tmp_path, "tests.tasks:blocking_task"), start_new_session=True)
    try:
        wait_for(lambda: started_marker(tmp_path, user).exists(), 30, "the job to start")
        os.killpg(stale.pid, signal.SIGSTOP)  # a long GC pause, a frozen VM: the heartbeat stops too
        wait_for(lambda: dispatch_once(server_now_backend, redis_url).claimed, 15, "the takeover", 0.2)
        fresh = cli("worker", "--concurrency", "1", "--burst", env=worker_env(server_now_backend, redis_url, tmp_path, "tests.tasks:recording_task"))
        fresh.communicate(timeout=60)  # reads its output while waiting: a full pipe would block it
        assert fresh.returncode == 0
        newer = server_now_backend.schedule(user)
        assert (newer.last_status, newer.locked_by) == ("succeeded", None)

        release_marker(tmp_path, user).write_text("go")
        os.killpg(stale.pid, signal.SIGCONT)
        wait_for(lambda: any(r.status == "stale" for r in server_now_backend.runs(user)), 30, "the stale result to be refused")
    finally:
        os.killpg(stale.pid, signal.SIGKILL)
        stale.communicate(timeout=10)

    assert server_now_backend.schedule(user) == newer, "the newer run's result stands"
    assert [r.status for r in server_now_backend.runs(user)] == ["lost", "succeeded", "stale"]


def test_redis_dying_mid_pass_releases_what_was_not_enqueued(server_now_backend: Backend, tmp_path: Path) -> None:
    redis_server = servers.start_redis(tmp_path / "redis")
    try:
        server_now_backend.add_schedules(20_000)
        env = cli_env(DATABASE_URL=server_now_backend.url, REDIS_URL=redis_server.url, DISPATCH_CHUNK_SIZE="100")
        dispatcher = cli("dispatch", "--mode", "queue", "--json", env=env)
        probe = Redis.from_url(redis_server.url)
        wait_for(lambda: Queue(QUEUE, connection=probe).count > 0, 60, "the first batch", 0.005)
        redis_server.kill()
        out, err = dispatcher.communicate(timeout=120)
    finally:
        redis_server.stop()

    assert dispatcher.returncode == 1, (out, err)
    summary = json.loads(out.strip().splitlines()[-1])
    assert "Redis" in err.strip().splitlines()[-1] and len(err.strip().splitlines()[-1]) < 400
    assert summary["claimed"] == summary["enqueued"] + summary["released"]
    assert 0 < summary["enqueued"] < 20_000
    now = real_now(server_now_backend)
    with server_now_backend.engine.connect() as conn:
        due = queries.count_due(conn, now=now)
        leased = len(queries.list_schedules(conn, now=now, which=domain.ScheduleFilter.RUNNING, limit=100_000))
    assert leased == summary["enqueued"], "only rows whose job reached Redis keep a lease"
    assert due == 20_000 - summary["enqueued"], "everything else is due again at once"


@on_one_server("mysql")
def test_rq_info_shows_the_queue_and_workers_run_the_jobs(server_now_backend: Backend, redis_url: str, tmp_path: Path) -> None:
    users = server_now_backend.add_schedules(30, interval=7)
    assert dispatch_once(server_now_backend, redis_url).enqueued == 30

    info = rq_info(redis_url, QUEUE)

    assert info.returncode == 0, info.stderr
    assert QUEUE in info.stdout and "30" in info.stdout, info.stdout

    env = worker_env(server_now_backend, redis_url, tmp_path, "tests.tasks:recording_task")
    workers = cli("worker", "--concurrency", "2", "--burst", env=env)
    _, worker_log = workers.communicate(timeout=120)
    assert workers.returncode == 0, worker_log
    ran = [line.split()[0] for line in (tmp_path / "runs.log").read_text().splitlines()]
    assert sorted(ran) == sorted(users)
    assert {server_now_backend.schedule(u).last_status for u in users} == {"succeeded"}
    assert len({line.split()[3] for line in (tmp_path / "runs.log").read_text().splitlines()}) == 2, "two worker processes shared the work"


@on_one_server("postgresql")
def test_sigterm_lets_the_running_job_finish_before_the_worker_exits(server_now_backend: Backend, redis_url: str, tmp_path: Path) -> None:
    [user] = server_now_backend.add_schedules(1)
    assert dispatch_once(server_now_backend, redis_url).enqueued == 1
    env = worker_env(server_now_backend, redis_url, tmp_path, "tests.tasks:sleeping_task", MONITOR_TEST_SLEEP="4")
    worker = cli("worker", "--concurrency", "2", env=env)
    wait_for(lambda: started_marker(tmp_path, user).exists(), 30, "the job to start")
    listing = wait_for(lambda: (r := rq_info(redis_url, "--only-workers")).stdout.count(QUEUE) >= 2 and r, 20, "both workers in rq info")
    assert "2 workers" in listing.stdout, listing.stdout

    worker.send_signal(signal.SIGTERM)
    worker.communicate(timeout=60)

    row = server_now_backend.schedule(user)
    assert (row.last_status, row.locked_by) == ("succeeded", None), "the job finished instead of being killed"
