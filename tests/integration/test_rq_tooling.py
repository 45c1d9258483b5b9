"""RQ's own tools on our jobs: the failed registry, `rq requeue`, rq-dashboard."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry

from tests.conftest import PYTHON, Backend, cli_env
from tests.integration.helpers import QUEUE, dispatch_once, rq_command, wait_for, worker_env

pytestmark = [pytest.mark.mysql, pytest.mark.redis, pytest.mark.slow]


def rq_cli(*args: str, redis_url: str) -> subprocess.CompletedProcess:
    return subprocess.run([*rq_command(), *args, "--url", redis_url], capture_output=True, text=True, timeout=60, env=cli_env())


def burst_worker(backend: Backend, redis_url: str, tmp_path: Path, task: str) -> subprocess.CompletedProcess:
    env = worker_env(backend, redis_url, tmp_path, task)
    return subprocess.run([PYTHON, "-m", "monitor_scheduler.cli", "worker", "--concurrency", "1", "--burst"], env=env, capture_output=True, text=True, timeout=120)


def test_a_requeued_failed_job_cannot_run_a_user_twice(mysql_now_backend: Backend, redis_url: str, redis_conn: Redis, tmp_path: Path) -> None:
    [user] = mysql_now_backend.add_schedules(1, interval=5)
    assert dispatch_once(mysql_now_backend, redis_url).enqueued == 1

    # A failure outside the task: a plain `rq worker` started with a broken MONITOR_TASK (our
    # `worker` command refuses to start with it). The RQ job fails, with the traceback in the
    # failed registry; the lease stays until it expires. (Our worker class: RQ's own may take a
    # minute to exit after its burst on a loaded host, worker.outages.RidingOutRedis.unsubscribe.)
    broken = worker_env(mysql_now_backend, redis_url, tmp_path, "tests.tasks:no_such_task")
    subprocess.run([*rq_command(), "worker", "--burst", "-w", "worker.pool.NotingSimpleWorker", "--url", redis_url, QUEUE],
                   env=broken, capture_output=True, timeout=120)
    registry = FailedJobRegistry(QUEUE, connection=redis_conn)
    [failed_id] = registry.get_job_ids()
    job = Queue(QUEUE, connection=redis_conn).fetch_job(failed_id)
    result = job.latest_result() if job is not None else None
    assert result is not None and "TaskImportError" in (result.exc_string or "")

    # The lease (3 s) runs out; the next pass records the lost run and enqueues attempt 2.
    wait_for(lambda: dispatch_once(mysql_now_backend, redis_url).enqueued, 15, "the retry to be enqueued", 0.3)
    # An operator requeues the old failed job anyway.
    requeue = rq_cli("requeue", "--queue", QUEUE, "--all", redis_url=redis_url)
    assert requeue.returncode == 0, requeue.stderr
    assert len(Queue(QUEUE, connection=redis_conn)) == 2

    burst_worker(mysql_now_backend, redis_url, tmp_path, "tests.tasks:recording_task")

    ran = (tmp_path / "runs.log").read_text().splitlines()
    assert len(ran) == 1 and ran[0].split()[2] == "2", "only the retry (attempt 2) ran the task"
    assert [r.status for r in mysql_now_backend.runs(user)] in (["lost", "skipped", "succeeded"], ["lost", "succeeded", "skipped"])
    assert mysql_now_backend.schedule(user).last_status == "succeeded"


def test_rq_dashboard_shows_our_queue_and_jobs(mysql_now_backend: Backend, redis_url: str, redis_conn: Redis) -> None:
    from rq_dashboard.cli import make_flask_app

    mysql_now_backend.add_schedules(3)
    assert dispatch_once(mysql_now_backend, redis_url).enqueued == 3
    job_id = Queue(QUEUE, connection=redis_conn).job_ids[0]
    app = make_flask_app(None, None, None, "")
    app.config["RQ_DASHBOARD_REDIS_URL"] = [redis_url]
    client = app.test_client()

    queues = client.get("/0/data/queues.json")
    assert queues.status_code == 200
    [ours] = [q for q in queues.get_json()["queues"] if q["name"] == QUEUE]
    assert ours["count"] == 3
    assert client.get(f"/0/view/jobs/{QUEUE}/queued/8/asc/1").status_code == 200
    job = client.get(f"/0/data/job/{job_id}.json")
    assert job.status_code == 200 and job.get_json()["id"] == job_id
    assert client.get(f"/0/view/job/{job_id}").status_code == 200


def test_metrics_report_queue_depth_and_failed_jobs_from_redis(mysql_now_backend: Backend, redis_url: str, redis_conn: Redis) -> None:
    from tests.behaviour.test_metrics import scrape

    mysql_now_backend.add_schedules(4)
    assert dispatch_once(mysql_now_backend, redis_url).enqueued == 4
    m = scrape(mysql_now_backend, redis=redis_conn, QUEUE_NAME=QUEUE)
    assert m[("monitor_scheduler_queue_depth", ())] == 4
    assert m[("monitor_scheduler_queue_failed_jobs", ())] == 0
    assert m[("monitor_scheduler_queue_up", ())] == 1
    dead = scrape(mysql_now_backend, redis=Redis.from_url("redis://127.0.0.1:1/0"), QUEUE_NAME=QUEUE)
    assert dead[("monitor_scheduler_queue_up", ())] == 0, "a dead Redis shows in the scrape instead of failing it"
