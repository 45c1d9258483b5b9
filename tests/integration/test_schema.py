"""The schema on a real MariaDB and PostgreSQL: the claim's plan, the hand-applied DDL, UTC, CHECK."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, OperationalError

from core import claims, domain, queries, writes
from core.clock import DatabaseClock, clock_for_dialect
from core.db import create_db_engine
from core.executor import Runner
from dispatcher.service import Dispatcher
from schema.migrate import MYSQL_DDL_FILE, POSTGRESQL_DDL_FILE, render_mysql_ddl, render_postgresql_ddl
from schema.models import metadata
from tests.conftest import T0, Backend


def explain(backend: Backend, query) -> list[dict]:
    with backend.engine.connect() as conn:
        compiled = query.compile(dialect=conn.dialect)
        return [dict(row._mapping) for row in conn.exec_driver_sql("EXPLAIN " + compiled.string, compiled.params)]


@pytest.mark.mysql
def test_the_due_query_is_an_index_range_scan_without_filesort(mysql_backend: Backend) -> None:
    mysql_backend.add_schedules(3000, due_at=T0 - timedelta(hours=1), spread_ms=1000)
    mysql_backend.add_schedules(500, enabled=False, prefix="off")
    with mysql_backend.engine.begin() as conn:
        conn.execute(text("ANALYZE TABLE UserMonitorSchedule"))

    [plan] = explain(mysql_backend, claims.due_rows_query(T0, 1000))

    assert plan["key"] == "ix_UserMonitorSchedule_due", plan
    assert plan["type"] == "range", plan
    assert "filesort" not in (plan["Extra"] or ""), plan


def _plan_nodes(node: dict) -> list[dict]:
    return [node, *(n for child in node.get("Plans", []) for n in _plan_nodes(child))]


@pytest.mark.postgres
def test_the_due_query_on_postgresql_is_an_index_range_scan_in_order_at_100k_rows(postgres_backend: Backend) -> None:
    """Given 100k due rows (plus disabled, paused and future ones), when PostgreSQL plans the exact
    claim query, then it walks ix_UserMonitorSchedule_due in nextRunAt order under LIMIT and
    SKIP LOCKED: no Sort over the due rows and no sequential scan, so a claim locks only the
    rows it returns."""
    with postgres_backend.engine.begin() as conn:
        conn.execute(text(
            """INSERT INTO "UserMonitorSchedule" ("userId", "nextRunAt", enabled, paused)
               SELECT 'user-' || i, :t0 - (i * interval '1 second'), i % 20 <> 0, i % 50 = 1
               FROM generate_series(1, 120000) AS i"""
        ), {"t0": T0})
        conn.execute(text("""UPDATE "UserMonitorSchedule" SET "nextRunAt" = "nextRunAt" + interval '1 day' WHERE "userId" LIKE 'user-1%'"""))
        conn.execute(text('ANALYZE "UserMonitorSchedule"'))
        due = conn.execute(text(
            'SELECT count(*) FROM "UserMonitorSchedule" WHERE enabled AND NOT paused AND "nextRunAt" <= :t0'), {"t0": T0}
        ).scalar_one()
    assert due >= 70_000

    with postgres_backend.engine.connect() as conn:
        compiled = claims.due_rows_query(T0, 1000).compile(dialect=conn.dialect)
        [[plan]] = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + compiled.string, compiled.params).one()
    nodes = _plan_nodes(plan["Plan"])
    kinds = [n["Node Type"] for n in nodes]
    assert "Sort" not in kinds and "Incremental Sort" not in kinds, kinds
    assert not any("Seq Scan" in kind for kind in kinds), kinds
    [scan] = [n for n in nodes if n["Node Type"] in ("Index Scan", "Index Only Scan")]
    assert scan["Index Name"] == "ix_UserMonitorSchedule_due" and scan["Scan Direction"] == "Forward", scan
    assert '"nextRunAt" <=' in scan["Index Cond"], scan  # a range on the index, not a filter over it
    assert kinds[:2] == ["Limit", "LockRows"], kinds


def lock_wait_timeout(conn, seconds: int) -> None:
    """Give up waiting for a row lock after `seconds` in this transaction (so a wait fails the test)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"SET LOCAL lock_timeout = '{seconds}s'"))
    else:
        conn.execute(text(f"SET SESSION innodb_lock_wait_timeout = {seconds}"))


