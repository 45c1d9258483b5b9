"""Restarting the throwaway servers of tests/servers.py in place: same port, same data directory.

Kept apart from tests/servers.py on purpose (its start-up code is being reshaped elsewhere): these
helpers only stop a server's process with a chosen signal and spawn the very same command line
again, then wait for it the way start-up does. A restarted server keeps its handle (`server.proc`
is replaced), so fixtures and `stop_all()` still stop it at the end.

- `stop_server(server, sig)`: SIGTERM (clean shutdown; sent to PostgreSQL as SIGINT, its fast
  shutdown) or SIGKILL (crash), waits for the exit.
- `start_again(server)`: the same argv on the same port; waits until it answers.
- `restart(server, sig, down_for=0.0)`: both, with the server down for `down_for` seconds between.
- `start_redis_with_aof(base_dir)`: a Redis that persists every write to its append-only file, so
  a SIGKILL and restart reloads the queue (what production Redis with AOF does).
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from tests import servers

RESTART_TIMEOUT = 60.0

Restartable = servers.MariaDBServer | servers.PostgresServer | servers.RedisServer


def stop_server(server: Restartable, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    """Stop the server process with `sig` and wait for it to exit (SIGKILL after `timeout`).
    PostgreSQL's clean shutdown that does not wait for the clients to leave is SIGINT (its SIGTERM
    waits for every session to end), so SIGTERM is sent to it as SIGINT."""
    if isinstance(server, servers.PostgresServer) and sig == signal.SIGTERM:
        sig = signal.SIGINT
    if server.proc.poll() is None:
        server.proc.send_signal(sig)
        try:
            server.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


def start_again(server: Restartable, timeout: float = RESTART_TIMEOUT) -> None:
    """Spawn the server's own command line again (same port, data, config) and wait for it."""
    if server.proc.poll() is None:
        raise RuntimeError(f"{server!r} is still running")
    args = server.proc.args
    if not isinstance(args, (list, tuple)):
        raise RuntimeError(f"{server!r} was not started from an argument list")
    argv = [str(arg) for arg in args]
    deadline = time.monotonic() + timeout
    while True:
        if isinstance(server, servers.PostgresServer):  # as its own user, from its own directory
            server.proc = servers._spawn(argv, server.log_path, server.data_dir.parent, *(server.run_as or (None, None)))
        else:
            server.proc = servers._spawn(argv, server.log_path, server.base_dir)
        try:
            servers.wait_until_answers(server, max(1.0, deadline - time.monotonic()))
            return
        except servers.ServerStartError:
            # The port may still be held for a moment by the process that just died.
            if server.proc.poll() is None:
                server.proc.kill()
            server.proc.wait()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def restart(server: Restartable, sig: int = signal.SIGTERM, down_for: float = 0.0) -> float:
    """Stop with `sig`, stay down `down_for` s, start again; returns the seconds it was down."""
    began = time.monotonic()
    stop_server(server, sig)
    if down_for:
        time.sleep(down_for)
    start_again(server)
    return time.monotonic() - began


def start_redis_with_aof(base_dir: Path) -> servers.RedisServer:
    """A throwaway Redis that writes every command to its append-only file before answering."""
    return servers.start_redis(base_dir, extra_config=["appendonly yes", "appendfsync always"])
