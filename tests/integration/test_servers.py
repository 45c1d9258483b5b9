"""Tests of the throwaway-server harness itself (tests/servers.py)."""

from __future__ import annotations

import uuid

import pymysql
import pytest
import redis

from tests.servers import (
    ExternalMariaDB,
    ExternalPostgres,
    PostgresServer,
    ExternalRedis,
    MariaDBServer,
    RedisServer,
    mariadb_server,
    redis_server,
    server_or_skip,
    start_redis,
)


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory):
    server = server_or_skip(lambda: mariadb_server(tmp_path_factory.mktemp("mariadb")))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_srv(tmp_path_factory):
    server = server_or_skip(lambda: redis_server(tmp_path_factory.mktemp("redis")))
    yield server
    server.stop()


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("-")[0].split(".")[:2])


# ---------------------------------------------------------------- MariaDB


@pytest.mark.mysql
def test_mariadb_reports_utc_and_version(mariadb):
    assert isinstance(mariadb, (MariaDBServer, ExternalMariaDB))
    assert mariadb.admin_url == f"mysql+pymysql://root@127.0.0.1:{mariadb.port}/" or mariadb.external
    conn = pymysql.connect(host=mariadb.host, port=mariadb.port, user="root", password=mariadb.password)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@time_zone, VERSION(), @@character_set_server")
            time_zone, version, charset = cur.fetchone()
    finally:
        conn.close()
    assert time_zone == "+00:00"
    assert "MariaDB" in version
    assert version == mariadb.version
    assert _version_tuple(version) >= (10, 6)
    if not mariadb.external:
        assert charset == "utf8mb4"


@pytest.mark.mysql
def test_mariadb_listens_on_loopback_only(mariadb):
    if mariadb.external:
        pytest.skip("bind address of an external server is not ours to check")
    assert mariadb.host == "127.0.0.1"
    assert mariadb.execute("SELECT @@bind_address")[0][0] == "127.0.0.1"
    assert mariadb.execute("SELECT @@log_bin")[0][0] == 0
    assert mariadb.is_running()


@pytest.mark.mysql
def test_mariadb_create_and_drop_database(mariadb):
    name = f"harness_{uuid.uuid4().hex[:12]}"
    url = mariadb.create_database(name)
    try:
        assert url == f"{mariadb.admin_url}{name}"
        rows = mariadb.execute(
            "SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA "
            "WHERE SCHEMA_NAME = %s",
            (name,),
        )
        assert rows == [("utf8mb4",)]
        mariadb.execute("CREATE TABLE t (id INT PRIMARY KEY, label VARCHAR(20))", database=name)
        mariadb.execute("INSERT INTO t VALUES (1, 'ünïcode ✓')", database=name)
        assert mariadb.execute("SELECT label FROM t", database=name) == [("ünïcode ✓",)]
    finally:
        mariadb.drop_database(name)
    assert mariadb.execute("SHOW DATABASES LIKE %s", (name,)) == []
    mariadb.drop_database(name)  # dropping a missing database is fine


@pytest.mark.mysql
def test_mariadb_rejects_unsafe_database_name(mariadb):
    with pytest.raises(ValueError):
        mariadb.create_database("x`; DROP DATABASE mysql; --")


@pytest.mark.mysql
def test_mariadb_supports_skip_locked(mariadb):
    name = f"harness_{uuid.uuid4().hex[:12]}"
    mariadb.create_database(name)
    try:
        first = mariadb.connect(database=name, autocommit=False)
        second = mariadb.connect(database=name, autocommit=False)
        try:
            with first.cursor() as cur:
                cur.execute("CREATE TABLE jobs (id INT PRIMARY KEY) ENGINE=InnoDB")
                cur.execute("INSERT INTO jobs VALUES (1), (2), (3)")
                first.commit()
                cur.execute("SELECT 1 FOR UPDATE SKIP LOCKED")
                assert cur.fetchall() == ((1,),)
                cur.execute("SELECT id FROM jobs ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED")
                assert cur.fetchall() == ((1,),)
            with second.cursor() as cur:
                # row 1 is locked by the first transaction: skipped, not waited on
                cur.execute("SELECT id FROM jobs ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED")
                assert cur.fetchall() == ((2,),)
            second.rollback()
            first.rollback()
        finally:
            first.close()
            second.close()
    finally:
        mariadb.drop_database(name)


# ------------------------------------------------------------------ PostgreSQL


@pytest.mark.postgres
def test_postgres_is_utc_on_loopback_and_not_root(postgres):
    """The session-wide server (tests/conftest.py): UTC like MariaDB, TCP on 127.0.0.1 only, and,
    when the suite runs as root, a server process that is not root (PostgreSQL refuses it)."""
    assert isinstance(postgres, (PostgresServer, ExternalPostgres))
    assert int(postgres.version.split(".")[0]) >= 13, postgres.version  # DROP DATABASE ... WITH (FORCE)
    if not isinstance(postgres, PostgresServer):
        pytest.skip("settings of an external server are not ours to check")
    assert postgres.execute("SHOW TimeZone") == [("UTC",)]
    assert postgres.execute("SHOW listen_addresses") == [("127.0.0.1",)]
    assert postgres.execute("SHOW unix_socket_directories") == [("",)]
    with open(f"/proc/{postgres.pid}/status") as status:
        uid = next(int(line.split()[1]) for line in status if line.startswith("Uid:"))
    assert uid != 0


