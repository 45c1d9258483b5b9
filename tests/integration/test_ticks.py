"""Three ways to tick (crontab + cron-dispatch, dispatch --loop, rq-scheduler), one dispatcher.

Accidentally enabling several at once is harmless: the leases decide, so each user still runs once
per slot. Proved here with all three running at the same time as real processes.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from redis import Redis
from rq.job import Job

from dispatcher import tick
from tests.conftest import PYTHON, REPO_ROOT, Backend, cli_env
from tests.integration.helpers import real_now, wait_for

pytestmark = [pytest.mark.mysql, pytest.mark.redis, pytest.mark.slow]

QUEUE = "monitor-user-tasks"


def test_installing_the_tick_twice_leaves_one_entry(redis_conn: Redis) -> None:
    from rq_scheduler import Scheduler

    tick.install(redis_conn, QUEUE)
    status = tick.install(redis_conn, QUEUE, cron="*/2 * * * *")

    entries = [job.id for job in Scheduler(queue_name=QUEUE, connection=redis_conn).get_jobs()]
    assert entries == [tick.TICK_JOB_ID]
    assert (status.installed, status.cron) == (True, "*/2 * * * *")
    assert tick.uninstall(redis_conn, QUEUE) is True
    assert tick.status(redis_conn, QUEUE).installed is False


def test_a_bad_cron_expression_is_refused(redis_conn: Redis) -> None:
    from core.exceptions import InvalidInput

    with pytest.raises(InvalidInput, match="cron"):
        tick.install(redis_conn, QUEUE, cron="every minute")


def rqscheduler_cmd() -> list[str]:
    script = Path(PYTHON).with_name("rqscheduler")
    return [str(script)] if script.exists() else [PYTHON, "-c", "from rq_scheduler.scripts.rqscheduler import main; main()"]


def test_all_three_ticks_at_once_still_run_each_user_once(mysql_backend: Backend, redis_url: str, redis_conn: Redis, tmp_path: Path) -> None:
    from rq_scheduler import Scheduler

    mysql_backend.clock.moment = real_now(mysql_backend)
    users = mysql_backend.add_schedules(300, interval=60)
    env = cli_env(DATABASE_URL=mysql_backend.url, REDIS_URL=redis_url, MONITOR_TASK="tests.tasks:recording_task",
                  MONITOR_TEST_DIR=str(tmp_path), DISPATCH_CHUNK_SIZE="20", CRON_LOG_LEVEL="WARNING")
    tick.install(redis_conn, QUEUE)
    redis_conn.zadd(Scheduler.scheduled_jobs_key, {tick.TICK_JOB_ID: 0})  # make the tick due now

    def background(*cmd: str) -> subprocess.Popen:
        # Output to a file, not a pipe nobody reads: a chatty worker would block on a full pipe.
        out = open(tmp_path / f"{len(os.listdir(tmp_path))}.log", "w")
        return subprocess.Popen(list(cmd), env=env, stdout=out, stderr=subprocess.STDOUT)

    cli_cmd = [PYTHON, "-m", "monitor_scheduler.cli"]
    processes = [
        background(*rqscheduler_cmd(), "--url", redis_url, "--interval", "1"),
        background(*cli_cmd, "dispatch", "--loop", "--every", "1s", "--mode", "queue"),
        background(*cli_cmd, "worker", "--concurrency", "2"),
    ]
    try:
        cron_env = dict(env, CRON_DISPATCH_LOCK=str(tmp_path / "cron.lock"))
        if not (REPO_ROOT / ".venv" / "bin" / "python").exists():
            cron_env["MONITOR_SCHEDULER_PYTHON"] = PYTHON
        for _ in range(3):  # crontab would do this once a minute
            subprocess.run([str(REPO_ROOT / "scripts" / "cron-dispatch"), "--mode", "queue"], env=cron_env, timeout=60, capture_output=True)
        log = tmp_path / "runs.log"
        wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 300, 90, "every user to run")
        wait_for(lambda: redis_conn.hget(Job.key_for(tick.TICK_JOB_ID), "status") in (b"finished", None) and redis_conn.exists(Job.key_for(tick.TICK_JOB_ID)), 30, "the tick job to have run")
        time.sleep(2)  # let any duplicate show itself
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()

    runs = Counter(line.split()[0] for line in (tmp_path / "runs.log").read_text().splitlines())
    assert set(runs) == set(users)
    assert max(runs.values()) == 1, "a user ran twice for one slot"
    assert redis_conn.hget(Job.key_for(tick.TICK_JOB_ID), "status") == b"finished", "rq-scheduler's pass ran"
