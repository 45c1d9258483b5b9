"""Shared helpers for the benchmark scripts in scripts/bench/ (not a package: each script puts this
directory and the repository root on sys.path itself).

- servers(): the throwaway MariaDB + Redis from tests/servers.py, or TEST_MYSQL_URL / TEST_REDIS_URL.
  A throwaway MariaDB gets a 1 GiB buffer pool (the test default of 64 MiB cannot hold a 1M-row
  table and its indexes; every figure in docs/performance.md was measured with it).
  `servers(database="postgresql")` (the `--database` option of the scripts that take it) starts a
  throwaway PostgreSQL instead (or TEST_POSTGRES_URL's), with 1 GiB of shared_buffers likewise;
  `srv.database` then seeds, resets, counts and warms through PostgreSQL's own SQL.
- seed_schedules(): N schedules, D of them due (or due as an SQL expression says), written by the
  server itself with INSERT ... SELECT from MariaDB's sequence engine (1M rows in seconds).
- new_database(): a fresh migrated MariaDB database (tests/seeding.py, shared with the tests, does it).
- reset_claimed(): puts claimed rows back exactly as seeded, so a pass can be repeated.
- emit(): the plain figure lines, then one final JSON line (what the smoke test parses).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar
from urllib.parse import urlsplit, urlunsplit

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests import seeding  # noqa: E402
from tests import servers as test_servers  # noqa: E402

if TYPE_CHECKING:
    # Annotations only: the application is imported where it is used, as before.
    from sqlalchemy import Engine

    from core.settings import Settings

PYTHON = sys.executable
BUFFER_POOL = os.environ.get("BENCH_INNODB_BUFFER_POOL", "1G")
# An external Redis (TEST_REDIS_URL) is shared with the test suite: the benchmarks use their own
# database index on it and flush only that one.
EXTERNAL_REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "9"))
QUEUE = "bench-monitor"

# A MariaDB handle of tests/servers.py: one this process started, or TEST_MYSQL_URL's.
MariaDB: TypeAlias = test_servers.MariaDBServer | test_servers.ExternalMariaDB
# The same for PostgreSQL (TEST_POSTGRES_URL); its shared_buffers hold a 1M-row table like the pool above.
Postgres: TypeAlias = test_servers.PostgresServer | test_servers.ExternalPostgres
PG_SHARED_BUFFERS = os.environ.get("BENCH_PG_SHARED_BUFFERS", "1GB")


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="small N, seconds: checks the script works (no timing targets)")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions for medians (default 3, smoke 1)")
    return parser


DATABASES = ("mysql", "postgresql")


def add_database_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database", choices=DATABASES, default="mysql",
                        help="the database server: mysql (MariaDB) or postgresql; default mysql")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def figure(name: str, value: object, unit: str = "") -> None:
    """One plain figure line on stdout."""
    if isinstance(value, float):
        value = f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    print(f"{name}: {value}{(' ' + unit) if unit else ''}", flush=True)


def emit(bench: str, data: dict[str, Any]) -> None:
    print(json.dumps({"bench": bench, **data}, sort_keys=True, default=str), flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, int(round(pct / 100 * len(ordered) + 0.5)) - 1))
    return ordered[index]


# --- servers ---------------------------------------------------------------------------------------


class BenchDatabase(Protocol):
    """What a benchmark does to its database server beyond the application's own code: create and
    drop a database, seed rows with the server's own SQL, undo a pass, count due rows, warm caches."""

    name: str

    def new_database(self, prefix: str) -> str: ...

    def drop_database(self, url: str) -> None: ...

    def seed_schedules(self, url: str, *, total: int, due: int, base: datetime) -> float: ...

    def reset_claimed(self, url: str, *, total: int, due: int, base: datetime) -> float: ...

    def count_due(self, url: str, base: datetime) -> int: ...

    def warm(self, url: str) -> None: ...

    def versions(self) -> dict[str, str]: ...


