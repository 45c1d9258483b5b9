"""The batched enqueue writes the very jobs RQ would: the same keys, the same contents, RQ runs them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.utils import as_text

from dispatcher.enqueue import TIME_FIELDS, RqEnqueuer, job_id_for
from dispatcher.jobspec import RUN_JOB, run_from_job_args
from core.domain import ClaimedRun, Trigger

pytestmark = pytest.mark.redis

QUEUE = "monitor-user-tasks"
BENCH_REDIS_DB = 9  # scripts/bench/common.py's database on a shared Redis


def runs(count: int, *, attempt: int = 1, trigger: Trigger = Trigger.SCHEDULE) -> list[ClaimedRun]:
    slot = datetime(2026, 1, 5, 12, 0, 0, 250000)
    return [ClaimedRun(f"user {i} ü/?", slot, attempt, "tok", trigger, slot) for i in range(count)]


@pytest.fixture
def other_redis_conn(redis_conn: Redis, redis_url: str) -> Iterator[Redis]:
    """Another flushed database of the same Redis server."""
    taken = (redis_conn.connection_pool.connection_kwargs.get("db", 0), BENCH_REDIS_DB)
    db = next(db for db in range(16) if db not in taken)
    conn = Redis.from_url(urlunsplit(urlsplit(redis_url)._replace(path=f"/{db}")))
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


def keyspace(conn: Redis) -> dict[bytes, tuple[str, int, object]]:
    """Every key with its type, whether it expires, and its whole contents (of the time-stamp fields
    of a hash, only that they are there).

    A type this does not know fails the test: a new kind of key from RQ needs a look."""
    dump: dict[bytes, tuple[str, int, object]] = {}
    for key in sorted(conn.scan_iter(count=1000)):
        kind = as_text(conn.type(key))
        contents: object
        if kind == "hash":
            fields = conn.hgetall(key)
            assert all(fields.get(name.encode()) for name in TIME_FIELDS if name.encode() in fields), f"empty time stamp in {key!r}"
            contents = {name: (b"<time>" if as_text(name) in TIME_FIELDS else value) for name, value in fields.items()}
        elif kind == "list":
            contents = conn.lrange(key, 0, -1)
        elif kind == "set":
            contents = conn.smembers(key)
        elif kind == "zset":
            contents = conn.zrange(key, 0, -1, withscores=True)
        elif kind == "string":
            contents = conn.get(key)
        elif kind == "stream":
            contents = [fields for _, fields in conn.xrange(key) or []]
        else:
            raise AssertionError(f"{key!r} is a {kind}: teach keyspace() to compare it")
        dump[key] = (kind, min(conn.ttl(key), 1), contents)  # -1: no expiry, 1: expires
    return dump


def assert_same_keyspace(expected_conn: Redis, written_conn: Redis) -> None:
    expected, written = keyspace(expected_conn), keyspace(written_conn)
    assert sorted(written) == sorted(expected), "the two paths wrote different keys"
    for key, (kind, expires, contents) in expected.items():
        assert written[key][:2] == (kind, expires), f"{key!r}: type/expiry differ"
        if kind == "hash":
            only_one_side = set(written[key][2]) ^ set(contents)  # type: ignore[call-overload]
            assert not only_one_side, f"{key!r}: fields {sorted(only_one_side)} are written by one path only"
        assert written[key][2] == contents, f"{key!r}: the contents differ"


def enqueue_both_ways(rq_conn: Redis, batched_conn: Redis) -> None:
    """The same batches of runs (fresh and retried, scheduled and manual, an empty user id), through
    RQ's enqueue_many (the fallback) into `rq_conn` and through the batched script into `batched_conn`."""
    batches = [runs(3), runs(2, attempt=2, trigger=Trigger.MANUAL), [ClaimedRun("", datetime(2026, 2, 1), 7, "t", Trigger.SCHEDULE, datetime(2026, 2, 1))]]
    batched = RqEnqueuer(batched_conn, QUEUE, 600)
    assert batched.batched, "the start-up check fell back to enqueue_many: see the warning it logged"
    rq_path = RqEnqueuer(rq_conn, QUEUE, 600)
    rq_path.batched = False
    assert [rq_path.enqueue(batch) for batch in batches] == [3, 5, 6]
    assert [batched.enqueue(batch) for batch in batches] == [3, 5, 6]


def test_the_batched_enqueue_is_used_with_this_rq(redis_conn: Redis) -> None:
    assert RqEnqueuer(redis_conn, QUEUE, 600).batched, "RQ's job hash changed: see dispatcher/enqueue.py"


