"""Throwaway real servers (MariaDB, PostgreSQL, Redis) for the test suite and benchmarks.

No mocks: every server is a real ``mariadbd`` / ``redis-server`` process on a
free loopback port, with its data, socket, pid and log files under a directory
the caller chooses (normally from ``tmp_path_factory``).

Usage from tests::

    @pytest.fixture(scope="module")
    def mariadb(tmp_path_factory):
        server = server_or_skip(lambda: mariadb_server(tmp_path_factory.mktemp("mariadb")))
        yield server
        server.stop()

Usage from a benchmark script::

    with start_redis(Path(tempfile.mkdtemp())) as redis_server:
        ...

If ``TEST_MYSQL_URL`` / ``TEST_POSTGRES_URL`` / ``TEST_REDIS_URL`` are set, ``mariadb_from_env()`` /
``postgres_from_env()`` / ``redis_from_env()`` (and the ``mariadb_server()`` / ``postgres_server()`` /
``redis_server()`` conveniences) return handles on those existing servers instead; their
``stop()`` does nothing.

PostgreSQL refuses to run as root: run as root, the harness runs ``initdb`` and ``postgres`` as the
``postgres`` user (Debian's package creates it) or ``nobody``, in a data directory of their own
under the system temp dir (pytest's temp dirs are private to root).

Only the standard library, pymysql, psycopg, redis and typing_extensions are used; pytest is
imported lazily inside ``server_or_skip`` so scripts can use this module without it.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Sequence, TypeVar
from urllib.parse import quote, unquote, urlsplit

from typing_extensions import override

__all__ = [
    "ServerUnavailable",
    "ServerStartError",
    "MariaDBServer",
    "ExternalMariaDB",
    "PostgresServer",
    "ExternalPostgres",
    "start_postgres",
    "postgres_from_env",
    "postgres_server",
    "RedisServer",
    "ExternalRedis",
    "start_mariadb",
    "start_redis",
    "mariadb_from_env",
    "redis_from_env",
    "mariadb_server",
    "redis_server",
    "server_or_skip",
    "missing_servers_allowed",
    "stop_all",
]

STARTUP_TIMEOUT = 60.0  # seconds to wait for a server to accept connections
MARIADB_STOP_TIMEOUT = 20.0  # seconds for a clean shutdown before SIGKILL
REDIS_STOP_TIMEOUT = 10.0
_START_ATTEMPTS = 3  # retries when the chosen free port got taken meanwhile
_MAX_UNIX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux; keep a margin

_DB_NAME_RE = re.compile(r"^[A-Za-z0-9_$]{1,64}$")


class ServerUnavailable(Exception):
    """A server binary this harness needs is not installed.

    ``str(exc)`` / ``exc.reason`` explains what is missing and how to get it.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ServerStartError(RuntimeError):
    """The server binary exists but the server did not come up (bug, not skip)."""


T = TypeVar("T")


# --------------------------------------------------------------------------
# process bookkeeping
# --------------------------------------------------------------------------

_live_lock = threading.Lock()
_live: list["_ManagedProcess"] = []
_handed_out_ports: set[int] = set()


def stop_all() -> None:
    """Stop every server this process started and is still running."""
    with _live_lock:
        servers = list(reversed(_live))
    for server in servers:
        try:
            server.stop()
        except Exception as exc:  # never let one failure leak the others
            print(f"tests.servers: failed to stop {server!r}: {exc}", file=sys.stderr)


atexit.register(stop_all)


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (not handed out before)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with _live_lock:
            if port not in _handed_out_ports:
                _handed_out_ports.add(port)
                return port
    raise ServerStartError("could not find a free TCP port on 127.0.0.1")


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _which(name: str, *extra_dirs: str) -> str | None:
    """shutil.which, also looking in sbin dirs that a normal user's PATH lacks."""
    found = shutil.which(name)
    if found:
        return found
    path = os.pathsep.join([*extra_dirs, "/usr/local/sbin", "/usr/sbin", "/sbin"])
    return shutil.which(name, path=path)


