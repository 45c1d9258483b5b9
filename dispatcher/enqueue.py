"""Putting claimed runs on the RQ queue: one Redis pipeline per batch.

Job ids are derived from the run (user, slot, attempt), so a run has exactly one id; RQ 3 accepts
only letters, digits, `_` and `-` in ids and user ids may contain anything, so the user id is
base64url-encoded (its alphabet is exactly that set).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue

from monitor_scheduler.clock import epoch_ms
from monitor_scheduler.exceptions import QueueUnavailable
from monitor_scheduler.repository import ClaimedRun

logger = logging.getLogger(__name__)

JOB_FUNCTION = "worker.jobs.run_user_monitor"
JOB_ID_PREFIX = "um"


def encode_user_id(user_id: str) -> str:
    return base64.urlsafe_b64encode(user_id.encode("utf-8")).decode("ascii").rstrip("=")


def decode_user_id(encoded: str) -> str:
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")


def job_id_for(run: ClaimedRun) -> str:
    """`um-<slot ms>-<attempt>-<base64url user id>`: one id per run, valid for RQ."""
    return f"{JOB_ID_PREFIX}-{epoch_ms(run.slot)}-{run.attempt}-{encode_user_id(run.user_id)}"


def job_args(run: ClaimedRun) -> tuple:  # type: ignore[type-arg]
    return (run.user_id, epoch_ms(run.slot), run.attempt, run.token, str(run.trigger), epoch_ms(run.claimed_at))


class RqEnqueuer:
    def __init__(self, connection: Redis, queue_name: str, job_timeout: int) -> None:
        self.connection = connection
        self.queue = Queue(queue_name, connection=connection, default_timeout=job_timeout)
        self.job_timeout = job_timeout

    def depth(self) -> int:
        """Jobs waiting in the queue; also the fail-fast check that Redis answers."""
        try:
            return self.queue.count
        except RedisError as exc:
            raise QueueUnavailable(f"Redis unreachable: {exc}") from exc

    def enqueue(self, claimed: Sequence[ClaimedRun]) -> int:
        """Enqueue every run in one MULTI/EXEC pipeline (all of the batch lands, or none of it);
        returns the queue's depth afterwards, read in the same round trip, for back-pressure."""
        datas = [
            Queue.prepare_data(
                JOB_FUNCTION,
                args=job_args(run),
                job_id=job_id_for(run),
                timeout=self.job_timeout,
                description=f"monitor user={run.user_id!r} slot={run.slot:%Y-%m-%dT%H:%M:%S.%f}Z attempt={run.attempt}",
            )
            for run in claimed
        ]
        try:
            with self.connection.pipeline() as pipe:
                self.queue.enqueue_many(datas, pipeline=pipe)
                pipe.llen(self.queue.key)
                depth = pipe.execute()[-1]
        except RedisError as exc:
            raise QueueUnavailable(f"Redis failed while enqueueing: {exc}") from exc
        return int(depth)