def test_the_batched_keyspace_is_exactly_what_enqueue_many_writes(redis_conn: Redis, other_redis_conn: Redis) -> None:
    # Given two empty databases
    # When one gets a few batches through enqueue_many and the other the same through the script
    enqueue_both_ways(redis_conn, other_redis_conn)
    # Then both hold the same keys, of the same types and expiry, with the same contents
    assert_same_keyspace(redis_conn, other_redis_conn)


def test_the_keyspace_comparison_sees_a_single_missing_field(redis_conn: Redis, other_redis_conn: Redis) -> None:
    enqueue_both_ways(redis_conn, other_redis_conn)
    other_redis_conn.hdel(Job.key_for(job_id_for(runs(1)[0])), "worker_name")
    with pytest.raises(AssertionError, match="worker_name"):
        assert_same_keyspace(redis_conn, other_redis_conn)


def test_keys_follow_rqs_key_prefixes(redis_conn: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an RQ whose job and queue keys live elsewhere
    monkeypatch.setattr(Job, "redis_job_namespace_prefix", "elsewhere:job:")
    monkeypatch.setattr(Queue, "redis_queue_namespace_prefix", "elsewhere:queue:")
    monkeypatch.setattr(Queue, "redis_queues_keys", "elsewhere:queues")
    enqueuer = RqEnqueuer(redis_conn, QUEUE, 600)
    assert enqueuer.batched

    # When a batch is enqueued
    [run] = runs(1)
    assert enqueuer.enqueue([run]) == 1

    # Then it is where that RQ looks, and nowhere else
    assert sorted(redis_conn.keys()) == [b"elsewhere:job:" + job_id_for(run).encode(), b"elsewhere:queue:" + QUEUE.encode(), b"elsewhere:queues"]
    queue = Queue(QUEUE, connection=redis_conn)
    assert queue.job_ids == [job_id_for(run)] and Queue.all(connection=redis_conn) == [queue]
    assert run_from_job_args(*queue.fetch_job(job_id_for(run)).args)[0] == run  # type: ignore[union-attr]


def test_a_job_key_rq_does_not_build_as_prefix_plus_id_falls_back_to_enqueue_many(redis_conn: Redis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(Job, "key_for", classmethod(lambda cls, job_id: f"{cls.redis_job_namespace_prefix}{{{job_id}}}"))
    enqueuer = RqEnqueuer(redis_conn, QUEUE, 600)
    assert not enqueuer.batched
    assert "enqueue_many" in caplog.text and "is not prefix" in caplog.text
    [run] = runs(1)
    assert enqueuer.enqueue([run]) == 1
    assert redis_conn.exists(Job.key_for(job_id_for(run)))


def test_a_field_rq_writes_per_job_falls_back_to_enqueue_many(redis_conn: Redis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # Given an RQ that writes the job's id into its hash (a field that differs from job to job)
    to_dict = Job.to_dict
    monkeypatch.setattr(Job, "to_dict", lambda self, **kw: {**to_dict(self, **kw), "echo_id": self.id})

    # Then the batch, whose shared fields come from one job, is not used
    assert not RqEnqueuer(redis_conn, QUEUE, 600).batched
    assert "['echo_id'] differ" in caplog.text


def test_an_rq_without_the_key_prefix_attribute_falls_back_to_enqueue_many(redis_conn: Redis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delattr(Job, "redis_job_namespace_prefix")
    assert not RqEnqueuer(redis_conn, QUEUE, 600).batched
    assert "AttributeError" in caplog.text and "enqueue_many" in caplog.text


def test_a_batch_lands_in_order_and_reports_the_depth(redis_conn: Redis) -> None:
    enqueuer = RqEnqueuer(redis_conn, QUEUE, 600)
    batch = runs(2500)  # more than one RPUSH chunk inside the script
    assert enqueuer.enqueue(batch[:5]) == 5
    assert enqueuer.enqueue(batch[5:]) == 2500
    queue = Queue(QUEUE, connection=redis_conn)
    assert queue.job_ids == [job_id_for(r) for r in batch]
    job = queue.fetch_job(job_id_for(batch[7]))
    assert job is not None and job.enqueued_at is not None
    assert job.func_name == RUN_JOB and run_from_job_args(*job.args)[0] == batch[7]
    assert job.get_status() == "queued" and job.timeout == 600
    assert job.created_at <= job.enqueued_at <= job.created_at + timedelta(seconds=60)