def _child_setup() -> Callable[[], None] | None:
    """preexec_fn that makes the child die with us even if we are SIGKILLed.

    atexit only covers orderly interpreter exits; PR_SET_PDEATHSIG also covers
    a hard kill of the test runner. Linux-only, silently skipped elsewhere.
    Note: the signal fires when the *thread* that started the server exits, so
    start servers from the main thread (pytest fixtures always do).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    PR_SET_PDEATHSIG = 1

    def setup() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # parent already gone before prctl took effect
            os._exit(1)

    return setup


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(could not read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or f"({path} is empty)"


class _ManagedProcess:
    """Common process handling for servers started by this module."""

    external = False
    name = "server"
    port: int

    def __init__(self, proc: subprocess.Popen, base_dir: Path, log_path: Path) -> None:
        self.proc = proc
        self.base_dir = base_dir
        self.log_path = log_path
        self._stopped = False
        with _live_lock:
            _live.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def is_running(self) -> bool:
        """True while the server process has not exited."""
        return self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """Tail of the server's log, plus its stdout/stderr if it wrote any."""
        text = _tail(self.log_path, lines)
        stdout = self.log_path.with_suffix(".stdout")
        if stdout.exists() and stdout.stat().st_size:
            text += f"\n--- stdout/stderr ({stdout}) ---\n" + _tail(stdout, lines)
        return text

    def _forget(self) -> None:
        self._stopped = True
        with _live_lock:
            if self in _live:
                _live.remove(self)

    def _terminate(self, timeout: float) -> None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL and reap."""
        if self.proc.poll() is None:
            try:
                self.proc.terminate()
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the server (no clean shutdown) and reap it."""
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        self.proc.wait()
        self._forget()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


def _spawn(argv: list[str], log_path: Path, cwd: Path, user: int | None = None, group: int | None = None) -> subprocess.Popen:
    """Start a server; `user`/`group` (uids, as root) drop privileges first (PostgreSQL)."""
    out = open(log_path.with_suffix(".stdout"), "ab")
    try:
        return subprocess.Popen(
            argv,
            cwd=str(cwd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            # own process group: a Ctrl-C in the terminal reaches pytest, which
            # then stops the servers cleanly, instead of killing them mid-test
            start_new_session=True,
            # the parent-death signal is set after the uid change (which would clear it)
            preexec_fn=_child_setup(),
            close_fds=True,
            user=user,
            group=group,
            extra_groups=[] if user is not None else None,
        )
    finally:
        out.close()


def _short_socket_path(base_dir: Path, name: str) -> tuple[Path, Path | None]:
    """A unix socket path short enough for sun_path; may need its own tempdir."""
    candidate = base_dir / name
    if len(os.fsencode(str(candidate))) <= _MAX_UNIX_SOCKET_PATH:
        return candidate, None
    short_dir = Path(tempfile.mkdtemp(prefix="msrv-"))
    return short_dir / name, short_dir


# --------------------------------------------------------------------------
# MariaDB
# --------------------------------------------------------------------------

# Options shared by the bootstrap (mariadb-install-db) and the real server, so
# InnoDB files are created with the sizes the server then runs with.
_MARIADB_COMMON_OPTS = [
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_unicode_ci",
    "--innodb-buffer-pool-size=64M",
    "--innodb-log-file-size=32M",
    "--innodb-log-buffer-size=8M",
    # Kernel AIO / io_uring are often unavailable or capped in containers.
    "--innodb-use-native-aio=0",
    "--skip-log-bin",
]

_MARIADB_SERVER_OPTS = [
    "--bind-address=127.0.0.1",
    "--skip-name-resolve",
    "--default-time-zone=+00:00",
    "--innodb-flush-log-at-trx-commit=2",
    "--innodb-doublewrite=0",
    "--sync-binlog=0",
    "--performance-schema=OFF",
    "--key-buffer-size=8M",
    "--aria-pagecache-buffer-size=8M",
    "--query-cache-size=0",
    "--max-connections=300",
    "--max-allowed-packet=64M",
    "--skip-symbolic-links",
]


def _url_with_db(admin_url: str, name: str) -> str:
    return admin_url.rstrip("/") + "/" + quote(name, safe="")


def _check_db_name(name: str) -> str:
    if not _DB_NAME_RE.match(name):
        raise ValueError(f"unsafe database name {name!r} (use [A-Za-z0-9_$], max 64 chars)")
    return name


class _MariaDBClientMixin:
    host: str
    port: int
    user: str
    password: str
    admin_url: str
    _unix_socket: str | None = None

    def connect(self, database: str | None = None, **kwargs):
        """A new pymysql connection as the admin user (autocommit on)."""
        import pymysql

        params = dict(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=database,
            charset="utf8mb4",
            autocommit=True,
            connect_timeout=5,
        )
        params.update(kwargs)
        return pymysql.connect(**params)

    def execute(self, sql: str, args=None, database: str | None = None) -> list[tuple]:
        """Run one statement on a fresh admin connection and return all rows."""
        conn = self.connect(database=database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return list(cur.fetchall())
        finally:
            conn.close()

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create database ``name`` (utf8mb4) and return its SQLAlchemy URL. With ``template``,
        a copy of that database: each table's definition (CREATE TABLE ... LIKE: columns,
        defaults, indexes, CHECKs) and rows, ten times faster than migrating a new database."""
        _check_db_name(name)
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
                if template is not None:
                    cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (_check_db_name(template),))
                    for (table,) in cur.fetchall():
                        cur.execute(f"CREATE TABLE `{name}`.`{table}` LIKE `{template}`.`{table}`")
                        cur.execute(f"INSERT INTO `{name}`.`{table}` SELECT * FROM `{template}`.`{table}`")
        finally:
            conn.close()
        return _url_with_db(self.admin_url, name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists."""
        _check_db_name(name)
        self.execute(f"DROP DATABASE IF EXISTS `{name}`")

    def url_for(self, name: str) -> str:
        """SQLAlchemy URL of database ``name`` (without creating it)."""
        return _url_with_db(self.admin_url, _check_db_name(name))

    def _fetch_version(self) -> str:
        return str(self.execute("SELECT VERSION()")[0][0])


class MariaDBServer(_MariaDBClientMixin, _ManagedProcess):
    """A throwaway ``mariadbd`` started by :func:`start_mariadb`."""

    name = "mariadbd"

    def __init__(
        self,
        proc: subprocess.Popen,
        base_dir: Path,
        log_path: Path,
        port: int,
        socket_path: Path,
        socket_dir: Path | None,
    ) -> None:
        super().__init__(proc, base_dir, log_path)
        self.host = "127.0.0.1"
        self.port = port
        self.user = "root"
        self.password = ""
        self.admin_url = f"mysql+pymysql://root@127.0.0.1:{port}/"
        self.socket_path = socket_path
        self.pid_file = base_dir / "mariadb.pid"
        self._socket_dir = socket_dir
        self.version = ""
        self.startup_seconds = 0.0

    @override
    def __repr__(self) -> str:
        return f"<MariaDBServer 127.0.0.1:{self.port} pid={self.proc.pid} dir={self.base_dir}>"

    @override
    def stop(self) -> None:
        """Clean shutdown (SIGTERM); SIGKILL if it has not exited after 20 s."""
        if self._stopped:
            return
        self._terminate(MARIADB_STOP_TIMEOUT)
        self._forget()

    @override
    def _forget(self) -> None:
        super()._forget()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)


