"""Shared fixtures.

Real servers only: a throwaway MariaDB, PostgreSQL and Redis are started once per test session on
free loopback ports (tests/servers.py), or taken from TEST_MYSQL_URL / TEST_POSTGRES_URL /
TEST_REDIS_URL. A missing server fails the run, unless MONITOR_ALLOW_MISSING_SERVERS=1 outside CI
(then it skips).

`backend` runs a test once on SQLite, once on MariaDB and once on PostgreSQL: the behaviour suite is
one suite. The web suite runs on SQLite and on one of the two servers per test (the choice is
stable, about half on each); MONITOR_TEST_EVERY_SERVER=1 runs everything on every server.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
from redis import Redis
from sqlalchemy import Engine, TextClause, text

from core import domain, queries
from core.clock import FixedClock
from core.db import create_db_engine
from core.settings import Settings, load_settings
from tests import seeding, servers

REPO_ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 1, 5, 12, 0, 0)
_db_names = itertools.count()


@pytest.fixture(autouse=True)
def _root_logger_as_it_was() -> Iterator[None]:
    """A command run in-process (`cli.main`) sets the root logger up for a process: a handler on
    the sys.stderr of that moment, which is the test's capture stream. Left behind, it outlives the
    stream, and a background thread logging later (an event loop's watch, a lease keeper) printed
    "--- Logging error --- ValueError: I/O operation on closed file" into the run's output."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory):
    server = servers.server_or_skip(lambda: servers.mariadb_from_env() or servers.start_mariadb(tmp_path_factory.mktemp("mariadb")))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory):
    server = servers.server_or_skip(lambda: servers.postgres_from_env() or servers.start_postgres(tmp_path_factory.mktemp("postgres")))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_template(postgres) -> Iterator[str]:
    """A migrated database that each test's PostgreSQL database is copied from (CREATE DATABASE
    ... TEMPLATE: a file copy, ten times faster than running the migrations per test)."""
    name = f"tmpl{os.getpid()}"
    seeding.migrated(postgres.create_database(name))
    yield name
    postgres.drop_database(name)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    server = servers.server_or_skip(lambda: servers.redis_from_env() or servers.start_redis(tmp_path_factory.mktemp("redis")))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server) -> Iterator[str]:
    """A flushed Redis database for one test."""
    conn = Redis.from_url(redis_server.url)
    conn.flushdb()
    yield redis_server.url
    conn.flushdb()
    conn.close()


@pytest.fixture
def redis_conn(redis_url: str) -> Iterator[Redis]:
    conn = Redis.from_url(redis_url)
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def mariadb_template(mariadb) -> Iterator[str]:
    """A migrated database that each test's MariaDB database is copied from (table by table: 0.07 s
    instead of 0.8 s of migrations per test, which pays for the PostgreSQL runs of the suite)."""
    name = f"tmpl{os.getpid()}"
    seeding.new_mariadb_database(mariadb, name)
    yield name
    mariadb.drop_database(name)


@pytest.fixture
def mysql_url(mariadb, mariadb_template: str) -> Iterator[str]:
    """A fresh, migrated MariaDB database for one test."""
    name = f"t{os.getpid()}_{next(_db_names)}"
    yield mariadb.create_database(name, template=mariadb_template)
    mariadb.drop_database(name)


