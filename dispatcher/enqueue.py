"""Putting claimed runs on the RQ queue: one Redis round trip per batch.

Job ids are derived from the run (user, slot, attempt), so a run has exactly one id; RQ 3 accepts
only letters, digits, `_` and `-` in ids and user ids may contain anything, so the user id is
base64url-encoded (its alphabet is exactly that set).

Why not `Queue.enqueue_many`: it builds a Job object and sends ~3 commands and ~40 arguments per
job, which was 75% of a dispatch pass (docs/performance.md). A batch is written instead by one Lua
script call: the job hashes, one RPUSH, the queue registered in RQ's set of queues, the depth
returned, all atomic. The result is ordinary RQ jobs (`rq info`, `rq requeue`, RQ workers,
rq-dashboard).

Nothing of RQ's storage layout is written down here: the key names come from RQ's own API (the
queue's `key`, the queue class's `redis_queues_keys`, the job class's key prefix, checked against
`Job.key_for`), and the fields every job of a batch shares come from one `Job.to_dict()` of a job
RQ builds for the batch's first run. Only the per-run fields (`PER_JOB_FIELDS`) are computed here;
a check at start compares them, and the key layout, with what RQ builds, and falls back to
`enqueue_many` (with a warning) if an RQ release makes them differ. tests/integration/
test_enqueue.py compares the whole keyspace the two paths write, so any other change in what RQ
writes fails CI.
"""

from __future__ import annotations

import base64
import logging
import pickle
import zlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.job import Job, JobStatus
from rq.utils import utcparse

from core.clock import epoch_ms
from core.exceptions import QueueUnavailable
from core.domain import ClaimedRun, Trigger
from dispatcher.jobspec import RUN_JOB, run_job_args

logger = logging.getLogger(__name__)

JOB_ID_PREFIX = "um"
# Fields that legitimately differ between two enqueues of the same run.
TIME_FIELDS = ("created_at", "enqueued_at")

# KEYS[1] = the queue's key, KEYS[2] = RQ's set of queue keys. ARGV[1] = the job-key prefix,
# ARGV[2] = k per-job field names, ARGV[3] = n shared field/value pairs, then the k names, the
# n pairs, then per job its id and its k values. Job keys are built in the script (prefix .. id),
# so this is for a single Redis, not Redis Cluster, like RQ.
_ENQUEUE_BATCH = """
local queue_key, queues_key = KEYS[1], KEYS[2]
local job_prefix = ARGV[1]
local per_job = tonumber(ARGV[2])
local shared_count = tonumber(ARGV[3])
local fields = {}
for j = 1, per_job do
  fields[2 * j - 1] = ARGV[3 + j]
  fields[2 * j] = ''
end
local first_shared = 4 + per_job
for i = first_shared, first_shared + 2 * shared_count - 1 do fields[#fields + 1] = ARGV[i] end
local ids = {}
for i = first_shared + 2 * shared_count, #ARGV, 1 + per_job do
  for j = 1, per_job do fields[2 * j] = ARGV[i + j] end
  redis.call('HSET', job_prefix .. ARGV[i], unpack(fields))
  ids[#ids + 1] = ARGV[i]
end
for i = 1, #ids, 1000 do
  redis.call('RPUSH', queue_key, unpack(ids, i, math.min(i + 999, #ids)))
end
redis.call('SADD', queues_key, queue_key)
return redis.call('LLEN', queue_key)
"""


def _as_stored(value: object) -> bytes:
    """How redis-py puts a value on the wire (a str-enum goes as its value)."""
    if isinstance(value, Enum):
        value = value.value
    return value if isinstance(value, bytes) else str(value).encode()


_WAITING = frozenset({JobStatus.QUEUED.value, JobStatus.DEFERRED.value, JobStatus.SCHEDULED.value})


def _started_since(started_at: bytes | None, now: datetime) -> timedelta:
    if not started_at:
        return timedelta.max
    try:
        started = utcparse(started_at.decode()).replace(tzinfo=None)
    except ValueError:
        return timedelta.max
    return now - started