@pytest.mark.postgres
def test_postgres_databases_from_a_template_and_an_external_handle(postgres):
    """create_database copies a template; TEST_POSTGRES_URL's handle drives the same server."""
    name = f"harness_{uuid.uuid4().hex[:12]}"
    postgres.create_database(name)
    try:
        postgres.execute("CREATE TABLE t (label text)", database=name)
        postgres.execute("INSERT INTO t VALUES ('ünïcode ✓')", database=name)
        external = ExternalPostgres(f"postgresql://{postgres.user}@{postgres.host}:{postgres.port}/")
        copy = f"{name}_copy"
        assert external.create_database(copy, template=name) == f"postgresql+psycopg://{postgres.user}@{postgres.host}:{postgres.port}/{copy}"
        assert external.execute("SELECT label FROM t", database=copy) == [("ünïcode ✓",)]
        held = external.connect(database=copy)  # a session left open: the drop ends it
        external.drop_database(copy)
        held.close()
        assert external.execute("SELECT 1 FROM pg_database WHERE datname = %s", (copy,)) == []
        external.stop()  # not ours: does nothing
        assert postgres.is_running()
    finally:
        postgres.drop_database(name)
    with pytest.raises(ValueError):
        postgres.create_database('x"; DROP DATABASE postgres; --')


# ------------------------------------------------------------------ Redis


@pytest.mark.redis
def test_redis_ping_set_get(redis_srv):
    assert isinstance(redis_srv, (RedisServer, ExternalRedis))
    if not redis_srv.external:
        assert redis_srv.url == f"redis://127.0.0.1:{redis_srv.port}/0"
        assert redis_srv.is_running()
    client = redis.Redis.from_url(redis_srv.url)
    try:
        assert client.ping() is True
        key = f"harness:{uuid.uuid4().hex}"
        assert client.set(key, "välue", ex=60)
        assert client.get(key) == "välue".encode()
        client.delete(key)
    finally:
        client.close()
    assert redis_srv.version


@pytest.mark.redis
def test_redis_has_no_persistence(redis_srv):
    if redis_srv.external:
        pytest.skip("persistence settings of an external server are not ours")
    client = redis_srv.client(decode_responses=True)
    try:
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        assert client.config_get("bind")["bind"] == "127.0.0.1"
    finally:
        client.close()


@pytest.mark.redis
def test_redis_kill_makes_it_unreachable(tmp_path_factory):
    # A server of its own: killing the module-scoped one would break other tests.
    server = server_or_skip(lambda: start_redis(tmp_path_factory.mktemp("redis-kill")))
    try:
        assert server.ping()
        server.kill()
        assert not server.is_running()
        client = redis.Redis.from_url(server.url, socket_connect_timeout=1, socket_timeout=1)
        try:
            with pytest.raises(redis.exceptions.ConnectionError):
                client.ping()
        finally:
            client.close()
        assert not server.ping()
    finally:
        server.stop()  # no-op after kill(), must not raise


# ------------------------------------------------------- failure handling


@pytest.mark.mysql
def test_mariadb_start_failure_reports_error_log(tmp_path_factory):
    from tests.servers import ServerStartError, start_mariadb

    with pytest.raises(ServerStartError) as excinfo:
        server_or_skip(
            lambda: start_mariadb(
                tmp_path_factory.mktemp("mariadb-bad"), extra_args=["--no-such-option=1"]
            )
        )
    assert "unknown variable 'no-such-option=1'" in str(excinfo.value)


def _unavailable():
    from tests.servers import ServerUnavailable

    raise ServerUnavailable("frobd not found")


@pytest.mark.parametrize(
    ("allow", "ci", "outcome"),
    [
        ("1", None, pytest.skip.Exception),
        ("1", "false", pytest.skip.Exception),
        ("1", "true", pytest.fail.Exception),
        ("1", "TRUE", pytest.fail.Exception),
        (None, None, pytest.fail.Exception),
        ("0", None, pytest.fail.Exception),
        (None, "true", pytest.fail.Exception),
    ],
)
def test_server_or_skip_rule(monkeypatch, allow, ci, outcome):
    for name, value in (("MONITOR_ALLOW_MISSING_SERVERS", allow), ("CI", ci)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    with pytest.raises(outcome) as excinfo:
        server_or_skip(_unavailable)
    assert "frobd not found" in str(excinfo.value)


def test_server_or_skip_returns_factory_result():
    assert server_or_skip(lambda: 42) == 42
