"""The README's crontab line, run by Debian's real cron daemon from cron's bare environment.

A throwaway project directory stands in for /srv/app: a copy of scripts/cron-dispatch, a `.venv`
giving this interpreter, a `.env` naming a SQLite database with one due user, and `logs/`. The
test installs Debian's `cron` when it is missing (root), starts the daemon itself unless one is
already running, puts exactly the README's line (with this directory instead of /srv/app) into
root's crontab, and waits for cron to run it: `logs/cron.log` gets a `claimed=1` dispatch line and
the user's schedule shows a succeeded run. Afterwards the previous crontab is restored and the
daemon it started is stopped; no pass is left running.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any
from pathlib import Path

import pytest

from tests.conftest import PYTHON, REPO_ROOT, cli_env

pytestmark = [pytest.mark.slow, pytest.mark.cron]

CRON_WAIT = 130  # seconds: the next minute boundary plus one pass, with room to spare
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
USER = "cron-user"


def is_root() -> bool:
    return os.geteuid() == 0


def cron_daemon_binary() -> str | None:
    return shutil.which("cron", path=SBIN_PATH) or shutil.which("crond", path=SBIN_PATH)


def running_cron_daemons() -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if (proc / "comm").read_text().strip() in ("cron", "crond"):
                    found.append(int(proc.name))
    return found


def install_cron() -> str:
    """Debian's cron package, without letting its maintainer scripts start the service."""
    if not shutil.which("apt-get"):
        pytest.fail("cron is not installed and apt-get is missing: install cron by hand", pytrace=False)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    policy = Path("/usr/sbin/policy-rc.d")
    created_policy = not policy.exists()
    if created_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "cron"]):
            result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
            assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    finally:
        if created_policy:
            policy.unlink(missing_ok=True)
    binary = cron_daemon_binary()
    assert binary, "apt-get installed cron but no cron binary was found"
    return binary


@pytest.fixture
def cron_lock() -> Iterator[None]:
    """One test run at a time on this host uses the crontab and the daemon (parallel CI jobs)."""
    with open(Path(tempfile.gettempdir()) / f"monitor-scheduler-cron-test-{os.geteuid()}.lock", "w") as lock:
        deadline = time.monotonic() + 600
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail("another test run kept the cron test lock for 10 minutes", pytrace=False)
                time.sleep(1)
        yield


