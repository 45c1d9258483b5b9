"""Helpers shared by the integration tests: real processes, real servers, bounded waits."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from redis import Redis
from rq import Queue

from core.domain import Mode
from dispatcher.jobspec import run_from_job_args
from monitor_scheduler.wiring import App
from core.settings import load_settings
from tests.conftest import PYTHON, Backend, cli_env

QUEUE = "monitor-user-tasks"


def cli(*args: str, env: dict[str, str], **popen) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, "-m", "monitor_scheduler.cli", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def wait_for(predicate, timeout: float, what, interval: float = 0.05):
    """Poll `predicate` until it returns something truthy (returned) or fail after `timeout` s;
    `what` names the awaited thing (a callable is called then, to show fresh logs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what() if callable(what) else what}")


def queued_users(redis_conn: Redis) -> list[str]:
    queue = Queue(QUEUE, connection=redis_conn)
    return [run_from_job_args(*job.args)[0].user_id for job in queue.get_jobs()]


def real_now(backend: Backend):
    from core.clock import DatabaseClock

    with backend.engine.connect() as conn:
        return DatabaseClock().now(conn)


def worker_env(backend: Backend, redis_url: str, test_dir: Path, task: str, **extra: str) -> dict[str, str]:
    values = {"DISPATCH_LOCK_TTL": "3000", "JOB_TIMEOUT": "60", **extra}
    return cli_env(DATABASE_URL=backend.url, REDIS_URL=redis_url, MONITOR_TASK=task, MONITOR_TEST_DIR=str(test_dir), **values)


def dispatch_once(backend: Backend, redis_url: str, **overrides: object):
    values: dict[str, object] = {"DISPATCH_LOCK_TTL": 3000, "JOB_TIMEOUT": 60, **overrides}
    settings = load_settings(env_file=None, DATABASE_URL=backend.url, REDIS_URL=redis_url, **values)
    app = App.from_settings(settings)
    try:
        return app.dispatcher(Mode.QUEUE).tick()
    finally:
        app.close()


def rq_command() -> list[str]:
    """The real `rq` CLI of this environment, as operators run it."""
    script = Path(PYTHON).with_name("rq")
    return [str(script)] if script.exists() else [PYTHON, "-m", "rq.cli"]


def rq_info(redis_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*rq_command(), "info", "--url", redis_url, *args], capture_output=True, text=True, timeout=60, env=cli_env())
