"""Engine construction: the one place that knows per-database connection rules.

- MySQL/MariaDB: every connection runs with time_zone '+00:00' (so NOW() in an operator's query and
  our DATETIME(3) values agree), READ COMMITTED (SKIP LOCKED then locks only the rows it returns),
  and rowcount means rows matched (SQLAlchemy sets CLIENT.FOUND_ROWS), which fenced updates rely on.
- SQLite: WAL and a busy timeout so a dispatcher and a web process can share the file, and every
  transaction starts with BEGIN IMMEDIATE, which takes the single write lock up front: two claims
  are serialized instead of one failing half-way with "database is locked".
"""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

SQLITE_BUSY_TIMEOUT_MS = 30_000


def create_db_engine(url: str, *, pool_size: int = 5) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=3600,
        isolation_level="READ COMMITTED",
        connect_args={"init_command": "SET time_zone = '+00:00'", "charset": "utf8mb4"},
    )


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        # Let SQLAlchemy, not the driver, decide when transactions begin (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