def _mariadb_binaries() -> tuple[str, str]:
    mariadbd = _which("mariadbd") or _which("mysqld")
    install_db = _which("mariadb-install-db") or _which("mysql_install_db")
    missing = [n for n, p in (("mariadbd", mariadbd), ("mariadb-install-db", install_db)) if not p]
    if missing:
        raise ServerUnavailable(
            f"{' and '.join(missing)} not found (install the Debian package "
            "mariadb-server, e.g. with scripts/install-test-deps)"
        )
    return mariadbd, install_db  # type: ignore[return-value]


def start_mariadb(
    base_dir: Path,
    *,
    timeout: float = STARTUP_TIMEOUT,
    extra_args: Sequence[str] = (),
) -> MariaDBServer:
    """Initialise a fresh datadir under ``base_dir`` and start ``mariadbd``.

    The server listens on 127.0.0.1 only, on a free port; root connects over
    TCP without a password. ``extra_args`` are appended to the ``mariadbd``
    command line (e.g. ``["--innodb-lock-wait-timeout=5"]``). Raises :class:`ServerUnavailable` when the
    binaries are missing, :class:`ServerStartError` when it fails to start.
    """
    mariadbd, install_db = _mariadb_binaries()
    base_dir = Path(base_dir).resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()

    datadir = base_dir / "data"
    tmpdir = base_dir / "tmp"
    tmpdir.mkdir(exist_ok=True)
    user_opts = ["--user=root"] if _is_root() else []

    if datadir.exists() and any(datadir.iterdir()):
        raise ServerStartError(f"{datadir} is not empty; give start_mariadb a fresh directory")

    install_log = base_dir / "install-db.log"
    with open(install_log, "wb") as out:
        try:
            result = subprocess.run(
                [
                    install_db,
                    "--no-defaults",  # must be first: ignore /etc/mysql/*.cnf
                    f"--datadir={datadir}",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                    "--skip-name-resolve",
                    *user_opts,
                    f"--tmpdir={tmpdir}",
                    *_MARIADB_COMMON_OPTS,
                ],
                cwd=str(base_dir),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise ServerStartError(
                f"mariadb-install-db did not finish within {timeout:.0f} s; "
                f"tail of {install_log}:\n{_tail(install_log)}"
            ) from None
    if result.returncode != 0:
        raise ServerStartError(
            f"mariadb-install-db failed with exit code {result.returncode}; "
            f"tail of {install_log}:\n{_tail(install_log)}"
        )

    def launch(port: int) -> MariaDBServer:
        socket_path, socket_dir = _short_socket_path(base_dir, "mariadb.sock")
        log_path = base_dir / f"mariadb-{port}.err"
        argv = [
            mariadbd,
            "--no-defaults",  # must be first
            f"--datadir={datadir}",
            f"--tmpdir={tmpdir}",
            f"--port={port}",
            f"--socket={socket_path}",
            f"--pid-file={base_dir / 'mariadb.pid'}",  # == MariaDBServer.pid_file
            f"--log-error={log_path}",
            *user_opts,
            *_MARIADB_COMMON_OPTS,
            *_MARIADB_SERVER_OPTS,
            *extra_args,
        ]
        return MariaDBServer(_spawn(argv, log_path, base_dir), base_dir, log_path, port, socket_path, socket_dir)

    server = _start_on_a_free_port(launch, _mariadb_not_up_because, timeout, interval=0.1)
    server.version = server._fetch_version()
    server.startup_seconds = time.monotonic() - t0
    return server


def _port_clash(server: _ManagedProcess) -> bool:
    text = server.log_tail(200)
    return "Address already in use" in text or "Do you already have another" in text


Server = TypeVar("Server", bound=_ManagedProcess)


def _start_on_a_free_port(
    launch: Callable[[int], Server], not_up_because: Callable[[Server], str | None], timeout: float, interval: float
) -> Server:
    """``launch(port)`` on a free port and wait until the server is up; when another process took
    that port between choosing and binding it, try another port (up to ``_START_ATTEMPTS``)."""
    for attempt in range(1, _START_ATTEMPTS + 1):
        server = launch(_free_port())
        try:
            _wait_until_up(server, not_up_because, timeout, interval)
        except ServerStartError:
            server.kill()
            if _port_clash(server) and attempt < _START_ATTEMPTS:
                continue
            raise
        return server
    raise AssertionError("unreachable: the last attempt returns or raises")


def _wait_until_up(server: Server, not_up_because: Callable[[Server], str | None], timeout: float, interval: float) -> None:
    """Poll ``not_up_because(server)`` (None once the server answers as itself, else why not)
    every ``interval`` s; ServerStartError, with the log's tail, if the process exits or
    ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    why = "not asked yet"
    while time.monotonic() < deadline:
        code = server.proc.poll()
        if code is not None:
            raise ServerStartError(
                f"{server.name} exited with code {code} during start-up; "
                f"tail of {server.log_path}:\n{server.log_tail()}"
            )
        reason = not_up_because(server)
        if reason is None:
            return
        why = reason
        time.sleep(interval)
    raise ServerStartError(
        f"{server.name} did not answer on 127.0.0.1:{server.port} within {timeout:.0f} s "
        f"(last error: {why}); tail of {server.log_path}:\n{server.log_tail()}"
    )


def wait_until_answers(server: _ManagedProcess, timeout: float) -> None:
    """Block until a started (or restarted: tests/restart.py) server answers as itself."""
    if isinstance(server, MariaDBServer):
        _wait_until_up(server, _mariadb_not_up_because, timeout, 0.1)
    elif isinstance(server, PostgresServer):
        _wait_until_up(server, _postgres_not_up_because, timeout, 0.1)
    elif isinstance(server, RedisServer):
        _wait_until_up(server, _redis_not_up_because, timeout, 0.05)
    else:
        raise TypeError(f"not a server this harness starts: {server!r}")


def _mariadb_not_up_because(server: MariaDBServer) -> str | None:
    import pymysql

    try:
        # read_timeout too: something else listening on a stolen port may
        # accept the TCP connection and never send a MySQL greeting.
        conn = pymysql.connect(
            host=server.host,
            port=server.port,
            user="root",
            password="",
            connect_timeout=2,
            read_timeout=2,
            write_timeout=2,
        )
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT @@pid_file")
                pid_file = cur.fetchone()[0]
        finally:
            conn.close()
    except (pymysql.err.MySQLError, OSError) as exc:
        return str(exc)
    if Path(pid_file) == server.pid_file:
        return None
    # Someone else's MariaDB took the port first; ours will exit with a
    # bind error, which the caller recognises and retries on another port.
    return f"port {server.port} answered by a server using {pid_file}"


class _ExternalDatabase:
    """What a handle on an existing database server from a ``TEST_*_URL`` shares: the URL's parts,
    an admin URL for our driver, and a ``stop()`` that does nothing (the server is not ours)."""

    external = True
    host: str
    port: int
    user: str
    password: str
    admin_url: str

    def _parse(self, url: str, *, variable: str, schemes: tuple[str, ...], port: int, user: str, driver: str) -> None:
        parts = urlsplit(url)
        if not parts.scheme.startswith(schemes):
            raise ValueError(f"{variable} must be a {driver}:// URL, got {url!r}")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or port
        self.user = unquote(parts.username or user)
        self.password = unquote(parts.password or "")
        userinfo = quote(self.user, safe="")
        if self.password:
            userinfo += ":" + quote(self.password, safe="")
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.admin_url = f"{driver}://{userinfo}@{host}:{self.port}/"

    def execute(self, sql: str) -> list[tuple]:
        raise NotImplementedError

    def is_running(self) -> bool:
        try:
            self.execute("SELECT 1")
        except Exception:
            return False
        return True

    def stop(self) -> None:
        """Does nothing: the server is not ours."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


class ExternalMariaDB(_MariaDBClientMixin, _ExternalDatabase):
    """Handle on an existing server from ``TEST_MYSQL_URL``; never stopped by us."""

    def __init__(self, url: str) -> None:
        self._parse(url, variable="TEST_MYSQL_URL", schemes=("mysql", "mariadb"), port=3306, user="root", driver="mysql+pymysql")
        self.version = self._fetch_version()

    @override
    def __repr__(self) -> str:
        return f"<ExternalMariaDB {self.host}:{self.port}>"


def mariadb_from_env() -> ExternalMariaDB | None:
    """The server named by ``TEST_MYSQL_URL``, or None when it is not set."""
    url = os.environ.get("TEST_MYSQL_URL", "").strip()
    return ExternalMariaDB(url) if url else None


def mariadb_server(base_dir: Path) -> MariaDBServer | ExternalMariaDB:
    """``TEST_MYSQL_URL``'s server if set, else a fresh :func:`start_mariadb`."""
    return mariadb_from_env() or start_mariadb(base_dir)


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------

POSTGRES_STOP_TIMEOUT = 20.0
_PG_NAME_RE = re.compile(r"^[a-z0-9_]{1,63}$")

# Durability off (a throwaway server): no fsync, no full-page writes, commits not waited for.
_POSTGRES_SERVER_OPTS = [
    "listen_addresses=127.0.0.1",
    "unix_socket_directories=",  # TCP only: nothing in a shared socket dir
    "timezone=UTC",  # like MariaDB's --default-time-zone: now() in any session is UTC
    "max_connections=300",
    "shared_buffers=64MB",
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_wal_size=1GB",
    "log_min_messages=warning",
    "log_line_prefix=%m [%p] ",
]


def _check_pg_db_name(name: str) -> str:
    if not _PG_NAME_RE.match(name):
        raise ValueError(f"unsafe database name {name!r} (use [a-z0-9_], max 63 chars)")
    return name


class _PostgresClientMixin:
    host: str
    port: int
    user: str
    password: str
    admin_url: str

    def connect(self, database: str = "postgres", **kwargs):
        """A new psycopg connection as the admin user (autocommit on)."""
        import psycopg

        params: dict[str, object] = dict(
            host=self.host, port=self.port, user=self.user, dbname=database, autocommit=True, connect_timeout=5
        )
        if self.password:
            params["password"] = self.password
        params.update(kwargs)
        return psycopg.connect(**params)  # type: ignore[arg-type]

    def execute(self, sql: str, args=None, database: str = "postgres") -> list[tuple]:
        """Run one statement on a fresh admin connection and return its rows (none for DDL)."""
        with self.connect(database=database) as conn:
            cur = conn.execute(sql, args)
            return list(cur.fetchall()) if cur.description else []

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create database ``name`` (a copy of ``template`` if given) and return its SQLAlchemy URL."""
        _check_pg_db_name(name)
        if template is None:
            self.execute(f'CREATE DATABASE "{name}"')
        else:
            # FILE_COPY: a small template is copied faster than WAL-logged block by block.
            self.execute(f'CREATE DATABASE "{name}" TEMPLATE "{_check_pg_db_name(template)}" STRATEGY = FILE_COPY')
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, ending any session still connected to it."""
        self.execute(f'DROP DATABASE IF EXISTS "{_check_pg_db_name(name)}" WITH (FORCE)')

    def url_for(self, name: str) -> str:
        """SQLAlchemy URL of database ``name`` (without creating it)."""
        return self.admin_url.rstrip("/") + "/" + _check_pg_db_name(name)

    def _fetch_version(self) -> str:
        return str(self.execute("SHOW server_version")[0][0])


class PostgresServer(_PostgresClientMixin, _ManagedProcess):
    """A throwaway ``postgres`` started by :func:`start_postgres`."""

    name = "postgres"

    def __init__(self, proc: subprocess.Popen, base_dir: Path, log_path: Path, port: int, data_dir: Path, run_as: tuple[int, int] | None) -> None:
        super().__init__(proc, base_dir, log_path)
        self.host = "127.0.0.1"
        self.port = port
        self.user = "postgres"
        self.password = ""
        self.admin_url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/"
        self.data_dir = data_dir
        self.run_as = run_as  # (uid, gid) the server runs as when we are root
        self.version = ""
        self.startup_seconds = 0.0

    @override
    def __repr__(self) -> str:
        return f"<PostgresServer 127.0.0.1:{self.port} pid={self.proc.pid} dir={self.data_dir}>"

    @override
    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path.with_suffix(".stdout"), lines)

    @override
    def stop(self) -> None:
        """Fast shutdown (SIGINT: sessions are ended, not waited for); SIGKILL after 20 s."""
        if self._stopped:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=POSTGRES_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
        self._forget()

    @override
    def _forget(self) -> None:
        super()._forget()
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)


