"""How many runs the live workers of a queue can execute at once, from RQ's worker registry.

RQ lists the workers listening on a queue (`rq.worker_registration.get_keys`, the set `rq info`
reads too); a worker's hash lives while the worker sends heartbeats and expires after its TTL when
the process died, so a listed key whose hash is gone is a dead worker (RQ cleans the set later).
Each live worker offers the threads it announced in its hash (`core.capacity.WORKER_THREADS_FIELD`,
set by `worker --threads N`), or 1 when it announced none (a plain RQ worker). Two round trips:
the set, then one pipeline over the workers.
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from rq import Queue
from rq.worker_registration import get_keys

from core.capacity import WORKER_THREADS_FIELD
from core.exceptions import QueueUnavailable

logger = logging.getLogger(__name__)


def _threads(announced: bytes | str | None) -> int:
    if announced is None:
        return 1
    try:
        return max(1, int(announced))
    except ValueError:
        logger.warning("worker announced threads=%r: counted as 1", announced)
        return 1


def worker_capacity(queue: Queue) -> int:
    """Runs the live workers of `queue` execute at once: Σ of their threads (1 when unannounced)."""
    try:
        keys = sorted(get_keys(queue=queue))
        if not keys:
            return 0
        with queue.connection.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.exists(key)
                pipe.hget(key, WORKER_THREADS_FIELD)
            answers = pipe.execute()
    except RedisError as exc:
        raise QueueUnavailable(f"Redis failed while reading the workers: {exc}") from exc
    return sum(_threads(announced) for alive, announced in zip(answers[::2], answers[1::2]) if alive)


def available_capacity(queue: Queue | None, *, sync_threads: int) -> int | None:
    """Runs at once downstream, as every reader of the capacity counts it (the pass's sample, the
    admin page, the API, /metrics, `check`): the live workers of `queue`; in sync mode (`queue`
    None) the dispatcher itself, `sync_threads` (SYNC_THREADS) at once; None (unknown) when Redis
    does not answer."""
    if queue is None:
        return sync_threads
    try:
        return worker_capacity(queue)
    except QueueUnavailable as exc:
        logger.warning("capacity unknown: %s", exc)
        return None
