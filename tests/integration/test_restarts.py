"""Riding out database and Redis restarts (issue 10), on real servers restarted in place.

- a pooled connection the server killed: the next transaction succeeds, and an error on a killed
  connection surfaces as itself, never as PendingRollbackError;
- the database (MariaDB, PostgreSQL) restarted (clean shutdown, SIGKILL) while a worker records a
  result: recorded `succeeded` once, no second run;
- the database restarted between passes: the next pass of each dispatcher succeeds;
- Redis killed and restarted with its append-only file while workers are idle and while they run:
  no worker exits, every run is recorded, `rq info` lists the workers again.

These tests restart their own servers (module-scoped), never the session's shared ones. The
database tests run on MariaDB and on PostgreSQL; the Redis restarts are about Redis and RQ, so each
runs on one database server (tests/conftest.py `on_one_server`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from datetime import timedelta

from sqlalchemy import Connection, exc, text, update

from core import domain
from core.clock import FixedClock
from core.db import create_db_engine
from core.settings import load_settings
from core.domain import Mode
from monitor_scheduler.wiring import App
from schema.migrate import upgrade
from tests import restart, servers
from schema.models import schedules
from tests.conftest import SERVERS, T0, Backend, cli_env, on_one_server
from tests.integration.helpers import cli, real_now, rq_info, wait_for
from tests.tasks import release_marker, started_marker

pytestmark = [pytest.mark.redis, pytest.mark.slow]

LEASE_MS = "20000"  # longer than a restart, as in production (a lease outlives a short outage)


DatabaseServer = servers.MariaDBServer | servers.PostgresServer


@pytest.fixture(scope="module", params=list(SERVERS.values()))
def own_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseServer]:
    """A database server of this module's own, to restart: MariaDB or PostgreSQL."""
    start = servers.start_postgres if request.param == "postgresql" else servers.start_mariadb
    server: DatabaseServer = servers.server_or_skip(lambda: start(tmp_path_factory.mktemp(f"restart-{request.param}")))
    yield server
    server.stop()


def connection_id(conn: Connection) -> int:
    sql = "SELECT pg_backend_pid()" if conn.dialect.name == "postgresql" else "SELECT CONNECTION_ID()"
    return int(conn.execute(text(sql)).scalar_one())


def kill_connection(server: DatabaseServer, victim: int) -> None:
    """End one client connection from the server side, as a restart does to every one."""
    if isinstance(server, servers.PostgresServer):
        # With a timeout it returns once the backend has exited (without, it only signals it, and
        # the client may use the connection before the server's farewell reaches it).
        server.execute(f"SELECT pg_terminate_backend({int(victim)}, 10000)")
    else:
        server.execute(f"KILL CONNECTION {int(victim)}")


@pytest.fixture(scope="module")
def aof_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.RedisServer]:
    server = servers.server_or_skip(lambda: restart.start_redis_with_aof(tmp_path_factory.mktemp("restart-redis")))
    yield server
    server.stop()