def test_a_second_dispatcher_is_not_blocked_by_the_first_claim(server_backend: Backend) -> None:
    """SKIP LOCKED over the ordered index: while one claim's transaction is open, another claims
    the next rows at once instead of waiting or getting nothing."""
    server_backend.add_schedules(40, due_at=T0 - timedelta(minutes=1), spread_ms=10)
    other = create_db_engine(server_backend.url)
    until = T0 + timedelta(minutes=15)
    try:
        with server_backend.engine.begin() as first_conn:
            first = claims.claim_due(first_conn, now=T0, limit=10, token="first", lease_until=until, trigger=domain.Trigger.SCHEDULE).claimed
            with other.begin() as second_conn:
                lock_wait_timeout(second_conn, 2)
                second = claims.claim_due(second_conn, now=T0, limit=10, token="second", lease_until=until, trigger=domain.Trigger.SCHEDULE).claimed
    finally:
        other.dispose()
    assert len(first) == len(second) == 10
    assert not {r.user_id for r in first} & {r.user_id for r in second}
    assert [r.user_id for r in second] == [f"user-{i:06d}" for i in range(10, 20)], "the next oldest rows"


def test_the_shipped_mysql_ddl_is_generated_from_the_migrations() -> None:
    assert MYSQL_DDL_FILE.read_text() == render_mysql_ddl(), "run: monitor-scheduler schema-sql --write"


def test_the_shipped_postgresql_ddl_is_generated_from_the_migrations() -> None:
    assert POSTGRESQL_DDL_FILE.read_text() == render_postgresql_ddl(), "run: monitor-scheduler schema-sql --dialect postgresql --write"


def _columns_and_indexes(conn) -> tuple[list, list]:
    columns = conn.execute(
        text(
            "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLLATION_NAME, COLUMN_DEFAULT FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME, ORDINAL_POSITION"
        )
    ).all()
    indexes = conn.execute(
        text(
            "SELECT TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX, COLUMN_NAME FROM information_schema.STATISTICS "
            "WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX"
        )
    ).all()
    return [tuple(c) for c in columns], [tuple(i) for i in indexes]


def mariadb_client(mariadb, database: str, sql: bytes) -> None:
    """Run SQL through the real command-line client, as an operator or a host's script would."""
    client = shutil.which("mariadb") or shutil.which("mysql")
    assert client, "the mariadb client comes with mariadb-server"
    subprocess.run(
        [client, "--protocol=TCP", "-h", "127.0.0.1", "-P", str(mariadb.port), "-u", "root",
         "--default-character-set=utf8mb4", database],
        input=sql, check=True, capture_output=True, timeout=60,
    )


def _pg_columns_and_indexes(conn) -> tuple[list, list]:
    columns = conn.execute(
        text(
            "SELECT table_name, column_name, data_type, datetime_precision, character_maximum_length, is_nullable, "
            "collation_name, column_default FROM information_schema.columns WHERE table_schema = 'public' "
            "ORDER BY table_name, ordinal_position"
        )
    ).all()
    indexes = conn.execute(text("SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2")).all()
    checks = conn.execute(
        text("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE contype = 'c' ORDER BY conname")
    ).all()
    return [tuple(c) for c in columns], [tuple(i) for i in indexes] + [tuple(c) for c in checks]


