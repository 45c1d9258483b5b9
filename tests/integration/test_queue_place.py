"""A run waiting in the queue keeps its place, however long the wait (issue 9, part 1).

Given runs enqueued in RQ, when their lease expires before a worker reaches them, then a dispatch
pass asks RQ (one pipeline per batch) whether each job still lives: a waiting job keeps its place
and its lease is extended under the same token; only a job that is really gone (Redis lost it, it
was deleted, or it started long ago and its worker stopped renewing) is taken over, recorded lost
once and retried. On SQLite and MariaDB, with a fixed clock and a real Redis.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from typing_extensions import override
from redis import Redis
from rq import Queue
from rq.job import JobStatus
from rq.utils import utcformat

from core.domain import ClaimedRun, RunStatus, Trigger
from core.exceptions import LeaseHeld
from core.executor import Runner
from core.settings import Settings
from dispatcher.enqueue import RqEnqueuer, job_id_for
from dispatcher.jobspec import run_from_job_args
from dispatcher.service import Dispatcher, DispatchPolicy
from dispatcher.sinks import QueueSink
from tests.conftest import Backend

pytestmark = pytest.mark.redis

QUEUE = "monitor-user-tasks"
LEASE = timedelta(minutes=15)  # DISPATCH_LOCK_TTL's default


def queue_dispatcher(backend: Backend, redis_url: str, redis_conn: Redis) -> tuple[Dispatcher, Settings]:
    cfg = backend.settings(REDIS_URL=redis_url)
    return Dispatcher.for_queue(cfg, backend.engine, backend.clock, redis_conn), cfg


def run_of(job_args: Sequence[Any]) -> ClaimedRun:
    """The run a worker reconstructs from the job's arguments."""
    return run_from_job_args(*job_args)[0]


def test_an_expired_lease_whose_job_waits_in_the_queue_keeps_its_place(backend: Backend, redis_url: str, redis_conn: Redis) -> None:
    users = backend.add_schedules(3)
    dispatcher, cfg = queue_dispatcher(backend, redis_url, redis_conn)
    assert dispatcher.tick().enqueued == 3
    queue = Queue(QUEUE, connection=redis_conn)
    job_ids = queue.job_ids
    tokens = {user: backend.schedule(user).locked_by for user in users}

    backend.clock.advance(minutes=20)  # the jobs waited longer than their lease
    summary = dispatcher.tick()

    assert (summary.claimed, summary.kept, summary.enqueued) == (0, 3, 0)
    assert queue.job_ids == job_ids, "the same jobs, in the same places"
    for user in users:
        row = backend.schedule(user)
        assert (row.locked_by, row.attempt) == (tokens[user], 1), "the lease is extended, not taken over"
        assert row.locked_until == backend.clock.moment + LEASE
    assert backend.runs() == [], "nothing recorded lost or skipped"

    # When a worker reaches the job at last, its lease is still its own: the run succeeds.
    job = queue.fetch_job(job_ids[0])
    assert job is not None
    result = Runner(backend.engine, cfg, backend.clock, lambda user_id, context: None).execute(run_of(job.args))
    assert result.status is RunStatus.SUCCEEDED
    assert dispatcher.tick().claimed == 0, "kept jobs are not enqueued a second time"
    assert len(queue.job_ids) == 3


def test_a_run_whose_job_is_gone_is_taken_over_once_and_retried(backend: Backend, redis_url: str, redis_conn: Redis) -> None:
    users = backend.add_schedules(2)
    dispatcher, _ = queue_dispatcher(backend, redis_url, redis_conn)
    assert dispatcher.tick().enqueued == 2
    slots = {user: backend.schedule(user).run_slot for user in users}
    redis_conn.flushdb()  # Redis restarted without its data

    backend.clock.advance(minutes=16)
    summary = dispatcher.tick()

    assert (summary.claimed, summary.kept, summary.enqueued) == (2, 0, 2)
    lost = backend.runs()
    assert sorted((r.user_id, r.status, r.attempt) for r in lost) == [(u, "lost", 1) for u in users]
    for user in users:
        row = backend.schedule(user)
        assert (row.attempt, row.run_slot) == (2, slots[user]), "the same slot, retried"
    queued = Queue(QUEUE, connection=redis_conn).get_jobs()
    assert sorted(run_of(job.args).user_id for job in queued) == users and {run_of(job.args).attempt for job in queued} == {2}

    assert dispatcher.tick().claimed == 0
    assert len(backend.runs()) == 2, "recorded lost once"


