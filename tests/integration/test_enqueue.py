"""The batched enqueue writes the very jobs RQ would: same hash, same queue, RQ runs them."""

from __future__ import annotations

from datetime import datetime

import pytest
from redis import Redis
from rq import Queue

from dispatcher.enqueue import RqEnqueuer, job_id_for
from core.domain import ClaimedRun, Trigger

pytestmark = pytest.mark.redis

QUEUE = "monitor-user-tasks"


def runs(count: int) -> list[ClaimedRun]:
    slot = datetime(2026, 1, 5, 12, 0, 0, 250000)
    return [ClaimedRun(f"user {i} ü/?", slot, 1, "tok", Trigger.SCHEDULE, slot) for i in range(count)]


def test_the_batched_enqueue_is_used_with_this_rq(redis_conn: Redis) -> None:
    assert RqEnqueuer(redis_conn, QUEUE, 600).batched, "RQ's job hash changed: see dispatcher/enqueue.py"


def test_batched_jobs_are_field_for_field_what_rq_writes(redis_conn: Redis) -> None:
    enqueuer = RqEnqueuer(redis_conn, QUEUE, 600)
    [run] = runs(1)
    key = f"rq:job:{job_id_for(run)}"

    assert enqueuer._enqueue_many([run]) == 1
    expected = redis_conn.hgetall(key)
    redis_conn.flushdb()
    assert enqueuer._enqueue_batched([run]) == 1
    written = redis_conn.hgetall(key)

    assert set(written) == set(expected)
    assert {k: v for k, v in written.items() if k not in (b"created_at", b"enqueued_at")} == {
        k: v for k, v in expected.items() if k not in (b"created_at", b"enqueued_at")
    }
    assert redis_conn.smembers("rq:queues") == {f"rq:queue:{QUEUE}".encode()}


def test_a_batch_lands_in_order_and_reports_the_depth(redis_conn: Redis) -> None:
    enqueuer = RqEnqueuer(redis_conn, QUEUE, 600)
    batch = runs(2500)  # more than one RPUSH chunk inside the script
    assert enqueuer.enqueue(batch[:5]) == 5
    assert enqueuer.enqueue(batch[5:]) == 2500
    queue = Queue(QUEUE, connection=redis_conn)
    assert queue.job_ids == [job_id_for(r) for r in batch]
    job = queue.fetch_job(job_id_for(batch[7]))
    assert job is not None
    assert job.func_name == "worker.jobs.run_user_monitor" and job.args[0] == "user 7 ü/?"
    assert job.get_status() == "queued" and job.timeout == 600