def psql(postgres, database: str, sql: bytes) -> str:
    """Run SQL through the real psql client, as an operator or a host's script would."""
    client = shutil.which("psql")
    assert client, "psql comes with postgresql-client (a dependency of postgresql)"
    done = subprocess.run(
        [client, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", postgres.host, "-p", str(postgres.port), "-U", postgres.user, "-d", database],
        input=sql, check=True, capture_output=True, timeout=60,
    )
    return done.stdout.decode()


def test_applying_the_ddl_by_hand_gives_the_migrated_schema(server_backend: Backend, request: pytest.FixtureRequest) -> None:
    """schema/mysql.sql through the mariadb client's stdin, schema/postgresql.sql through psql,
    exactly as each file's header tells operators: the same columns, indexes (and on PostgreSQL
    CHECKs) as the migrated database."""
    postgres = server_backend.name == "postgresql"
    server = request.getfixturevalue("postgres" if postgres else "mariadb")
    by_hand_url = server.create_database("by_hand_ddl")
    by_hand = create_db_engine(by_hand_url)
    describe = _pg_columns_and_indexes if postgres else _columns_and_indexes
    try:
        if postgres:
            psql(server, "by_hand_ddl", POSTGRESQL_DDL_FILE.read_bytes())
        else:
            mariadb_client(server, "by_hand_ddl", MYSQL_DDL_FILE.read_bytes())
        with by_hand.connect() as a, server_backend.engine.connect() as b:
            assert describe(a) == describe(b)
    finally:
        by_hand.dispose()
        server.drop_database("by_hand_ddl")


def test_models_and_migrations_agree(backend: Backend) -> None:
    with backend.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_the_interval_check_constraint_is_enforced_by_the_database(server_backend: Backend) -> None:
    with pytest.raises(DBAPIError, match="ck_UserMonitorSchedule_interval"):
        with server_backend.engine.begin() as conn:
            writes.insert_schedule(conn, user_id="x", enabled=True, interval_minutes=0, next_run_at=T0, now=T0)


def test_user_ids_are_exact_and_case_sensitive(backend: Backend) -> None:
    with backend.engine.begin() as conn:
        for uid in ("Alice", "alice", "ålice ", "ålice", "日本"):
            writes.insert_schedule(conn, user_id=uid, enabled=True, interval_minutes=5, next_run_at=T0, now=T0)
    assert backend.schedule("Alice").user_id == "Alice"
    assert backend.schedule("ålice ").user_id == "ålice "
    assert backend.schedule("ålice").user_id == "ålice"
    with backend.engine.connect() as conn:
        listed = [r.user_id for r in queries.list_schedules(conn, now=T0)]
    assert listed == sorted(listed, key=lambda uid: uid.encode()), "ordered by code point, on every database"


@pytest.mark.mysql
def test_connections_are_utc_so_the_operators_unlock_sql_means_what_it_says(mysql_backend: Backend) -> None:
    with mysql_backend.engine.begin() as conn:
        assert conn.execute(text("SELECT @@session.time_zone")).scalar_one() == "+00:00"
        now = DatabaseClock().now(conn)
        assert abs((conn.execute(text("SELECT NOW(3)")).scalar_one() - now).total_seconds()) < 1
    mysql_backend.add_schedules(2, due_at=now - timedelta(minutes=1))
    with mysql_backend.engine.begin() as conn:
        claims.claim_due(conn, now=now, limit=1, token="dead", lease_until=now - timedelta(seconds=5), trigger=domain.Trigger.SCHEDULE).claimed
        claims.claim_due(conn, now=now, limit=1, token="alive", lease_until=now + timedelta(minutes=10), trigger=domain.Trigger.SCHEDULE).claimed
        released = conn.execute(
            text("UPDATE UserMonitorSchedule SET lockedUntil = NULL, lockedBy = NULL WHERE lockedUntil < NOW();")
        ).rowcount
    assert released == 1
    assert mysql_backend.schedule("user-000000").locked_by is None
    assert mysql_backend.schedule("user-000001").locked_by == "alive"
    with mysql_backend.engine.connect() as conn:
        assert [r.user_id for r in queries.list_schedules(conn, now=now, which=domain.ScheduleFilter.DUE)] == ["user-000000"]


def test_an_update_counts_the_rows_it_matched_even_when_nothing_changed(server_backend: Backend) -> None:
    """Fenced writes decide by the row count: a renewal that writes the values the row already
    has still holds the lease (1 row), on every server."""
    [user] = server_backend.add_schedules(1)
    with server_backend.engine.begin() as conn:
        unchanged = conn.execute(server_backend.sql('UPDATE "UserMonitorSchedule" SET "intervalMinutes" = 5 WHERE "userId" = :u'), {"u": user})
        missed = conn.execute(server_backend.sql('UPDATE "UserMonitorSchedule" SET "intervalMinutes" = 5 WHERE "userId" = :u AND "lockedBy" = :t'),
                              {"u": user, "t": "someone-else"})
    assert (unchanged.rowcount, missed.rowcount) == (1, 0)


def test_times_keep_millisecond_precision(server_backend: Backend) -> None:
    moment = T0.replace(microsecond=123000)
    with server_backend.engine.begin() as conn:
        writes.insert_schedule(conn, user_id="ms", enabled=True, interval_minutes=5, next_run_at=moment, now=moment)
        now = DatabaseClock().now(conn)
        assert now.microsecond % 1000 == 0, "the database clock reads whole milliseconds"
    assert server_backend.schedule("ms").next_run_at == moment


CONNECTION_ID = {"mysql": "SELECT CONNECTION_ID()", "postgresql": "SELECT pg_backend_pid()"}
# pg_terminate_backend with a timeout returns once the backend has exited, like KILL.
KILL_CONNECTION = {"mysql": "KILL {}", "postgresql": "SELECT pg_terminate_backend({}, 10000)"}


@pytest.mark.parametrize("idle_ping", [True, False], ids=["idle", "fresh"])
def test_a_connection_the_server_dropped_while_idle_is_replaced(server_backend: Backend, monkeypatch: pytest.MonkeyPatch, idle_ping: bool) -> None:
    """Whether the pooled connection counts as idle (pinged) or fresh (only its socket looked at),
    one the server killed is replaced at checkout, not handed out to fail."""
    import core.db as db

    dialect = "postgresql" if server_backend.name == "postgresql" else "mysql"
    with server_backend.engine.connect() as conn:  # the pooled connection
        victim = conn.execute(text(CONNECTION_ID[dialect])).scalar_one()
    killer = create_db_engine(server_backend.url)
    try:
        with killer.connect() as conn:
            conn.execute(text(KILL_CONNECTION[dialect].format(int(victim))))  # what a server restart or wait_timeout does
    finally:
        killer.dispose()
    if idle_ping:
        monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)  # the pooled connection counts as idle
    with server_backend.engine.connect() as conn:
        assert conn.execute(text(CONNECTION_ID[dialect])).scalar_one() != victim, "replaced, not reused"