def encode_user_id(user_id: str) -> str:
    return base64.urlsafe_b64encode(user_id.encode("utf-8")).decode("ascii").rstrip("=")


def decode_user_id(encoded: str) -> str:
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")


def job_id_for(run: ClaimedRun) -> str:
    """`um-<slot ms>-<attempt>-<base64url user id>`: one id per run, valid for RQ."""
    return f"{JOB_ID_PREFIX}-{epoch_ms(run.slot)}-{run.attempt}-{encode_user_id(run.user_id)}"


def job_description(run: ClaimedRun) -> str:
    return f"monitor user={run.user_id!r} slot={run.slot:%Y-%m-%dT%H:%M:%S.%f}Z attempt={run.attempt}"


def job_data(run: ClaimedRun) -> bytes:
    """What RQ's default serializer stores: the pickled (function, instance, args, kwargs), zlib'd."""
    return zlib.compress(pickle.dumps((RUN_JOB, None, run_job_args(run), {}), protocol=pickle.HIGHEST_PROTOCOL))


# The job-hash fields that differ from run to run, computed by per_job_values() without building a
# Job (the per-run cost). Every other field of a batch comes from RQ (RqEnqueuer.shared_fields).
PER_JOB_FIELDS = ("data", "description")


def per_job_values(run: ClaimedRun) -> tuple[bytes, str]:
    """The values of PER_JOB_FIELDS for `run`, in that order."""
    return job_data(run), job_description(run)


# Two runs that differ in everything a run has: the start-up check builds both with RQ.
_SAMPLE_RUNS = (
    ClaimedRun("sample-a", datetime(2026, 1, 1), 1, "token-a", Trigger.SCHEDULE, datetime(2026, 1, 1)),
    ClaimedRun("sample b ü/?", datetime(2027, 2, 3, 4, 5, 6, 789000), 3, "token-b", Trigger.MANUAL, datetime(2027, 2, 3)),
)