class MariaDBBench:
    name = "mysql"

    def __init__(self, mariadb: MariaDB) -> None:
        self.server = mariadb

    def new_database(self, prefix: str) -> str:
        return new_database(self.server, prefix)

    def drop_database(self, url: str) -> None:
        self.server.drop_database(_database_of(url))

    def seed_schedules(self, url: str, *, total: int, due: int, base: datetime) -> float:
        return seed_schedules(self.server, url, total=total, due=due, base=base)

    def reset_claimed(self, url: str, *, total: int, due: int, base: datetime) -> float:
        return reset_claimed(self.server, url, total=total, due=due, base=base)

    def count_due(self, url: str, base: datetime) -> int:
        return count_due(self.server, url, base)

    def warm(self, url: str) -> None:
        warm(self.server, url)

    def versions(self) -> dict[str, str]:
        return {
            "mariadb": self.server.execute("SELECT VERSION()")[0][0],
            "innodb_buffer_pool": str(self.server.execute("SELECT @@innodb_buffer_pool_size")[0][0]),
        }


class PostgresBench:
    """The same rows as MariaDBBench (user ids, due spread, future spread), written by
    generate_series."""

    name = "postgresql"

    def __init__(self, postgres: Postgres) -> None:
        self.server = postgres

    def new_database(self, prefix: str) -> str:
        name = f"{prefix}_{os.getpid()}_{int(time.time() * 1000) % 10**8}".lower()
        return seeding.migrated(self.server.create_database(name))

    def drop_database(self, url: str) -> None:
        self.server.drop_database(_database_of(url))

    def _run(self, url: str, statements: list[tuple[str, dict[str, Any]]]) -> float:
        t0 = time.perf_counter()
        with self.server.connect(database=_database_of(url)) as conn:
            for sql, params in statements:
                conn.execute(sql, params or None)  # autocommit: one transaction per statement
        return time.perf_counter() - t0

    def seed_schedules(self, url: str, *, total: int, due: int, base: datetime, interval: int = 5, chunk: int = 200_000) -> float:
        next_run = _pg_next_run(total, due)
        statements = [
            (
                'INSERT INTO "UserMonitorSchedule" ("userId", enabled, "intervalMinutes", "nextRunAt", attempt, "createdAt", "updatedAt") '
                f"SELECT 'user-' || lpad(seq::text, 7, '0'), true, {interval}, {next_run}, 0, %(base)s, %(base)s "
                f"FROM generate_series({start}::bigint, {min(total, start + chunk - 1)}::bigint) AS seq",
                {"base": base},
            )
            for start in range(1, total + 1, chunk)
        ]
        return self._run(url, [*statements, ('VACUUM ANALYZE "UserMonitorSchedule"', {})])

    def reset_claimed(self, url: str, *, total: int, due: int, base: datetime) -> float:
        next_run = _pg_next_run(total, due).replace("seq", 'substr("userId", 6)::bigint')
        return self._run(url, [
            (
                f'UPDATE "UserMonitorSchedule" SET "nextRunAt" = {next_run}, "lockedBy" = NULL, "lockedUntil" = NULL, '
                '"runSlot" = NULL, attempt = 0, "lastRunAt" = NULL, "lastStatus" = NULL, "lastError" = NULL '
                'WHERE "lockedUntil" IS NOT NULL OR "lastRunAt" IS NOT NULL',
                {"base": base},
            ),
            ('DELETE FROM "UserMonitorRun"', {}),
            # the UPDATE left a dead version of every claimed row: vacuum them, as autovacuum would
            # between real passes, so each timed pass starts from the same table
            ('VACUUM ANALYZE "UserMonitorSchedule"', {}),
        ])

    def count_due(self, url: str, base: datetime) -> int:
        return int(self.server.execute(
            'SELECT count(*) FROM "UserMonitorSchedule" WHERE enabled AND NOT paused AND "nextRunAt" <= %(base)s '
            'AND ("lockedUntil" IS NULL OR "lockedUntil" <= %(base)s)',
            {"base": base}, database=_database_of(url),
        )[0][0])

    def warm(self, url: str) -> None:
        database = _database_of(url)
        self.server.execute('SELECT count(*), max("updatedAt") FROM "UserMonitorSchedule"', database=database)
        self.server.execute('SELECT count(*) FROM "UserMonitorSchedule" WHERE enabled AND NOT paused AND "nextRunAt" > \'-infinity\'', database=database)

    def versions(self) -> dict[str, str]:
        return {"postgresql": self.server.version, "shared_buffers": str(self.server.execute("SHOW shared_buffers")[0][0])}