@pytest.fixture
def cron_daemon(cron_lock: None) -> Iterator[None]:
    """A running cron daemon: the one already there, or one started (and stopped) here."""
    if running_cron_daemons():
        yield
        return
    binary = cron_daemon_binary()
    if not is_root():
        pytest.skip("needs root (or a running cron daemon) to run cron: installing, starting it and using root's crontab")
    if binary is None:
        binary = install_cron()
    foreground = ["-f"] if Path(binary).name == "cron" else ["-n"]  # Debian cron / cronie
    proc = subprocess.Popen([binary, *foreground], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(0.5)
        assert proc.poll() is None, f"{binary} {' '.join(foreground)} exited at once with code {proc.returncode}"
        yield
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def crontab(cron_lock: None) -> Iterator[Callable[..., Any]]:
    """Install a crontab for the current user; the previous one (or none) is put back afterwards."""
    if not shutil.which("crontab"):
        pytest.fail("the crontab command is missing (Debian package cron)", pytrace=False)
    saved = subprocess.run(["crontab", "-l"], capture_output=True, text=True, timeout=30)
    previous = saved.stdout if saved.returncode == 0 else None

    def install(text: str) -> None:
        result = subprocess.run(["crontab", "-"], input=text, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr

    try:
        yield install
    finally:
        if previous is None:
            subprocess.run(["crontab", "-r"], capture_output=True, timeout=30)
        else:
            subprocess.run(["crontab", "-"], input=previous, capture_output=True, text=True, timeout=30, check=True)


def processes_in(directory: Path) -> list[int]:
    """Live processes whose working directory is `directory` (cron passes of this test)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            with contextlib.suppress(OSError):
                if Path(os.readlink(proc / "cwd")) == directory:
                    found.append(int(proc.name))
    return found


def make_project(directory: Path) -> Path:
    """/srv/app in miniature: scripts/cron-dispatch, .venv, .env, logs/, a migrated SQLite file."""
    (directory / "scripts").mkdir(parents=True)
    shutil.copy2(REPO_ROOT / "scripts" / "cron-dispatch", directory / "scripts" / "cron-dispatch")
    (directory / "logs").mkdir()
    if sys.prefix != sys.base_prefix:
        (directory / ".venv").symlink_to(sys.prefix, target_is_directory=True)  # scripts/test: the project venv
    else:
        (directory / ".venv" / "bin").mkdir(parents=True)
        (directory / ".venv" / "bin" / "python").symlink_to(Path(PYTHON).resolve())
    (directory / ".env").write_text("DATABASE_URL=sqlite:///monitor-scheduler.db\nREDIS_URL=\nMONITOR_TASK=worker.tasks:demo_task\n")
    return directory


def project_cli(project: Path, *args: str) -> str:
    env = cli_env()
    for name in ("LOG_LEVEL", "QUEUE_NAME", "JOB_TIMEOUT", "WORKER_CONCURRENCY", "SYNC_TIME_BUDGET"):
        env.pop(name, None)
    result = subprocess.run([PYTHON, "-m", "monitor_scheduler.cli", *args], cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result
    return result.stdout


def needs_pythonpath() -> bool:
    """True when this interpreter imports the project only from the source tree (not installed)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = subprocess.run([PYTHON, "-c", "import monitor_scheduler.cli, dispatcher, worker, schema"], cwd="/", env=env, capture_output=True, timeout=60)
    return probe.returncode != 0


def test_cron_runs_the_readme_line_from_its_bare_environment_and_dispatches_due_users(tmp_path: Path, cron_daemon: None, crontab) -> None:
    project = make_project(tmp_path / "app")
    project_cli(project, "migrate")
    project_cli(project, "schedule", "set", USER, "--interval", "5")
    assert json.loads(project_cli(project, "schedule", "show", USER))["lastStatus"] is None

    # The README's line, for this directory instead of /srv/app. Only when this interpreter is not
    # an installed venv does the crontab also say where the sources are (a crontab variable).
    line = f"* * * * * cd {project} && scripts/cron-dispatch >> logs/cron.log 2>&1"
    variables = f"PYTHONPATH={REPO_ROOT}\n" if needs_pythonpath() else ""
    log = project / "logs" / "cron.log"
    try:
        crontab(f"# monitor-scheduler test_real_cron (temporary)\n{variables}{line}\n")

        def dispatched() -> str | None:
            text = log.read_text(errors="replace") if log.exists() else ""
            return text if "claimed=1" in text else None

        deadline = time.monotonic() + CRON_WAIT
        while not dispatched() and time.monotonic() < deadline:
            time.sleep(1)
        text = log.read_text(errors="replace") if log.exists() else "(logs/cron.log was never written)"
        assert dispatched(), f"no claimed=1 dispatch line within {CRON_WAIT}s; logs/cron.log:\n{text}"
        dispatch_lines = [ln for ln in text.splitlines() if ln.startswith("dispatch ")]
        assert dispatch_lines and "mode=sync" in dispatch_lines[0] and "claimed=1" in dispatch_lines[0], text

        row = json.loads(project_cli(project, "schedule", "show", USER))
        assert row["lastStatus"] == "succeeded", row
        assert [r["trigger"] for r in row["recentRuns"]] == ["sync"], row  # a sync-mode pass (no REDIS_URL)
    finally:
        crontab("")  # no further passes; the fixture then restores the previous crontab
        # A pass cron already started finishes; wait for it (it holds the lock) before cleanup.
        lock = project / ".cron-dispatch.lock"
        if lock.exists():
            with open(lock) as handle:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            break
                        time.sleep(0.2)
        for pid in processes_in(project):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
