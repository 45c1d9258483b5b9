"""The worker's own Redis traffic (worker.outages.RidingOutRedis), on a real Redis: the round trips
a no-op job costs, a worker whose Redis lost its data registering again, and the pubsub thread
ending at once when the worker stops."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from redis import Redis
from redis.connection import Connection
from rq import Queue, SimpleWorker
from rq.worker import BaseWorker
from rq.worker_registration import get_keys

from worker.outages import StopsPubsubPromptly
from worker.pool import NotingSimpleWorker, NotingWorker
from worker.threaded import ThreadedWorker

pytestmark = [pytest.mark.redis]


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts what redis-py sends: one call per command or pipeline, i.e. per round trip."""
    count = [0]
    send = Connection.send_packed_command

    def counting(self: Connection, command: object, check_health: bool = True) -> None:
        count[0] += 1
        send(self, command, check_health)

    monkeypatch.setattr(Connection, "send_packed_command", counting)
    yield count


def _round_trips_per_job(cls: type[BaseWorker], redis_url: str, count: list[int]) -> float:
    """Round trips of `jobs` no-op jobs through a burst worker, per job, start-up excluded (the
    difference between 30 and 10 jobs)."""
    spent = []
    for jobs in (10, 30):
        connection = Redis.from_url(redis_url)
        connection.flushdb()
        queue = Queue("round-trips", connection=connection)
        for i in range(jobs):
            queue.enqueue("worker.tasks.noop_task", f"user-{i}", None)
        count[0] = 0
        cls([queue], connection=connection).work(burst=True, logging_level="WARNING")
        spent.append(count[0])
        connection.close()
    return (spent[1] - spent[0]) / 20


def test_a_no_op_job_costs_our_worker_half_the_redis_round_trips_of_bare_rq(redis_url: str, round_trips: list[int]) -> None:
    # Bare RQ but for its exit, which could wait a minute (worker.outages.StopsPubsubPromptly):
    # teardown is outside the per-job difference this counts.
    bare = _round_trips_per_job(type("BareRQ", (StopsPubsubPromptly, SimpleWorker), {}), redis_url, round_trips)
    ours = _round_trips_per_job(NotingSimpleWorker, redis_url, round_trips)
    # Bare RQ 3.0 (and our worker before issue 16): 20 (four plain heartbeats of three round trips
    # each, two IDLE writes); ours: 11.
    assert ours <= 0.55 * bare, (ours, bare)


def test_a_worker_whose_redis_lost_its_data_registers_again_at_its_next_heartbeat(redis_conn: Redis) -> None:
    queue = Queue("lost", connection=redis_conn)
    worker = NotingSimpleWorker([queue], connection=redis_conn)
    worker.register_birth()
    worker.set_state("idle")
    redis_conn.flushdb()  # a Redis restarted without its data

    worker.heartbeat()

    assert get_keys(queue=queue) == {worker.key}
    stored = redis_conn.hgetall(worker.key)
    assert stored[b"state"] == b"idle" and b"birth" in stored and redis_conn.ttl(worker.key) > 0


@pytest.mark.parametrize("cls", [NotingSimpleWorker, NotingWorker, ThreadedWorker.with_threads(2)], ids=["simple", "fork", "threaded"])
def test_a_stopping_worker_ends_its_pubsub_thread_promptly_even_when_the_reply_is_read_first(
    redis_conn: Redis, cls: type[BaseWorker]
) -> None:
    """Given a worker subscribed to its channel whose pubsub thread reads the UNSUBSCRIBE reply
    before the stopping thread goes on (forced here by a pause after UNSUBSCRIBE is sent; a loaded
    host does it by itself, seen in CI), its unsubscribe (the last step of a warm shutdown) returns
    within seconds and the pubsub thread has ended. RQ's own order (UNSUBSCRIBE, then the stop
    request) left the thread in its 60-second wait for a subscription, and RQ waited for it (seen:
    SIGTERM'd workers not exiting within a minute)."""
    worker = cls([Queue("pubsub", connection=redis_conn)], connection=redis_conn)
    worker.subscribe()
    assert worker.pubsub is not None and worker.pubsub_thread is not None
    deadline = time.monotonic() + 10
    while not worker.pubsub.subscribed and time.monotonic() < deadline:
        time.sleep(0.01)
    send_unsubscribe = worker.pubsub.unsubscribe

    def unsubscribe_then_let_the_thread_read_the_reply(*args: object) -> object:
        sent = send_unsubscribe(*args)
        time.sleep(0.5)
        return sent

    worker.pubsub.unsubscribe = unsubscribe_then_let_the_thread_read_the_reply
    stopping = threading.Thread(target=worker.unsubscribe, daemon=True)
    stopping.start()
    stopping.join(10)
    assert not stopping.is_alive(), "unsubscribe still waits for the pubsub thread"
    worker.pubsub_thread.join(10)  # generous for a loaded host; the stuck wait is 60 s
    assert not worker.pubsub_thread.is_alive(), "the pubsub thread went on waiting for a subscription"
