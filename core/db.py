"""Engine construction: the one place that knows per-database connection rules.

- MySQL/MariaDB: every connection runs with time_zone '+00:00' (so NOW() in an operator's query and
  our DATETIME(3) values agree), READ COMMITTED (SKIP LOCKED then locks only the rows it returns),
  and rowcount means rows matched (SQLAlchemy sets CLIENT.FOUND_ROWS), which fenced updates rely on.
- PostgreSQL (psycopg 3, the `postgres` extra): READ COMMITTED too (the server's default, set so
  that a changed default cannot change the claim), TimeZone 'UTC' per session (so now() in the same
  session and our `timestamp(3) without time zone` values agree), and `application_name`
  "monitor-scheduler:HOST:PID", the prefix of the lease tokens this process writes, so a row's
  `lockedBy` leads to its connections in pg_stat_activity (a URL's own `?application_name=` wins).
  An UPDATE's rowcount is the rows it matched (PostgreSQL writes every matched row), as fencing needs.
- MySQL/MariaDB and PostgreSQL connections are pinged only when they sat idle in the pool for a while (not on
  every checkout: that was one extra round trip per transaction, 2 of the 10 of a worker run), so a
  connection the server dropped overnight is replaced before it is used.
- A connection the server closed (a restart, KILL CONNECTION) is noticed at checkout without a round
  trip: an idle client socket of a request/response protocol has nothing to read, so a readable
  socket means the peer closed it (or sent its farewell error). The pool replaces it. This costs a
  poll() system call per checkout, no command (tests/integration/test_schema.py counts them).
- A transaction whose connection turns out to be gone before COMMIT was sent can be run once more
  on a fresh connection with `run_transaction` (see there why that is safe); callers choose it.
- No listener may replace a driver error with its own: the rollback that follows a disconnect runs
  the listeners on an invalidated connection, and they leave it alone (the original OperationalError
  surfaces, not PendingRollbackError).
- SQLite: WAL and a busy timeout so a dispatcher and a web process can share the file, and every
  transaction starts with BEGIN IMMEDIATE, which takes the single write lock up front: two claims
  are serialized instead of one failing half-way with "database is locked". The same holds for
  SYNC_THREADS runs finishing at once (tests/behaviour/test_sync_threads.py: 20 finish together):
  each waits its turn for the lock (busy timeout) for the few milliseconds a finish takes. The
  pool is sized like a server's (one connection per run thread, monitor_scheduler.wiring). synchronous=NORMAL:
  with WAL, a commit is safe against a crash of the process but not a power cut, which may lose the
  last transactions; leases make that harmless (an unrecorded run is run again after its TTL), and
  it saves an fsync per commit.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPIConnection, DBAPICursor, ExecutionContext
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection, PoolResetState

from core.database_urls import normalise_postgres_url, require_postgres_driver
from core.retry import Backoff

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
DEFAULT_POOL_SIZE = 5  # connections kept; as many again may open at a peak
PING_AFTER_IDLE_SECONDS = 30.0
# run_transaction: one more run, at once (a fresh connection either works or the server is down,
# and then the callers' own retry loops wait: core.executor).
RECONNECT_ONCE = Backoff(first=0.0, retries=1)

T = TypeVar("T")


def create_db_engine(url: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> Engine:
    parsed = make_url(normalise_postgres_url(url))
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url, pool_size)
    if backend == "postgresql":
        require_postgres_driver()
        connect_args: dict[str, object] = {"options": "-c TimeZone=UTC"}
        if "application_name" not in parsed.query:
            connect_args["application_name"] = application_name()
    else:
        connect_args = {"init_command": "SET time_zone = '+00:00'", "charset": "utf8mb4"}
    engine = create_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=3600,
        pool_reset_on_return=None,  # see _reset_only_when_needed
        isolation_level="READ COMMITTED",
        connect_args=connect_args,
    )
    _replace_closed_or_idle(engine)
    _reset_only_when_needed(engine)
    return engine


def application_name() -> str:
    """How this process's PostgreSQL connections show in pg_stat_activity: the host and pid that
    also begin its lease tokens (core.claims.new_lease_token); PostgreSQL keeps 63 bytes."""
    return f"monitor-scheduler:{socket.gethostname()[:24]}:{os.getpid()}"


def run_transaction(engine: Engine, work: Callable[[Connection], T], *, what: str) -> T:
    """`work(conn)` in one transaction, run once more on a fresh connection if the first one turned
    out to be gone before COMMIT was sent.

    Why a second run is safe there: a disconnect before COMMIT means the server discarded the whole
    transaction (it rolls back whatever a lost session had not committed), so nothing of the first
    run is durable and the second starts from the same state. A failure of COMMIT itself is *not*
    retried: whether it committed is unknown. `work` must have no effect outside the transaction
    (each caller says why its own does not); any other error is raised as it is.
    """
    delays = RECONNECT_ONCE.delays()
    while True:
        committing = False
        try:
            with engine.connect() as conn, conn.begin():
                result = work(conn)
                committing = True  # leaving the block sends COMMIT: its failure is not retried
            return result
        except exc.DBAPIError as error:
            delay = next(delays, None) if not committing and is_disconnect(error) else None
            if delay is None:
                raise
            logger.info("database connection lost before %s committed, running it once more: %s", what, error.orig)
            if delay:
                time.sleep(delay)


def is_disconnect(error: BaseException) -> bool:
    """The driver error says the connection is gone (SQLAlchemy invalidated it)."""
    return isinstance(error, exc.DBAPIError) and bool(error.connection_invalidated)


def is_outage(error: BaseException) -> bool:
    """A database error that passes by itself: the server is restarting, unreachable, or a
    connection dropped; lock wait time-outs and deadlocks too (OperationalError is what drivers
    raise for all of these, as opposed to a bad statement or a constraint)."""
    return is_disconnect(error) or isinstance(error, exc.OperationalError)


def _reset_only_when_needed(engine: Engine) -> None:
    """Roll back a connection returned to the pool only if a statement ran since its last
    COMMIT/ROLLBACK.

    SQLAlchemy's default sends ROLLBACK on every return, even right after `engine.begin()`
    committed: 2 of the 8 commands of a worker run. A statement marks the connection dirty, an
    ended transaction marks it clean, and the pool's reset event rolls back dirty ones only.
    """

    @event.listens_for(engine, "before_cursor_execute")
    def _dirty(
        conn: Connection, _cursor: DBAPICursor, _statement: str, _parameters: object,
        _context: ExecutionContext | None, _executemany: bool,
    ) -> None:
        conn.connection.info["in_transaction"] = True

    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def _ended(conn: Connection) -> None:
        if conn.invalidated:
            # The rollback after a disconnect: the DBAPI connection is gone with its state, and
            # touching `conn.connection` here would raise PendingRollbackError over the real error.
            return
        conn.connection.info["in_transaction"] = False

    @event.listens_for(engine, "reset")
    def _reset(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry, reset_state: PoolResetState) -> None:
        if reset_state.terminate_only:
            return
        if record.info.get("in_transaction", True) and not reset_state.transaction_was_reset:
            dbapi_connection.rollback()
            record.info["in_transaction"] = False


def _replace_closed_or_idle(engine: Engine) -> None:
    @event.listens_for(engine, "checkin")
    def _remember_checkin(_dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _check_before_use(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection) -> None:
        checked_in_at = record.info.get("checked_in_at")
        if checked_in_at is None:
            return  # just connected
        if _peer_closed(dbapi_connection):
            # The pool discards it and connects afresh (one more try, then the error surfaces).
            raise exc.DisconnectionError("the server closed this pooled connection")
        if time.monotonic() - checked_in_at < PING_AFTER_IDLE_SECONDS:
            return
        try:
            if engine.dialect.name == "postgresql":
                engine.dialect.do_ping(dbapi_connection)  # SELECT 1 (psycopg has no protocol ping)
            else:
                dbapi_connection.ping(reconnect=False)
        except Exception as error:  # the pool replaces the connection and tries again
            raise exc.DisconnectionError(f"idle connection is gone: {error}") from error


def _peer_closed(dbapi_connection: DBAPIConnection) -> bool:
    """True when the idle connection's socket is readable (end of file, a reset, or the server's
    farewell packet): no request is outstanding, so the server has nothing else to say. Drivers
    expose the socket differently (PyMySQL `_sock`, psycopg and mysqlclient `fileno()`); with none,
    this says False and the idle ping and `run_transaction` remain."""
    fileno = getattr(dbapi_connection, "fileno", None)
    sock = getattr(dbapi_connection, "_sock", None)
    try:
        fd = fileno() if callable(fileno) else sock.fileno() if sock is not None else -1
    except Exception:  # a closed driver connection: let the pool find out on use
        return False
    if fd < 0:
        return False
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


def _sqlite_engine(url: str, pool_size: int) -> Engine:
    # A file database gets a QueuePool (SQLAlchemy 2); :memory: a single-connection pool that
    # takes no size.
    sized = {} if make_url(url).database in (None, "", ":memory:") else {"pool_size": pool_size, "max_overflow": pool_size}
    # LIFO: the connection used last is used next. SQLite keeps a page cache per connection and
    # drops it when another connection has written since, so handing out the pool's connections
    # in turn (FIFO) made every transaction re-read its pages; benchmark 6 (docs/performance.md).
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, pool_use_lifo=True, **sized)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Straight to the driver: through exec_driver_sql, SQLAlchemy's execution machinery cost
        # ~18 µs more per transaction, two a run (a probe: docs/performance.md). Its error is
        # raised as SQLAlchemy's own, like every other statement's ("database is locked" after
        # the busy timeout is an OperationalError to the callers).
        driver_error = conn.dialect.loaded_dbapi.Error  # sqlite3.Error, not imported in every process
        try:
            conn.connection.driver_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]
        except driver_error as error:
            raise exc.DBAPIError.instance("BEGIN IMMEDIATE", None, error, driver_error) from error

    return engine