@pytest.mark.parametrize(("started_ago", "kept"), [(timedelta(seconds=1), True), (timedelta(minutes=5), False)], ids=["just-started", "started-long-ago"])
def test_a_started_job_whose_lease_lapsed_is_taken_over_unless_it_just_started(
    backend: Backend, redis_url: str, redis_conn: Redis, started_ago: timedelta, kept: bool
) -> None:
    """A worker renews the lease first thing when it starts a job, then every third of the lease:
    a started job with an expired lease is alive only in the moment before that first renewal."""
    [user] = backend.add_schedules(1)
    dispatcher, _ = queue_dispatcher(backend, redis_url, redis_conn)
    assert dispatcher.tick().enqueued == 1
    row = backend.schedule(user)
    assert row.locked_by is not None and row.run_slot is not None
    job_key = Queue(QUEUE, connection=redis_conn).job_class.key_for(
        job_id_for(ClaimedRun(user, row.run_slot, row.attempt, row.locked_by, Trigger.SCHEDULE, row.run_slot))
    )
    backend.clock.advance(minutes=16)
    started_at = (backend.clock.moment - started_ago).replace(tzinfo=None)
    redis_conn.hset(job_key, mapping={"status": JobStatus.STARTED.value, "started_at": utcformat(started_at)})

    summary = dispatcher.tick()

    assert (summary.kept, summary.claimed) == ((1, 0) if kept else (0, 1))
    assert [r.status for r in backend.runs(user)] == ([] if kept else ["lost"])


def test_run_now_refuses_a_user_whose_job_waits_in_the_queue(backend: Backend, redis_url: str, redis_conn: Redis) -> None:
    [user] = backend.add_schedules(1)
    dispatcher, _ = queue_dispatcher(backend, redis_url, redis_conn)
    assert dispatcher.tick().enqueued == 1
    backend.clock.advance(minutes=16)

    with pytest.raises(LeaseHeld) as refused:
        dispatcher.run_user_now(user)
    assert refused.value.queued
    assert len(Queue(QUEUE, connection=redis_conn).job_ids) == 1, "not queued a second time"

    redis_conn.flushdb()  # the job is gone: now a manual run takes the user over
    assert dispatcher.run_user_now(user).enqueued == 1
    assert [r.status for r in backend.runs(user)] == ["lost"]


class BusyQueueSink(QueueSink):
    """A queue sink that lets something else happen while it asks RQ about parked runs."""

    def __init__(self, enqueuer: RqEnqueuer, meanwhile: Callable[[], object]) -> None:
        super().__init__(enqueuer, chunk_size=100, max_depth=10_000)
        self.meanwhile = meanwhile

    @override
    def alive(self, parked: Sequence[ClaimedRun], now: datetime) -> set[str]:
        self.meanwhile()
        return super().alive(parked, now)


def test_run_now_takes_over_only_the_lease_whose_job_it_asked_about(backend: Backend, redis_url: str, redis_conn: Redis) -> None:
    """Run-now decides on the lease it claimed, not on a row read earlier: while it asks RQ whether
    the expired run's job lives, a pass whose "now" is older (a long pass) takes the lost run over
    and enqueues its retry. That retry's lease has expired by run-now's clock, but its job waits in
    the queue: it keeps its place, and run-now refuses."""
    [user] = backend.add_schedules(1)
    dispatcher, cfg = queue_dispatcher(backend, redis_url, redis_conn)
    assert dispatcher.tick().enqueued == 1
    redis_conn.flushdb()  # the first run's job is gone
    pass_now = backend.clock.moment + timedelta(minutes=20)
    backend.clock.advance(minutes=40)
    slow_pass = queue_dispatcher(backend, redis_url, redis_conn)[0]
    busy = Dispatcher(backend.engine, backend.clock, DispatchPolicy.from_settings(cfg),
                      BusyQueueSink(RqEnqueuer(redis_conn, QUEUE, cfg.JOB_TIMEOUT), lambda: slow_pass.tick(now=pass_now)))

    with pytest.raises(LeaseHeld):
        busy.run_user_now(user)

    retry = backend.schedule(user)
    assert retry.attempt == 2 and retry.locked_until == pass_now + LEASE, "the slow pass's retry keeps its lease"
    assert [r.status for r in backend.runs(user)] == ["lost"], "the first run recorded lost once; the retry not at all"
    assert [run_of(job.args).attempt for job in Queue(QUEUE, connection=redis_conn).get_jobs()] == [2], "only the retry is queued"