def _postgres_binaries() -> tuple[str, str]:
    """initdb and postgres: on PATH, else the newest /usr/lib/postgresql/NN/bin (Debian keeps
    them there; only the client tools get /usr/bin links)."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    extra = [str(p) for p in reversed(versions)]
    initdb, postgres = _which("initdb", *extra), _which("postgres", *extra)
    missing = [n for n, p in (("initdb", initdb), ("postgres", postgres)) if not p]
    if missing:
        raise ServerUnavailable(
            f"{' and '.join(missing)} not found (install the Debian package postgresql, e.g. with scripts/install-test-deps)"
        )
    return initdb, postgres  # type: ignore[return-value]


def _postgres_run_as() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as when we are root (it refuses root), else None."""
    if not _is_root():
        return None
    import pwd

    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
    raise ServerUnavailable("running as root, and neither a postgres nor a nobody user exists to run PostgreSQL as")


def start_postgres(base_dir: Path, *, timeout: float = STARTUP_TIMEOUT, extra_args: Sequence[str] = ()) -> PostgresServer:
    """``initdb`` a fresh cluster and start ``postgres`` on a free loopback port.

    The superuser ``postgres`` connects over TCP without a password (trust). Logs go under
    ``base_dir``; the data directory is a private temp dir owned by the server's user.
    ``extra_args`` are ``-c name=value`` settings (e.g. ``["lock_timeout=2s"]``).
    """
    initdb, postgres = _postgres_binaries()
    run_as = _postgres_run_as()
    base_dir = Path(base_dir).resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()

    root = Path(tempfile.mkdtemp(prefix="mpg-"))
    data_dir = root / "data"
    if run_as is not None:
        os.chown(root, *run_as)
    ids = {"user": run_as[0], "group": run_as[1], "extra_groups": []} if run_as else {}
    init_log = base_dir / "initdb.log"
    with open(init_log, "wb") as out:
        try:
            result = subprocess.run(
                [initdb, "-D", str(data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
                cwd=str(root), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, **ids,  # type: ignore[call-overload]
            )
        except subprocess.TimeoutExpired:
            shutil.rmtree(root, ignore_errors=True)
            raise ServerStartError(f"initdb did not finish within {timeout:.0f} s; tail of {init_log}:\n{_tail(init_log)}") from None
    if result.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise ServerStartError(f"initdb failed with exit code {result.returncode}; tail of {init_log}:\n{_tail(init_log)}")

    def launch(port: int) -> PostgresServer:
        log_path = base_dir / f"postgres-{port}.log"
        settings = [*_POSTGRES_SERVER_OPTS, f"port={port}", *extra_args]
        argv = [postgres, "-D", str(data_dir), *[arg for setting in settings for arg in ("-c", setting)]]
        proc = _spawn(argv, log_path, root, *(run_as or (None, None)))
        return PostgresServer(proc, base_dir, log_path, port, data_dir, run_as)

    server = _start_on_a_free_port(launch, _postgres_not_up_because, timeout, interval=0.1)
    server.version = server._fetch_version()
    server.startup_seconds = time.monotonic() - t0
    return server


def _postgres_not_up_because(server: PostgresServer) -> str | None:
    import psycopg

    try:
        with psycopg.connect(host=server.host, port=server.port, user="postgres", dbname="postgres", connect_timeout=2) as conn:
            data_dir = conn.execute("SHOW data_directory").fetchone()[0]  # type: ignore[index]
    except (psycopg.Error, OSError) as exc:
        return str(exc)
    if Path(data_dir) == server.data_dir:
        return None
    return f"port {server.port} answered by a server using {data_dir}"


class ExternalPostgres(_PostgresClientMixin, _ExternalDatabase):
    """Handle on an existing server from ``TEST_POSTGRES_URL``; never stopped by us. The URL's user
    must be allowed to create databases."""

    def __init__(self, url: str) -> None:
        self._parse(url, variable="TEST_POSTGRES_URL", schemes=("postgresql", "postgres"), port=5432, user="postgres", driver="postgresql+psycopg")
        self.version = self._fetch_version()

    @override
    def __repr__(self) -> str:
        return f"<ExternalPostgres {self.host}:{self.port}>"


def postgres_from_env() -> ExternalPostgres | None:
    """The server named by ``TEST_POSTGRES_URL``, or None when it is not set."""
    url = os.environ.get("TEST_POSTGRES_URL", "").strip()
    return ExternalPostgres(url) if url else None


def postgres_server(base_dir: Path) -> PostgresServer | ExternalPostgres:
    """``TEST_POSTGRES_URL``'s server if set, else a fresh :func:`start_postgres`."""
    return postgres_from_env() or start_postgres(base_dir)


# --------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------


class _RedisClientMixin:
    url: str

    def client(self, **kwargs):
        """A new ``redis.Redis`` for this server (short timeouts)."""
        import redis

        kwargs.setdefault("socket_connect_timeout", 2)
        kwargs.setdefault("socket_timeout", 5)
        return redis.Redis.from_url(self.url, **kwargs)

    def ping(self) -> bool:
        """True when the server answers PING."""
        client = self.client()
        try:
            return bool(client.ping())
        except Exception:
            return False
        finally:
            client.close()

    def flushall(self) -> None:
        client = self.client()
        try:
            client.flushall()
        finally:
            client.close()


class RedisServer(_RedisClientMixin, _ManagedProcess):
    """A throwaway ``redis-server`` started by :func:`start_redis`."""

    name = "redis-server"

    def __init__(self, proc: subprocess.Popen, base_dir: Path, log_path: Path, port: int) -> None:
        super().__init__(proc, base_dir, log_path)
        self.host = "127.0.0.1"
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.version = ""
        self.startup_seconds = 0.0

    @override
    def __repr__(self) -> str:
        return f"<RedisServer 127.0.0.1:{self.port} pid={self.proc.pid} dir={self.base_dir}>"

    @override
    def stop(self) -> None:
        """SHUTDOWN NOSAVE, falling back to SIGTERM then SIGKILL; waits for exit."""
        if self._stopped:
            return
        if self.proc.poll() is None:
            client = self.client(socket_timeout=2)
            try:
                client.shutdown(nosave=True)
            except Exception:
                pass  # the connection drops as the server exits, or it is wedged
            finally:
                client.close()
            try:
                self.proc.wait(timeout=REDIS_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._terminate(REDIS_STOP_TIMEOUT)
        self.proc.wait()
        self._forget()


def start_redis(
    base_dir: Path,
    *,
    timeout: float = STARTUP_TIMEOUT,
    extra_config: Sequence[str] = (),
) -> RedisServer:
    """Start ``redis-server`` on a free loopback port with no persistence.

    ``extra_config`` lines (e.g. ``["maxmemory 64mb"]``) are appended to the
    generated redis.conf. Raises :class:`ServerUnavailable` when the binary is missing,
    :class:`ServerStartError` when it fails to start.
    """
    binary = _which("redis-server")
    if not binary:
        raise ServerUnavailable(
            "redis-server not found (install the Debian package redis-server, "
            "e.g. with scripts/install-test-deps)"
        )
    base_dir = Path(base_dir).resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()

    def launch(port: int) -> RedisServer:
        log_path = base_dir / f"redis-{port}.log"
        conf = base_dir / f"redis-{port}.conf"
        # A config file rather than argv: `save ""` survives quoting this way.
        conf.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {port}",
                    "protected-mode yes",
                    "daemonize no",
                    'save ""',
                    "appendonly no",
                    f'dir "{base_dir}"',
                    f'logfile "{log_path}"',
                    f'pidfile "{base_dir / f"redis-{port}.pid"}"',
                    "loglevel notice",
                    "databases 16",
                    "tcp-backlog 128",
                    *extra_config,
                    "",
                ]
            )
        )
        return RedisServer(_spawn([binary, str(conf)], log_path, base_dir), base_dir, log_path, port)

    server = _start_on_a_free_port(launch, _redis_not_up_because, timeout, interval=0.05)
    client = server.client()
    try:
        server.version = str(client.info("server").get("redis_version", ""))
    finally:
        client.close()
    server.startup_seconds = time.monotonic() - t0
    return server