@pytest.mark.mysql
def test_a_worker_run_costs_six_database_commands(mysql_backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Round trips are the run path's cost: renew+commit, lock+finish+history+commit. No pings,
    no clock reads, no pool ROLLBACK after a COMMIT."""
    import pymysql.connections

    from core.executor import Runner

    clock = DatabaseClock()
    with mysql_backend.engine.begin() as conn:
        now = clock.now(conn)
    mysql_backend.clock.moment = now
    mysql_backend.add_schedules(2)
    with mysql_backend.engine.begin() as conn:
        runs = claims.claim_due(conn, now=now, limit=2, token="t", lease_until=now + timedelta(minutes=15), trigger=domain.Trigger.SCHEDULE).claimed
    runner = Runner(mysql_backend.engine, mysql_backend.settings(), clock, lambda u, c: None)
    runner.execute(runs[0])  # warm the pool
    commands: list[str] = []
    original = pymysql.connections.Connection._execute_command

    def spy(self, command, sql):
        commands.append((sql if isinstance(sql, str) else sql.decode(errors="replace")).split(" ", 1)[0])
        return original(self, command, sql)

    monkeypatch.setattr(pymysql.connections.Connection, "_execute_command", spy)
    assert runner.execute(runs[1]).status is domain.RunStatus.SUCCEEDED
    assert commands == ["UPDATE", "COMMIT", "SELECT", "UPDATE", "INSERT", "COMMIT"]


def test_a_connection_returned_mid_transaction_is_still_rolled_back(server_backend: Backend) -> None:
    """Skipping the pool's ROLLBACK after a COMMIT must not skip it when work is uncommitted."""
    server_backend.add_schedules(1)
    conn = server_backend.engine.connect()
    conn.execute(server_backend.sql('UPDATE "UserMonitorSchedule" SET "intervalMinutes" = 99'))  # row now locked
    conn.connection.close()  # back to the pool directly, bypassing Connection.close()'s own rollback
    other = create_db_engine(server_backend.url)
    try:
        with other.begin() as check:
            lock_wait_timeout(check, 2)
            assert check.execute(server_backend.sql('SELECT "intervalMinutes" FROM "UserMonitorSchedule" FOR UPDATE')).scalar_one() == 5
    finally:
        other.dispose()


def _dispatch_for_real(backend: Backend) -> tuple[int, list[str]]:
    """One sync pass on the production clock (the rows' defaults are the real "now")."""
    ran: list[str] = []
    clock = clock_for_dialect(backend.engine.dialect.name)
    cfg = backend.settings()
    runner = Runner(backend.engine, cfg, clock, lambda user_id, _context: ran.append(user_id))
    summary = Dispatcher.inline(cfg, backend.engine, clock, runner).tick()
    return summary.claimed, ran


@pytest.mark.mysql
def test_a_host_inserts_a_schedule_with_plain_sql_and_the_next_pass_runs_it(mariadb, mysql_backend: Backend) -> None:
    """Given only userId and intervalMinutes, through the mariadb client (no UTC session set),
    when the dispatcher passes, then the row is claimed and run: every other column has a default."""
    database = mysql_backend.engine.url.database
    assert database is not None
    mariadb_client(mariadb, database, b"INSERT INTO UserMonitorSchedule (userId, intervalMinutes) VALUES ('host-made', 10);\n"
                                      b"INSERT INTO UserMonitorSchedule (userId) VALUES ('bare');\n")
    with mysql_backend.engine.connect() as conn:
        now = DatabaseClock().now(conn)
    row = mysql_backend.schedule("host-made")
    assert (row.enabled, row.interval_minutes, row.attempt, row.locked_by) == (True, 10, 0, None)
    assert abs((row.next_run_at - now).total_seconds()) < 60, "due now, in UTC"
    assert row.created_at == row.updated_at == row.next_run_at
    assert mysql_backend.schedule("bare").interval_minutes == 5

    claimed, ran = _dispatch_for_real(mysql_backend)
    assert (claimed, sorted(ran)) == (2, ["bare", "host-made"])
    assert mysql_backend.schedule("host-made").last_status == "succeeded"


def test_a_plain_sql_insert_on_sqlite_reads_back_as_datetimes_and_runs(sqlite_backend: Backend) -> None:
    import sqlite3
    from datetime import datetime

    path = sqlite_backend.engine.url.database
    assert path is not None
    with sqlite3.connect(path) as raw:  # the sqlite3 shell's view: no SQLAlchemy involved
        raw.execute("INSERT INTO UserMonitorSchedule (userId, intervalMinutes) VALUES ('host-made', 10)")
    row = sqlite_backend.schedule("host-made")
    assert isinstance(row.next_run_at, datetime) and row.next_run_at.microsecond % 1000 == 0
    assert abs((row.next_run_at - datetime.utcnow()).total_seconds()) < 60  # noqa: DTZ003 - the column is naive UTC
    assert (row.enabled, row.interval_minutes, row.attempt) == (True, 10, 0)

    assert _dispatch_for_real(sqlite_backend) == (1, ["host-made"])
    assert sqlite_backend.schedule("host-made").last_status == "succeeded"


HEAD = "0008"  # the newest migration (0006: WebSignOut; 0007: calendar schedules; 0008: retries, pause, run result)


@pytest.mark.parametrize("server", ["sqlite", pytest.param("mysql", marks=pytest.mark.mysql), pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_migration_0003_keeps_existing_rows_and_downgrades(server: str, request: pytest.FixtureRequest, tmp_path) -> None:
    from schema.migrate import current_revision, downgrade, upgrade

    if server == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    elif server == "postgresql":
        postgres = request.getfixturevalue("postgres")
        url = postgres.create_database("upgrade_0003")
        request.addfinalizer(lambda: postgres.drop_database("upgrade_0003"))
    else:
        mariadb = request.getfixturevalue("mariadb")
        url = mariadb.create_database("upgrade_0003")
        request.addfinalizer(lambda: mariadb.drop_database("upgrade_0003"))
    engine = create_db_engine(url)
    try:
        upgrade(engine, "0002")
        with engine.begin() as conn:
            writes.insert_schedule(conn, user_id="alice", enabled=True, interval_minutes=7, next_run_at=T0, now=T0)
        upgrade(engine)  # through 0003 and every later migration
        assert current_revision(engine) == HEAD
        with engine.connect() as conn:
            alice = queries.get_schedule(conn, "alice")
        assert alice is not None and alice.interval_minutes == 7
        downgrade(engine, "0002")
        upgrade(engine)
        assert current_revision(engine) == HEAD
    finally:
        engine.dispose()


def test_a_sqlite_transaction_that_cannot_get_the_write_lock_fails_with_sqlalchemys_error(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE goes straight to the driver (core.db); a lock held past the busy timeout
    still surfaces as SQLAlchemy's OperationalError, like any statement's, and the pool's
    connection works again once the lock is gone."""
    path = f"{tmp_path}/locked.db"
    engine = create_db_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _short_busy_timeout(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=50")

    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(OperationalError, match="database is locked"):
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    holder.execute("ROLLBACK")
    holder.close()
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM t").scalar_one() == 1
    engine.dispose()


def test_a_sqlite_pool_hands_out_the_connection_returned_last(tmp_path: Path) -> None:
    """One thread's transactions in a row reuse one SQLite connection (LIFO, core.db), whose page
    cache stays valid while no other connection writes; handing the pool's connections out in
    turn made each transaction re-read its pages (benchmark 6)."""
    engine = create_db_engine(f"sqlite:///{tmp_path}/lifo.db", pool_size=4)
    first, second = engine.connect(), engine.connect()
    first_driver, second_driver = first.connection.driver_connection, second.connection.driver_connection
    first.close()
    second.close()  # returned last
    for _ in range(3):
        with engine.begin() as conn:
            assert conn.connection.driver_connection is second_driver
    assert first_driver is not second_driver
    engine.dispose()