@pytest.fixture
def db(own_server: DatabaseServer, request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A fresh database on the restartable server, due by its real clock."""
    if not own_server.is_running():
        restart.start_again(own_server)
    name = f"r{os.getpid()}_{abs(hash(request.node.name)) % 10**8}"
    url = own_server.create_database(name)
    engine = create_db_engine(url)
    upgrade(engine)
    backend = Backend(engine.dialect.name, url, engine, FixedClock(T0))
    backend.clock.moment = real_now(backend)
    yield backend
    engine.dispose()
    own_server.drop_database(name)


@pytest.fixture
def aof_redis_url(aof_redis: servers.RedisServer) -> Iterator[str]:
    if not aof_redis.is_running():
        restart.start_again(aof_redis)
    aof_redis.flushall()
    yield aof_redis.url
    if aof_redis.is_running():
        aof_redis.flushall()


def _env(backend: Backend, redis_url: str, test_dir: Path, task: str, **extra: str) -> dict[str, str]:
    return cli_env(
        DATABASE_URL=backend.url, REDIS_URL=redis_url, MONITOR_TASK=task, MONITOR_TEST_DIR=str(test_dir),
        DISPATCH_LOCK_TTL=LEASE_MS, JOB_TIMEOUT="120", LOG_LEVEL="INFO", **extra,
    )


def _dispatch(backend: Backend, redis_url: str) -> domain.DispatchSummary:
    settings = load_settings(env_file=None, DATABASE_URL=backend.url, REDIS_URL=redis_url, DISPATCH_LOCK_TTL=int(LEASE_MS), JOB_TIMEOUT=120)
    app = App.from_settings(settings)
    try:
        return app.dispatcher(Mode.QUEUE).tick()
    finally:
        app.close()


def _executions(test_dir: Path) -> list[str]:
    log = test_dir / "runs.log"
    return log.read_text().splitlines() if log.exists() else []


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    return err or ""


# --- connections ----------------------------------------------------------------------------------


def test_a_killed_pooled_connection_does_not_fail_the_next_transaction(db: Backend, own_server: DatabaseServer) -> None:
    engine = create_db_engine(db.url)
    try:
        with engine.begin() as conn:  # the pooled connection
            victim = connection_id(conn)
        kill_connection(own_server, victim)  # what a server restart does to it

        with engine.begin() as conn:  # neither PendingRollbackError nor OperationalError
            assert connection_id(conn) != victim
    finally:
        engine.dispose()


def test_a_connection_killed_mid_transaction_fails_with_its_own_error_not_pending_rollback(db: Backend, own_server: DatabaseServer) -> None:
    engine = create_db_engine(db.url)
    try:
        with pytest.raises(exc.OperationalError) as raised:
            with engine.begin() as conn:
                kill_connection(own_server, connection_id(conn))
                conn.execute(text("SELECT 1"))
        assert not isinstance(raised.value, exc.PendingRollbackError)
        assert raised.value.connection_invalidated
        with engine.begin() as conn:  # and the engine goes on
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()


# --- database restarts ----------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_result_written_across_a_database_restart_is_recorded_once(
    db: Backend, aof_redis_url: str, own_server: DatabaseServer, tmp_path: Path, sig: int,
) -> None:
    [user] = db.add_schedules(1, interval=1)
    env = _env(db, aof_redis_url, tmp_path, "tests.tasks:blocking_task")
    assert _dispatch(db, aof_redis_url).enqueued == 1
    worker = cli("worker", "--concurrency", "1", env=env, start_new_session=True)
    try:
        wait_for(lambda: started_marker(tmp_path, user).exists(), 120, "the job to start")
        db.engine.dispose()
        restart.stop_server(own_server, sig)  # SIGTERM: each server's clean shutdown (tests/restart.py)
        release_marker(tmp_path, user).write_text("")  # the task ends; its result meets no database
        time.sleep(2.0)
        restart.start_again(own_server)

        wait_for(lambda: db.runs(user), 120, lambda: f"the result to be recorded; worker log:\n{_stop(worker)}")
        time.sleep(1.0)
        for _ in range(3):  # passes after the outage claim nothing: the slot moved on
            assert _dispatch(db, aof_redis_url).claimed == 0
        assert worker.poll() is None, "the worker exited"
    finally:
        err = _stop(worker)
    runs = db.runs(user)
    assert [r.status for r in runs] == [domain.RunStatus.SUCCEEDED], (runs, err[-4000:])
    assert len(_executions(tmp_path)) == 1, "the slot ran twice"
    schedule = db.schedule(user)
    assert schedule.locked_by is None and schedule.last_status == domain.RunStatus.SUCCEEDED


def test_the_next_pass_of_each_dispatcher_succeeds_after_a_database_restart(
    db: Backend, aof_redis_url: str, own_server: DatabaseServer,
) -> None:
    db.add_schedules(30, interval=1)
    settings = load_settings(env_file=None, DATABASE_URL=db.url, REDIS_URL=aof_redis_url, DISPATCH_LOCK_TTL=int(LEASE_MS), DISPATCH_CHUNK_SIZE=5)
    apps = [App.from_settings(settings) for _ in range(3)]
    try:
        dispatchers = [app.dispatcher(Mode.QUEUE) for app in apps]
        for dispatcher in dispatchers:  # every pool holds live connections
            dispatcher.tick()
        db.engine.dispose()
        restart.restart(own_server, signal.SIGKILL)
        restart.restart(own_server, signal.SIGTERM)

        summaries = [dispatcher.tick() for dispatcher in dispatchers]  # raises if a pass fails
        assert all(s.error is None for s in summaries), summaries
    finally:
        for app in apps:
            app.close()


# --- Redis restarts -------------------------------------------------------------------------------


def _rq_workers(redis_url: str) -> int:
    return Redis.from_url(redis_url).scard("rq:workers")


def _rq_worker_names(redis_url: str) -> str:
    conn = Redis.from_url(redis_url)
    return f"rq:workers = {sorted(conn.smembers('rq:workers'))}, keys = {sorted(conn.keys('rq:worker:*'))}"


@on_one_server("mysql")
@pytest.mark.parametrize("concurrency", ["1", "2"], ids=["single", "pool"])
def test_workers_ride_out_a_redis_restart_while_idle(
    db: Backend, aof_redis_url: str, aof_redis: servers.RedisServer, tmp_path: Path, concurrency: str,
) -> None:
    users = db.add_schedules(4, interval=1)
    env = _env(db, aof_redis_url, tmp_path, "tests.tasks:recording_task")
    worker = cli("worker", "--concurrency", concurrency, env=env, start_new_session=True)
    try:
        wait_for(lambda: _rq_workers(aof_redis_url) == int(concurrency), 120, "the workers to register")
        restart.restart(aof_redis, signal.SIGKILL, down_for=2.0)
        time.sleep(1.0)
        assert worker.poll() is None, f"the worker exited:\n{_stop(worker)[-4000:]}"

        assert _dispatch(db, aof_redis_url).enqueued == 4
        wait_for(lambda: len(db.runs()) == 4, 120, lambda: f"the runs; worker log:\n{_stop(worker)[-4000:]}")
        wait_for(lambda: _rq_workers(aof_redis_url) == int(concurrency), 120, lambda: f"the workers in rq:workers again ({_rq_worker_names(aof_redis_url)}); worker log:\n{_stop(worker)[-30000:]}")
        assert worker.poll() is None, "the worker exited"
    finally:
        err = _stop(worker)
    assert sorted(r.user_id for r in db.runs()) == users
    assert {r.status for r in db.runs()} == {domain.RunStatus.SUCCEEDED}, err[-4000:]
    assert "quitting" not in err, err[-4000:]


@on_one_server("postgresql")
@pytest.mark.parametrize("concurrency", ["1", "2"], ids=["single", "pool"])
def test_workers_ride_out_a_redis_restart_while_running(
    db: Backend, aof_redis_url: str, aof_redis: servers.RedisServer, tmp_path: Path, concurrency: str,
) -> None:
    first, second = db.add_schedules(2, interval=1)
    env = _env(db, aof_redis_url, tmp_path, "tests.tasks:blocking_task")
    with db.engine.begin() as conn:  # only the first is due now
        conn.execute(update(schedules).where(schedules.c.userId == second).values(nextRunAt=db.clock.moment + timedelta(hours=1)))
    assert _dispatch(db, aof_redis_url).enqueued == 1
    worker = cli("worker", "--concurrency", concurrency, env=env, start_new_session=True)
    try:
        wait_for(lambda: started_marker(tmp_path, first).exists(), 120, "the job to start")
        restart.stop_server(aof_redis, signal.SIGKILL)
        release_marker(tmp_path, first).write_text("")  # finishes while Redis is down
        wait_for(lambda: db.runs(first), 120, "the run to be recorded while Redis is down")
        time.sleep(2.0)
        restart.start_again(aof_redis)

        with db.engine.begin() as conn:
            conn.execute(update(schedules).where(schedules.c.userId == second).values(nextRunAt=real_now(db)))
        release_marker(tmp_path, second).write_text("")
        wait_for(lambda: _dispatch(db, aof_redis_url).enqueued, 120, "the second user enqueued")
        wait_for(lambda: db.runs(second), 120, lambda: f"the second run; worker log:\n{_stop(worker)[-4000:]}")
        wait_for(lambda: _rq_workers(aof_redis_url) == int(concurrency), 120, lambda: f"the workers in rq:workers again ({_rq_worker_names(aof_redis_url)}); worker log:\n{_stop(worker)[-30000:]}")
        assert worker.poll() is None, "the worker exited"
        info = rq_info(aof_redis_url, "--only-workers")
        assert f"{concurrency} worker" in info.stdout, info.stdout
    finally:
        err = _stop(worker)
    assert [r.status for r in db.runs()] == [domain.RunStatus.SUCCEEDED] * 2, err[-4000:]
    assert len(_executions(tmp_path)) == 2
    assert "quitting" not in err, err[-4000:]


def test_a_transaction_whose_connection_dies_before_commit_runs_once_more_on_a_fresh_one(db: Backend, own_server: DatabaseServer) -> None:
    from core.db import run_transaction

    [user] = db.add_schedules(1)
    connections: list[int] = []

    def work(conn) -> int:
        connections.append(connection_id(conn))
        if len(connections) == 1:
            kill_connection(own_server, connections[0])  # dies after checkout
        return conn.execute(db.sql('UPDATE "UserMonitorSchedule" SET attempt = attempt + 1 WHERE "userId" = :u'), {"u": user}).rowcount

    assert run_transaction(db.engine, work, what="the test's update") == 1
    assert len(connections) == 2 and connections[0] != connections[1]
    assert db.schedule(user).attempt == 1, "applied once: the first run was discarded with its connection"
