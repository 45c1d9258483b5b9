"""Putting claimed runs on the RQ queue: one Redis round trip per batch.

Job ids are derived from the run (user, slot, attempt), so a run has exactly one id; RQ 3 accepts
only letters, digits, `_` and `-` in ids and user ids may contain anything, so the user id is
base64url-encoded (its alphabet is exactly that set).

Why not `Queue.enqueue_many`: it builds a Job object and sends ~3 commands and ~40 arguments per
job, which was 75% of a dispatch pass (docs/performance.md). A batch is written instead by one Lua
script call: the same job hash RQ writes (3 arguments per job, the rest shared by the batch), one
RPUSH, the queue registered in `rq:queues`, the depth returned, all atomic. The result is ordinary
RQ jobs (`rq info`, `rq requeue`, RQ workers, rq-dashboard). Because this mirrors RQ's own hash
layout, the enqueuer checks at start that RQ's `Job.to_dict()` still has exactly these fields, and
falls back to `enqueue_many` (with a warning) if an RQ release changes them.
"""

from __future__ import annotations

import base64
import logging
import pickle
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.job import JobStatus
from rq.utils import utcformat

from core.clock import epoch_ms
from core.exceptions import QueueUnavailable
from core.domain import ClaimedRun, Trigger

logger = logging.getLogger(__name__)

JOB_FUNCTION = "worker.jobs.run_user_monitor"
JOB_ID_PREFIX = "um"
# Fields RQ writes as empty strings for a plain job (no callbacks, not started, no group).
EMPTY_JOB_FIELDS = (
    "success_callback_name", "failure_callback_name", "stopped_callback_name",
    "started_at", "ended_at", "last_heartbeat", "worker_name", "group_id",
)
# Fields that legitimately differ between two enqueues of the same run.
TIME_FIELDS = ("created_at", "enqueued_at")

# KEYS[1] = queue key. ARGV = n, n shared field/value pairs, then (job id, data, description) per job.
# (Job keys are built in the script, so this is for a single Redis, not Redis Cluster, like RQ.)
_ENQUEUE_BATCH = """
local queue_key = KEYS[1]
local shared_count = tonumber(ARGV[1])
local shared = {}
for i = 2, 1 + 2 * shared_count do shared[#shared + 1] = ARGV[i] end
local ids = {}
for i = 2 + 2 * shared_count, #ARGV, 3 do
  local id = ARGV[i]
  redis.call('HSET', 'rq:job:' .. id, 'data', ARGV[i + 1], 'description', ARGV[i + 2], unpack(shared))
  ids[#ids + 1] = id
end
for i = 1, #ids, 1000 do
  redis.call('RPUSH', queue_key, unpack(ids, i, math.min(i + 999, #ids)))
end
redis.call('SADD', 'rq:queues', queue_key)
return redis.call('LLEN', queue_key)
"""


def _as_stored(value: object) -> bytes:
    """How redis-py puts a value on the wire (a str-enum goes as its value)."""
    if isinstance(value, Enum):
        value = value.value
    return value if isinstance(value, bytes) else str(value).encode()


def encode_user_id(user_id: str) -> str:
    return base64.urlsafe_b64encode(user_id.encode("utf-8")).decode("ascii").rstrip("=")


def decode_user_id(encoded: str) -> str:
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")


def job_id_for(run: ClaimedRun) -> str:
    """`um-<slot ms>-<attempt>-<base64url user id>`: one id per run, valid for RQ."""
    return f"{JOB_ID_PREFIX}-{epoch_ms(run.slot)}-{run.attempt}-{encode_user_id(run.user_id)}"


def job_args(run: ClaimedRun) -> tuple[object, ...]:
    return (run.user_id, epoch_ms(run.slot), run.attempt, run.token, str(run.trigger), epoch_ms(run.claimed_at))


def job_description(run: ClaimedRun) -> str:
    return f"monitor user={run.user_id!r} slot={run.slot:%Y-%m-%dT%H:%M:%S.%f}Z attempt={run.attempt}"


def job_data(run: ClaimedRun) -> bytes:
    """What RQ's default serializer stores: the pickled (function, instance, args, kwargs), zlib'd."""
    return zlib.compress(pickle.dumps((JOB_FUNCTION, None, job_args(run), {}), protocol=pickle.HIGHEST_PROTOCOL))


class RqEnqueuer:
    def __init__(self, connection: Redis, queue_name: str, job_timeout: int) -> None:
        self.connection = connection
        self.queue = Queue(queue_name, connection=connection, default_timeout=job_timeout)
        self.job_timeout = job_timeout
        self._script = connection.register_script(_ENQUEUE_BATCH)
        self.batched = self.hash_matches_rq()
        if not self.batched:
            logger.warning("this RQ version writes jobs differently: enqueueing with Queue.enqueue_many (slower)")

    def shared_fields(self, stamp: str) -> dict[str, str | int]:
        """The job-hash fields every job of one batch shares."""
        fields: dict[str, str | int] = dict.fromkeys(EMPTY_JOB_FIELDS, "")
        fields.update(created_at=stamp, enqueued_at=stamp, origin=self.queue.name, timeout=self.job_timeout, status=JobStatus.QUEUED.value)
        return fields

    def batch_hash(self, run: ClaimedRun, stamp: str) -> dict[str, object]:
        return {"data": job_data(run), "description": job_description(run), **self.shared_fields(stamp)}

    def rq_hash(self, run: ClaimedRun) -> dict[str, object]:
        """The hash RQ itself would write for this run (no I/O)."""
        job = self.queue.create_job(JOB_FUNCTION, args=job_args(run), job_id=job_id_for(run), timeout=self.job_timeout, description=job_description(run))
        job.origin = self.queue.name
        job.enqueued_at = job.created_at
        job._status = JobStatus.QUEUED
        return job.to_dict()

    def hash_matches_rq(self) -> bool:
        sample = ClaimedRun("sample", datetime(2026, 1, 1), 1, "token", Trigger.SCHEDULE, datetime(2026, 1, 1))
        ours = self.batch_hash(sample, "stamp")
        theirs = self.rq_hash(sample)
        if set(ours) != set(theirs):
            return False
        return all(_as_stored(ours[key]) == _as_stored(theirs[key]) for key in ours if key not in TIME_FIELDS)

    def depth(self) -> int:
        """Jobs waiting in the queue; also the fail-fast check that Redis answers."""
        try:
            return self.queue.count
        except RedisError as exc:
            raise QueueUnavailable(f"Redis unreachable: {exc}") from exc

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
        shared = self.shared_fields(utcformat(datetime.now(UTC)))
        argv: list[Any] = [len(shared)]
        for key, value in shared.items():
            argv += (key, value)
        for run in claimed:
            argv += (job_id_for(run), job_data(run), job_description(run))
        return int(self._script(keys=[self.queue.key], args=argv))

    def _enqueue_many(self, claimed: Sequence[ClaimedRun]) -> int:
        datas = [
            Queue.prepare_data(JOB_FUNCTION, args=job_args(run), job_id=job_id_for(run), timeout=self.job_timeout, description=job_description(run))
            for run in claimed
        ]
        with self.connection.pipeline() as pipe:
            self.queue.enqueue_many(datas, pipeline=pipe)
            pipe.llen(self.queue.key)
            return int(pipe.execute()[-1])