class RqEnqueuer:
    def __init__(self, connection: Redis, queue_name: str, job_timeout: int) -> None:
        self.connection = connection
        self.queue = Queue(queue_name, connection=connection, default_timeout=job_timeout)
        self.job_timeout = job_timeout
        self._script = connection.register_script(_ENQUEUE_BATCH)
        try:
            self.job_key_prefix: str = self.queue.job_class.redis_job_namespace_prefix
            problem = self.batch_differs_from_rq()
        except (AttributeError, TypeError, ValueError) as exc:  # an RQ release moved an API used here
            self.job_key_prefix, problem = "", f"{type(exc).__name__}: {exc}"
        self.batched = problem is None
        if problem:
            logger.warning("this RQ version writes jobs differently (%s): enqueueing with Queue.enqueue_many (slower)", problem)

    def rq_job(self, run: ClaimedRun) -> Job:
        """The job RQ's enqueue would save for this run, built by RQ (no I/O)."""
        job = self.queue.create_job(
            RUN_JOB, args=run_job_args(run), job_id=job_id_for(run), timeout=self.job_timeout,
            description=job_description(run), status=JobStatus.QUEUED,
        )
        job.enqueued_at = job.created_at  # RQ stamps it when it enqueues
        return job

    def shared_fields(self, run: ClaimedRun) -> dict[str, bytes]:
        """The job-hash fields every job of a batch shares: RQ's own to_dict() of the job for the
        batch's first run `run`, less the per-run fields, as they go on the wire."""
        return {key: _as_stored(value) for key, value in self.rq_job(run).to_dict().items() if key not in PER_JOB_FIELDS}

    def batch_hash(self, run: ClaimedRun, shared: dict[str, bytes]) -> dict[str, bytes]:
        """What the script writes for `run` in a batch sharing `shared`."""
        return {**shared, **{key: _as_stored(value) for key, value in zip(PER_JOB_FIELDS, per_job_values(run), strict=True)}}

    def batch_differs_from_rq(self) -> str | None:
        """Why the batched script would not write what RQ writes, or None if it would (no I/O).

        The script builds job keys as prefix + id, and writes one run's shared fields for every
        run of its batch: so RQ's `key_for` must be prefix + id, and a job written with another
        run's shared fields must equal, field for field but the time stamps, the job RQ builds."""
        for run in _SAMPLE_RUNS:
            job_id = job_id_for(run)
            if self.queue.job_class.key_for(job_id) != self.job_key_prefix + job_id:
                return f"job key {self.queue.job_class.key_for(job_id)!r} is not prefix {self.job_key_prefix!r} + id"
        first, other = _SAMPLE_RUNS
        ours = self.batch_hash(other, self.shared_fields(first))
        theirs = {key: _as_stored(value) for key, value in self.rq_job(other).to_dict().items()}
        if set(ours) != set(theirs):
            return f"fields {sorted(set(ours) ^ set(theirs))} are not written by both"
        differing = sorted(key for key in ours if key not in TIME_FIELDS and ours[key] != theirs[key])
        return f"fields {differing} differ" if differing else None

    def depth(self) -> int:
        """Jobs waiting in the queue; also the fail-fast check that Redis answers."""
        try:
            return self.queue.count
        except RedisError as exc:
            raise QueueUnavailable(f"Redis unreachable: {exc}") from exc

    def waiting_or_starting(self, runs: Sequence[ClaimedRun], *, now: datetime, start_grace: timedelta) -> set[str]:
        """The users among `runs` (expired leases) whose job is still alive in RQ, read in one
        round trip: waiting in the queue (RQ's status queued, deferred or scheduled), or started
        less than `start_grace` ago (the worker's first lease renewal is on its way). A job that
        is gone (Redis lost it, deleted by hand), finished, failed, or started long ago while its
        lease lapsed (the worker's process died: its lease keeper stopped renewing) is not."""
        if not runs:
            return set()
        try:
            with self.connection.pipeline(transaction=False) as pipe:
                for run in runs:
                    pipe.hmget(self.queue.job_class.key_for(job_id_for(run)), "status", "started_at")
                answers = pipe.execute()
        except RedisError as exc:
            raise QueueUnavailable(f"Redis failed while checking queued jobs: {exc}") from exc
        alive = set()
        for run, (status, started_at) in zip(runs, answers):
            state = (status or b"").decode()
            if state in _WAITING or (state == JobStatus.STARTED.value and _started_since(started_at, now) < start_grace):
                alive.add(run.user_id)
        return alive

    def enqueue(self, claimed: Sequence[ClaimedRun]) -> int:
        """Enqueue the batch atomically (all of it lands, or none); return the queue's depth
        afterwards, read in the same round trip, for back-pressure."""
        try:
            if self.batched:
                return self._enqueue_batched(claimed)
            return self._enqueue_many(claimed)
        except RedisError as exc:
            raise QueueUnavailable(f"Redis failed while enqueueing: {exc}") from exc

    def _enqueue_batched(self, claimed: Sequence[ClaimedRun]) -> int:
        if not claimed:
            return int(self.connection.llen(self.queue.key))
        shared = self.shared_fields(claimed[0])
        argv: list[Any] = [self.job_key_prefix, len(PER_JOB_FIELDS), len(shared), *PER_JOB_FIELDS]
        for pair in shared.items():
            argv += pair
        for run in claimed:
            argv.append(job_id_for(run))
            argv += per_job_values(run)
        return int(self._script(keys=[self.queue.key, self.queue.redis_queues_keys], args=argv))

    def _enqueue_many(self, claimed: Sequence[ClaimedRun]) -> int:
        datas = [
            Queue.prepare_data(RUN_JOB, args=run_job_args(run), job_id=job_id_for(run), timeout=self.job_timeout, description=job_description(run))
            for run in claimed
        ]
        with self.connection.pipeline() as pipe:
            self.queue.enqueue_many(datas, pipeline=pipe)
            pipe.llen(self.queue.key)
            return int(pipe.execute()[-1])