def _pg_next_run(total: int, due: int) -> str:
    """MariaDBBench's nextRunAt rule (`_due_expr`) in PostgreSQL's SQL, over a bigint `seq`."""
    step = max(1, total // due) if due else 0
    is_due = f"(seq %% {step} = 0 AND seq / {step} <= {due})" if due else "false"  # %% : a psycopg placeholder escape
    k = f"(seq / {step})" if due else "0"
    return (
        f"CASE WHEN {is_due} THEN %(base)s - (({DUE_SPREAD_MS} - ({k} * {DUE_SPREAD_MS}) / {max(due, 1)}) * interval '1 millisecond')"
        f" ELSE %(base)s + (({FUTURE_OFFSET_MS} + (seq * {FUTURE_SPREAD_MS}) / {total}) * interval '1 millisecond') END"
    )


def _database_of(url: str) -> str:
    return url.rsplit("/", 1)[1].split("?")[0]


class Servers:
    def __init__(self, database: BenchDatabase, redis_url: str) -> None:
        self.database = database
        self.redis_url = redis_url

    @property
    def mariadb(self) -> MariaDB:
        """The MariaDB server (the scripts that run on MariaDB only)."""
        if not isinstance(self.database, MariaDBBench):
            raise RuntimeError("this benchmark runs on MariaDB only")
        return self.database.server

    def versions(self) -> dict[str, str]:
        import redis as redis_py
        import rq
        import sqlalchemy

        client = redis_py.Redis.from_url(self.redis_url)
        try:
            redis_version = client.info("server")["redis_version"]
        finally:
            client.close()
        return {
            **self.database.versions(),
            "redis": redis_version,
            "rq": rq.__version__ if hasattr(rq, "__version__") else rq.VERSION,
            "redis_py": redis_py.__version__,
            "sqlalchemy": sqlalchemy.__version__,
            "python": sys.version.split()[0],
            "nproc": str(os.cpu_count()),
            "hiredis": _hiredis_version(),
        }


def _hiredis_version() -> str:
    try:
        import hiredis
    except ImportError:
        return "no"
    return getattr(hiredis, "__version__", "yes")


_Server = TypeVar("_Server", test_servers.MariaDBServer, test_servers.PostgresServer)


def _started(started: list[Any], what: str, start: Callable[[], _Server]) -> _Server:
    t0 = time.monotonic()
    server = start()
    started.append(server)
    log(f"started {what} on port {server.port} in {time.monotonic() - t0:.1f}s")
    return server


@contextlib.contextmanager
def servers(database: str = "mysql") -> Iterator[Servers]:
    started: list[test_servers.MariaDBServer | test_servers.PostgresServer | test_servers.RedisServer] = []
    base = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        bench_db: BenchDatabase
        if database == "postgresql":
            postgres = test_servers.postgres_from_env() or _started(
                started, "PostgreSQL", lambda: test_servers.start_postgres(base / "postgres", extra_args=[f"shared_buffers={PG_SHARED_BUFFERS}"])
            )
            bench_db = PostgresBench(postgres)
        else:
            mariadb = test_servers.mariadb_from_env() or _started(
                started, "MariaDB", lambda: test_servers.start_mariadb(base / "mariadb", extra_args=[f"--innodb-buffer-pool-size={BUFFER_POOL}"])
            )
            bench_db = MariaDBBench(mariadb)
        external = test_servers.redis_from_env()
        if external is not None:
            parts = urlsplit(external.url)
            redis_url = urlunsplit(parts._replace(path=f"/{EXTERNAL_REDIS_DB}"))
        else:
            own_redis = test_servers.start_redis(base / "redis")
            started.append(own_redis)
            redis_url = own_redis.url
        yield Servers(bench_db, redis_url)
    finally:
        for server in reversed(started):
            server.stop()


def flush_redis(url: str) -> None:
    from redis import Redis

    conn = Redis.from_url(url)
    conn.flushdb()
    conn.close()


def new_database(mariadb: MariaDB, prefix: str) -> str:
    """A fresh, migrated database; returns its URL."""
    return seeding.new_mariadb_database(mariadb, f"{prefix}_{os.getpid()}_{int(time.time() * 1000) % 10**8}")


def sqlalchemy_engine(url: str) -> Engine:
    from core.db import create_db_engine

    return create_db_engine(url)


def db_now(engine: Engine) -> datetime:
    from core.clock import DatabaseClock

    with engine.connect() as conn:
        return DatabaseClock(engine.dialect.name).now(conn)


# --- seeding ---------------------------------------------------------------------------------------

DUE_SPREAD_MS = 600_000  # due rows: nextRunAt spread over the 10 minutes before `base`
FUTURE_OFFSET_MS = 600_000  # not-due rows: from 10 minutes after `base` ...
FUTURE_SPREAD_MS = 3_600_000  # ... over one hour


def user_id(seq: int) -> str:
    return f"user-{seq:07d}"


def _due_expr(total: int, due: int) -> tuple[str, str]:
    """SQL (over column `seq`) for 'is due' and for nextRunAt, with `@base` the seeding time.

    Due rows are every (total/due)-th user id, so they are spread through the primary key as real
    users would be, and their nextRunAt is spread over the 10 minutes before @base; the others are
    due 10 to 70 minutes after @base."""
    step = max(1, total // due) if due else 0
    if not due:
        is_due = "FALSE"
    else:
        is_due = f"(seq % {step} = 0 AND seq DIV {step} <= {due})"
    k = f"(seq DIV {step})" if due else "0"
    next_run = (
        f"IF({is_due}, @base - INTERVAL ({DUE_SPREAD_MS} - ({k} * {DUE_SPREAD_MS}) DIV {max(due, 1)}) * 1000 MICROSECOND,"
        f" @base + INTERVAL ({FUTURE_OFFSET_MS} + (seq * {FUTURE_SPREAD_MS}) DIV {total}) * 1000 MICROSECOND)"
    )
    return is_due, next_run


@contextlib.contextmanager
def _cursor_at(mariadb: MariaDB, url: str, base: datetime) -> Iterator[tuple[Any, Any]]:
    """(connection, cursor) on `url`'s database, in UTC, with @base = `base`; not autocommitting."""
    conn = mariadb.connect(database=url.rsplit("/", 1)[1].split("?")[0], autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.execute("SET @base = %s", (base,))
            yield conn, cur
    finally:
        conn.close()


def seed_schedules(
    mariadb: MariaDB, url: str, *, total: int, due: int = 0, base: datetime, interval: int = 5, chunk: int = 200_000, next_run: str | None = None
) -> float:
    """Insert `total` schedules `user-0000001`..., `due` of them due at `base` (or each with the
    nextRunAt that the SQL `next_run` gives over `seq` and `@base`); returns the seconds it took."""
    next_run = next_run or _due_expr(total, due)[1]
    t0 = time.perf_counter()
    with _cursor_at(mariadb, url, base) as (conn, cur):
        cur.execute("SET unique_checks = 0")
        for start in range(1, total + 1, chunk):
            end = min(total, start + chunk - 1)
            cur.execute(
                "INSERT INTO UserMonitorSchedule (userId, enabled, intervalMinutes, nextRunAt, attempt, createdAt, updatedAt) "
                f"SELECT CONCAT('user-', LPAD(seq, 7, '0')), 1, {interval}, {next_run}, 0, @base, @base "
                f"FROM seq_{start}_to_{end}"
            )
            conn.commit()
        cur.execute("ANALYZE TABLE UserMonitorSchedule")
        cur.fetchall()
    return time.perf_counter() - t0


def reset_claimed(mariadb: MariaDB, url: str, *, total: int, due: int, base: datetime) -> float:
    """Undo a pass: every leased row gets back its seeded nextRunAt and no lease."""
    _, next_run = _due_expr(total, due)
    next_run = next_run.replace("seq", "CAST(SUBSTRING(userId, 6) AS UNSIGNED)")
    t0 = time.perf_counter()
    with _cursor_at(mariadb, url, base) as (conn, cur):
        cur.execute(
            f"UPDATE UserMonitorSchedule SET nextRunAt = {next_run}, lockedBy = NULL, lockedUntil = NULL, "
            "runSlot = NULL, attempt = 0, lastRunAt = NULL, lastStatus = NULL, lastError = NULL "
            "WHERE lockedUntil IS NOT NULL OR lastRunAt IS NOT NULL"
        )
        cur.execute("DELETE FROM UserMonitorRun")
        conn.commit()
    return time.perf_counter() - t0


def count_due(mariadb: MariaDB, url: str, base: datetime) -> int:
    database = url.rsplit("/", 1)[1].split("?")[0]
    return int(
        mariadb.execute(
            "SELECT COUNT(*) FROM UserMonitorSchedule FORCE INDEX (ix_UserMonitorSchedule_due) "
            "WHERE enabled = 1 AND nextRunAt <= %s AND (lockedUntil IS NULL OR lockedUntil <= %s)",
            (base, base),
            database=database,
        )[0][0]
    )


def warm(mariadb: MariaDB, url: str) -> None:
    """Read the table and its due index once so every timed pass starts from the same warm cache."""
    database = url.rsplit("/", 1)[1].split("?")[0]
    mariadb.execute("SELECT COUNT(*), MAX(updatedAt) FROM UserMonitorSchedule", database=database)
    mariadb.execute("SELECT COUNT(*) FROM UserMonitorSchedule FORCE INDEX (ix_UserMonitorSchedule_due) WHERE enabled = 1", database=database)


def settings_for(url: str, redis_url: str | None, **overrides: object) -> Settings:
    from core.settings import load_settings

    values: dict[str, object] = {
        "DATABASE_URL": url,
        "REDIS_URL": redis_url or "",
        "QUEUE_NAME": QUEUE,
        "MONITOR_TASK": "worker.tasks:noop_task",
        "QUEUE_MAX_DEPTH": 100_000_000,
        "DISPATCH_BATCH_SIZE": 10_000_000,
        "LOG_LEVEL": "WARNING",
    }
    values.update(overrides)
    return load_settings(env_file=None, **values)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    """SIGTERM to the process group (warm: a running job finishes and is recorded), SIGKILL if it
    is still there after `timeout` s."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def finished_job_times(redis_conn: Any, finished_key: str) -> list[tuple[datetime | None, datetime | None]]:
    """(started_at, ended_at) of every job in a finished registry, read in one pipeline."""
    from rq.job import Job

    ids = [m.decode() for m in redis_conn.zrange(finished_key, 0, -1)]
    with redis_conn.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(Job.key_for(job_id), "started_at", "ended_at")
        stamps = pipe.execute()
    return [(parse_rq_time(start), parse_rq_time(end)) for start, end in stamps]


def child_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "DISPATCH_", "MONITOR_TASK", "QUEUE_", "WORKER_"))}
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(values)
    return env


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def parse_rq_time(value: bytes | None) -> datetime | None:
    if not value:
        return None
    text = value.decode()
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def elapsed(t0: float) -> float:
    return time.perf_counter() - t0


__all__ = [name for name in dir() if not name.startswith("_")] + ["timedelta"]