@pytest.fixture
def postgres_url(postgres, postgres_template: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test."""
    name = f"t{os.getpid()}_{next(_db_names)}"
    yield postgres.create_database(name, template=postgres_template)
    postgres.drop_database(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return seeding.migrated(f"sqlite:///{tmp_path / 'monitor.db'}")


@dataclass
class Backend:
    """A migrated database, a fixed clock at T0 and settings pointing at them."""

    name: str
    url: str
    engine: Engine
    clock: FixedClock
    overrides: dict[str, object] = field(default_factory=dict)

    def settings(self, **overrides: object) -> Settings:
        # SPREAD_START_TIMES off: the tests state exact slots ("due at once"); spreading has its own
        # (tests/behaviour/test_calendar_schedules.py, tests/web/test_calendar_api.py).
        values: dict[str, object] = {"DATABASE_URL": self.url, "REDIS_URL": "", "MONITOR_TASK": "worker.tasks:noop_task",
                                     "SPREAD_START_TIMES": False}
        values.update(self.overrides)
        values.update(overrides)
        return load_settings(env_file=None, **values)

    def sql(self, statement: str) -> TextClause:
        """SQL as an operator types it on this database: identifiers in double quotes, as
        PostgreSQL needs for the camelCase names (SQLite takes them too), backticks on MySQL."""
        return text(statement.replace('"', "`") if self.engine.dialect.name in ("mysql", "mariadb") else statement)

    def add_schedules(self, count: int, *, due_at: datetime | None = None, interval: int = 5, prefix: str = "user", spread_ms: int = 0, enabled: bool = True) -> list[str]:
        """Insert `count` schedules due at `due_at` (default: the clock's now), optionally spread."""
        ids = [f"{prefix}-{i:06d}" for i in range(count)]
        with self.engine.begin() as conn:
            seeding.add_schedules(conn, ids, due_at=due_at or self.clock.moment, interval=interval, spread_ms=spread_ms, enabled=enabled)
        return ids

    def schedule(self, user_id: str) -> domain.Schedule:
        with self.engine.connect() as conn:
            found = queries.get_schedule(conn, user_id)
        assert found is not None, f"no schedule for {user_id}"
        return found

    def runs(self, user_id: str | None = None) -> list[domain.RunRecord]:
        with self.engine.connect() as conn:
            return list(reversed(queries.recent_runs(conn, user_id=user_id, limit=100_000)))


_URL_FIXTURES = {"sqlite": "sqlite_url", "mysql": "mysql_url", "postgresql": "postgres_url"}


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql), pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    url = request.getfixturevalue(_URL_FIXTURES[request.param])
    engine = create_db_engine(url)
    yield Backend(request.param, url, engine, FixedClock(T0))
    engine.dispose()


SERVERS = {"mysql": pytest.param("mysql", marks=pytest.mark.mysql), "postgresql": pytest.param("postgresql", marks=pytest.mark.postgres)}


SERVER_FIXTURES = ("server_backend", "own_server")  # fixtures parametrized by SERVERS


def on_one_server(name: str) -> pytest.MarkDecorator:
    """A slow real-process test whose subject is not the database (RQ, signals, threads, Redis
    restarts) runs on one server per run, not on each: the third database costs the suite only
    what is about databases. The tests are dealt out between MariaDB and PostgreSQL by hand,
    alternating within a file, so real worker processes run on both servers in every run. The
    other server's item is deselected at collection (so the servers' parameter order, which groups
    tests per module-scoped server, stays the same); MONITOR_TEST_EVERY_SERVER=1 keeps it (a
    slower, fuller run)."""
    if name not in SERVERS:
        raise ValueError(f"unknown server {name!r}")
    return pytest.mark.one_server(name)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("MONITOR_TEST_EVERY_SERVER") == "1":
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        marker = item.get_closest_marker("one_server")
        params = getattr(getattr(item, "callspec", None), "params", {})
        server = next((params[f] for f in SERVER_FIXTURES if f in params), None)
        if marker is not None and server is not None and server != marker.args[0]:
            drop.append(item)
        elif _web_test_on_the_other_server(item, params.get("backend")):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    if hasattr(config, "workerinput"):  # a pytest-xdist worker (scripts/test)
        items[:] = slow_files_first(items)


def slow_files_first(items: list[pytest.Item]) -> list[pytest.Item]:
    """The files holding a `slow` test first, otherwise in collection order: xdist hands out whole
    files in this order, so the minute-long real-process tests start at once and the many short
    tests fill the gaps, instead of one slow file running alone at the end."""
    slow = {item.path for item in items if item.get_closest_marker("slow") is not None}
    return sorted(items, key=lambda item: item.path not in slow)  # stable: in-file order is kept


def _web_test_on_the_other_server(item: pytest.Item, backend: object) -> bool:
    """The web suite (HTTP, pages, the API) runs on SQLite and on one database server per test:
    what it checks is the web layer over the service layer, whose database behaviour the
    behaviour suite checks on all three. The server is chosen from the test's name (stable from
    run to run, about half the tests on each), so both servers serve the web app every run."""
    if backend not in SERVERS or "tests/web/" not in item.nodeid.replace("\\", "/"):
        return False
    name = getattr(item, "originalname", item.name)
    chosen = sorted(SERVERS)[zlib.crc32(f"{item.nodeid.split('::')[0]}::{name}".encode()) % len(SERVERS)]
    return backend != chosen


@pytest.fixture(params=list(SERVERS.values()))
def server_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A test of what a database server does (plans, locks, clients, time zones), once per server."""
    url = request.getfixturevalue(_URL_FIXTURES[request.param])
    engine = create_db_engine(url)
    yield Backend(request.param, url, engine, FixedClock(T0))
    engine.dispose()


@pytest.fixture
def sqlite_backend(sqlite_url: str) -> Iterator[Backend]:
    engine = create_db_engine(sqlite_url)
    yield Backend("sqlite", sqlite_url, engine, FixedClock(T0))
    engine.dispose()


@pytest.fixture
def mysql_backend(mysql_url: str) -> Iterator[Backend]:
    engine = create_db_engine(mysql_url)
    yield Backend("mysql", mysql_url, engine, FixedClock(T0))
    engine.dispose()


@pytest.fixture
def postgres_backend(postgres_url: str) -> Iterator[Backend]:
    engine = create_db_engine(postgres_url)
    yield Backend("postgresql", postgres_url, engine, FixedClock(T0))
    engine.dispose()


def cli_env(**values: str) -> dict[str, str]:
    """Environment for running the CLI as a subprocess: this interpreter's, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "DISPATCH_", "MONITOR_TASK"))}
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["SPREAD_START_TIMES"] = "false"  # exact slots, as Backend.settings
    env.update(values)
    return env


PYTHON = sys.executable
