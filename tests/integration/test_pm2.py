"""The PM2 ecosystem (ecosystem.config.js), run by real PM2 against the harness MariaDB and Redis.

PM2 comes from the npm registry (installed once into a cache directory, reused afterwards). The
ecosystem file is copied into a throwaway project directory whose `.venv/bin/monitor-scheduler` is
this interpreter's, so PM2 runs exactly what the file names; PM2_HOME is private to the test, and
every process started under it is gone when the test ends, pass or fail.

One test walks the operator's path: `pm2 start ecosystem.config.js` (web, worker, dispatcher),
`/healthz`, a scheduled user dispatched by the dispatcher app and run by a worker, `pm2 scale
worker 2`, `pm2 restart worker` and `pm2 reload worker` while a job runs (the job finishes and is
recorded as succeeded, it is not killed), `pm2 kill` leaving no process behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from typing import NoReturn

import pytest
from redis import Redis
from rq import Worker

from tests import servers
from tests.conftest import PYTHON, REPO_ROOT, cli_env
from tests.integration.helpers import wait_for
from tests.tasks import started_marker

pytestmark = [pytest.mark.slow, pytest.mark.mysql, pytest.mark.redis]

QUEUE = "monitor-user-tasks"
JOB_SECONDS = 5  # MONITOR_TEST_SLEEP: how long each job runs
NPM_TIMEOUT = 300
APT_TIMEOUT = 900


# --- PM2 from the npm registry --------------------------------------------------------------------


def _unavailable(reason: str) -> NoReturn:
    if servers.missing_servers_allowed():
        pytest.skip(reason)
    pytest.fail(f"{reason} (set MONITOR_ALLOW_MISSING_SERVERS=1 outside CI to skip)", pytrace=False)


def _ensure_npm() -> str:
    npm = shutil.which("npm")
    if npm:
        return npm
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "nodejs", "npm"]):
            result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT)
            if result.returncode != 0:
                pytest.fail(f"{' '.join(argv)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}", pytrace=False)
        npm = shutil.which("npm")
    if not npm:
        _unavailable("npm not found: install Node.js and npm (Debian packages nodejs, npm) to run the PM2 test")
    return npm


def pm2_binary() -> Path:
    """pm2 installed with npm into a reusable cache directory (MONITOR_TEST_PM2_CACHE overrides it)."""
    cache = Path(os.environ.get("MONITOR_TEST_PM2_CACHE") or Path(tempfile.gettempdir()) / f"monitor-scheduler-pm2-{os.geteuid()}")
    binary = cache / "node_modules" / ".bin" / "pm2"
    if binary.exists():
        return binary
    npm = _ensure_npm()
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache.parent / f"{cache.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run installing at the same time
        if binary.exists():
            return binary
        staging = Path(tempfile.mkdtemp(prefix=f"{cache.name}-", dir=cache.parent))
        try:
            result = subprocess.run(
                [npm, "install", "--prefix", str(staging), "--no-audit", "--no-fund", "--loglevel=error", "pm2@latest"],
                capture_output=True, text=True, timeout=NPM_TIMEOUT,
                env={**os.environ, "npm_config_update_notifier": "false"},
            )
            if result.returncode != 0:
                pytest.fail(f"npm install pm2 failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}", pytrace=False)
            shutil.rmtree(cache, ignore_errors=True)
            staging.rename(cache)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return binary


# --- processes ------------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def processes_with_env(entry: str) -> list[int]:
    """Live processes whose environment contains `entry` (NAME=value): all that PM2 started for us."""
    needle = entry.encode() + b"\0"
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if (environ + b"\0").find(needle) != -1 and alive(int(proc.name)):
            found.append(int(proc.name))
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PM2:
    """The pm2 CLI on a private PM2_HOME, run from the project directory."""

    def __init__(self, binary: Path, home: Path, project: Path, env: dict[str, str]) -> None:
        self.binary, self.home, self.project = binary, home, project
        self.env = {**env, "PM2_HOME": str(home)}
        self.seen_pids: set[int] = set()

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.binary), *args], cwd=self.project, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(f"pm2 {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}\n{self.logs()}")
        return result

    def jlist(self) -> list[dict]:
        out = self.run("jlist", timeout=30).stdout
        apps = json.loads(out[out.index("[") :])
        self.seen_pids.update(app["pid"] for app in apps if app.get("pid"))
        return apps

    def online(self, name: str) -> list[int]:
        """Pids of `name`'s instances, when all of them are online (else [])."""
        apps = [a for a in self.jlist() if a["name"] == name]
        if not apps or any(a["pm2_env"]["status"] != "online" or not a["pid"] for a in apps):
            return []
        return sorted(a["pid"] for a in apps)

    def daemon_pid(self) -> int | None:
        try:
            return int((self.home / "pm2.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def logs(self) -> str:
        parts = []
        for path in sorted((self.project / "logs").glob("*.log")) + [self.home / "pm2.log"]:
            if path.exists():
                parts.append(f"--- {path.name} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))
        return "\n".join(parts)

    def kill(self) -> None:
        """`pm2 kill`, then SIGKILL whatever of ours is still there (never someone else's process)."""
        daemon = self.daemon_pid()
        if daemon and alive(daemon):  # a pm2 command without a daemon would spawn a new one
            with contextlib.suppress(Exception):
                self.run("kill", timeout=120, check=False)
        marker = f"PM2_HOME={self.home}"
        ours = {*self.seen_pids, *([daemon] if daemon else []), *processes_with_env(marker)}
        for pid in ours:
            if alive(pid) and (pid in self.seen_pids or pid == daemon or pid in processes_with_env(marker)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while [p for p in ours if alive(p)] and time.monotonic() < deadline:
            time.sleep(0.1)
        reap(ours)


def _set_child_subreaper(on: bool) -> bool:
    """PR_SET_CHILD_SUBREAPER: the PM2 daemon (detached by the pm2 CLI) is reparented to us, so we can
    reap it instead of leaving a zombie to an init that may not reap (containers)."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(36, int(on), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap(pids: set[int]) -> None:
    """waitpid the given pids if they are our (exited) children; never anyone else's."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


@pytest.fixture
def pm2_home() -> Iterator[Path]:
    # PM2 puts its unix sockets (rpc.sock, pub.sock) here: keep the path short for sun_path.
    home = Path(tempfile.mkdtemp(prefix="pm2-"))
    subreaper = sys.platform.startswith("linux") and _set_child_subreaper(True)
    try:
        yield home
    finally:
        if subreaper:
            _set_child_subreaper(False)
        shutil.rmtree(home, ignore_errors=True)


def make_project(directory: Path) -> Path:
    """A throwaway project: the real ecosystem.config.js, and `.venv` giving this interpreter's CLI."""
    directory.mkdir()
    shutil.copy(REPO_ROOT / "ecosystem.config.js", directory / "ecosystem.config.js")
    venv_cli = Path(sys.prefix) / "bin" / "monitor-scheduler"
    if sys.prefix != sys.base_prefix and venv_cli.exists():
        (directory / ".venv").symlink_to(sys.prefix, target_is_directory=True)  # as scripts/test runs us
    else:
        bin_dir = directory / ".venv" / "bin"
        bin_dir.mkdir(parents=True)
        script = bin_dir / "monitor-scheduler"
        script.write_text(f'#!/bin/sh\nexec "{PYTHON}" -m monitor_scheduler.cli "$@"\n')
        script.chmod(0o755)
    return directory


def cli_json(env: dict[str, str], *args: str) -> dict:
    result = subprocess.run([PYTHON, "-m", "monitor_scheduler.cli", *args], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result
    return json.loads(result.stdout)


def cli_ok(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([PYTHON, "-m", "monitor_scheduler.cli", *args], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result
    return result.stdout


def healthz(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return json.loads(response.read()) if response.status == 200 else None
    except (OSError, ValueError):
        return None


def test_pm2_ecosystem_runs_scales_and_restarts_without_killing_jobs(mysql_url: str, redis_url: str, tmp_path: Path, pm2_home: Path) -> None:
    binary = pm2_binary()
    project = make_project(tmp_path / "app")
    test_dir = tmp_path / "markers"
    test_dir.mkdir()
    port = free_port()
    env = cli_env(
        DATABASE_URL=mysql_url, REDIS_URL=redis_url, MONITOR_TASK="tests.tasks:sleeping_task",
        MONITOR_TEST_DIR=str(test_dir), MONITOR_TEST_SLEEP=str(JOB_SECONDS), JOB_TIMEOUT="60",
        WORKER_CONCURRENCY="1", WEB_HOST="127.0.0.1", WEB_PORT=str(port), SECRET_KEY=secrets.token_hex(32),
        LOG_LEVEL="INFO",
    )
    pm2 = PM2(binary, pm2_home, project, env)
    redis = Redis.from_url(redis_url)
    try:
        apps = {a["name"]: a for a in json.loads(subprocess.run(
            ["node", "-e", "console.log(JSON.stringify(require('./ecosystem.config.js').apps))"],
            cwd=project, env=env, capture_output=True, text=True, timeout=30, check=True).stdout)}
        assert set(apps) == {"web", "worker", "dispatcher"}
        assert apps["worker"]["script"] == str(project / ".venv" / "bin" / "monitor-scheduler")
        assert apps["worker"]["kill_timeout"] >= 60_000, "kill_timeout must outlast JOB_TIMEOUT"

        pm2.run("start", "ecosystem.config.js")
        for name in ("web", "worker", "dispatcher"):
            wait_for(lambda name=name: pm2.online(name), 30, lambda name=name: f"{name} online\n{pm2.logs()}")
        assert len(pm2.online("worker")) == 1, "WORKER_CONCURRENCY=1 instance"
        status = wait_for(lambda: healthz(port), 60, lambda: f"/healthz on port {port}\n{pm2.logs()}", 0.5)
        assert status.get("status") == "ok", status

        # The dispatcher app picks up a new (due) schedule; a worker instance runs it.
        cli_ok(env, "schedule", "set", "pm2-first", "--interval", "60")
        row = wait_for(lambda: (r := cli_json(env, "schedule", "show", "pm2-first"))["lastStatus"] and r,
                       40, lambda: f"the dispatcher and a worker to run pm2-first\n{pm2.logs()}", 0.5)
        assert row["lastStatus"] == "succeeded" and row["recentRuns"][0]["trigger"] == "schedule", row

        pm2.run("scale", "worker", "2")
        workers = wait_for(lambda: len(p := pm2.online("worker")) == 2 and p, 30, "two worker instances")
        wait_for(lambda: len(Worker.all(connection=redis)) == 2, 30, "two RQ workers registered")

        for verb in ("restart", "reload"):
            user = f"pm2-{verb}"
            # Disabled: the dispatcher app leaves it alone; only the direct run below starts it.
            cli_ok(env, "schedule", "set", user, "--interval", "60", "--disable")
            cli_ok(env, "dispatch", "--user", user, "--mode", "queue")
            wait_for(lambda user=user: started_marker(test_dir, user).exists(), 30, lambda user=user: f"the job of {user} to start\n{pm2.logs()}")
            started = time.monotonic()

            pm2.run(verb, "worker", timeout=180)

            after = wait_for(lambda: len(p := pm2.online("worker")) == 2 and p, 60, f"two workers back after {verb}")
            assert not set(after) & set(workers), f"pm2 {verb} replaced the worker processes"
            assert not [p for p in workers if alive(p)], "the old worker processes are gone"
            row = cli_json(env, "schedule", "show", user)
            assert [r["status"] for r in row["recentRuns"]] == ["succeeded"], f"pm2 {verb} killed the running job: {row}\n{pm2.logs()}"
            assert (row["lastStatus"], row["lockedBy"]) == ("succeeded", None), row
            run = row["recentRuns"][0]
            assert run["durationMs"] >= JOB_SECONDS * 1000 - 100, run
            assert time.monotonic() - started >= JOB_SECONDS - 1.5, f"pm2 {verb} returned before the job could finish"
            ran = [line for line in (test_dir / "runs.log").read_text().splitlines() if line.startswith(user + " ")]
            assert len(ran) == 1, f"the job ran once, to the end: {ran}"
            workers = after
        wait_for(lambda: len(Worker.all(connection=redis)) == 2, 30, "two RQ workers registered after the restarts")

        found = {*pm2.seen_pids, pm2.daemon_pid()}
        assert None not in found
        ours = {pid for pid in found if pid is not None}
        pm2.run("kill", timeout=120)
        wait_for(lambda: not [p for p in ours if alive(p)], 30, "every PM2 process to exit")
        reap(ours)
        assert processes_with_env(f"PM2_HOME={pm2_home}") == [], "a process started under our PM2_HOME is left"
    finally:
        pm2.kill()
        redis.close()
    assert processes_with_env(f"PM2_HOME={pm2_home}") == []