def _redis_not_up_because(server: RedisServer) -> str | None:
    import redis

    client = redis.Redis(host=server.host, port=server.port, socket_connect_timeout=1, socket_timeout=2)
    try:
        process_id = int(client.info("server").get("process_id", -1))
    except (redis.exceptions.RedisError, OSError) as exc:
        # ConnectionError / TimeoutError until it listens, BusyLoadingError while loading
        return str(exc)
    finally:
        client.close()
    if process_id == server.proc.pid:
        return None
    # another Redis took the port first; ours will exit with a bind error
    return f"port {server.port} answered by redis pid {process_id}"


class ExternalRedis(_RedisClientMixin):
    """Handle on an existing server from ``TEST_REDIS_URL``; never stopped by us."""

    external = True

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"TEST_REDIS_URL must be a redis:// URL, got {url!r}")
        self.url = url
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        client = self.client()
        try:
            self.version = str(client.info("server").get("redis_version", ""))
        finally:
            client.close()

    @override
    def __repr__(self) -> str:
        return f"<ExternalRedis {self.host}:{self.port}>"

    def is_running(self) -> bool:
        return self.ping()

    def stop(self) -> None:
        """Does nothing: the server is not ours."""

    def kill(self) -> None:
        raise RuntimeError(
            "cannot kill an external Redis (TEST_REDIS_URL); start one with start_redis()"
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def redis_from_env() -> ExternalRedis | None:
    """The server named by ``TEST_REDIS_URL``, or None when it is not set."""
    url = os.environ.get("TEST_REDIS_URL", "").strip()
    return ExternalRedis(url) if url else None


def redis_server(base_dir: Path) -> RedisServer | ExternalRedis:
    """``TEST_REDIS_URL``'s server if set, else a fresh :func:`start_redis`."""
    return redis_from_env() or start_redis(base_dir)


# --------------------------------------------------------------------------
# pytest glue
# --------------------------------------------------------------------------


def missing_servers_allowed() -> bool:
    """Skipping is allowed only with MONITOR_ALLOW_MISSING_SERVERS=1 outside CI."""
    return (
        os.environ.get("MONITOR_ALLOW_MISSING_SERVERS") == "1"
        and os.environ.get("CI", "").strip().lower() != "true"
    )


def server_or_skip(factory: Callable[[], T]) -> T:
    """Call ``factory()``; if a server binary is missing, skip or fail the test.

    It skips only when ``MONITOR_ALLOW_MISSING_SERVERS=1`` and ``CI`` is not
    ``true``; otherwise the test fails with the reason. Start-up errors other
    than a missing binary (:class:`ServerStartError`) always propagate.
    """
    import pytest

    try:
        return factory()
    except ServerUnavailable as exc:
        if missing_servers_allowed():
            pytest.skip(f"server unavailable: {exc.reason}")
        pytest.fail(
            f"server unavailable: {exc.reason}. Run scripts/install-test-deps, or set "
            "MONITOR_ALLOW_MISSING_SERVERS=1 (outside CI) to skip these tests.",
            pytrace=False,
        )
