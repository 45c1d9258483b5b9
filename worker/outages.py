"""Workers ride out Redis outages: wait with capped backoff and go on, never exit.

RQ's work loop treats any error outside its dequeue as fatal ("found an unhandled exception,
quitting"), and a Redis time-out even inside it; only the blocking dequeue itself retries a
ConnectionError. A Redis restart therefore ended a worker whose task had just succeeded: RQ's
bookkeeping after the job met `BusyLoadingError` (a ConnectionError while Redis reloads its
append-only file) or a refused connection.

So the worker's Redis connection carries a redis-py `Retry` (installed by
`RidingOutRedis.__init__`): a command or pipeline that meets a connection error, BusyLoadingError
or time-out waits (`REDIS_BACKOFF`: doubling from 0.5 s to 5 s) and is sent again, for as long as
Redis is away; no step of RQ's work loop needs wrapping. Why sending again is safe: RQ's steps write
absolute values (a state, a heartbeat time, a TTL), or are MULTI/EXEC transactions that Redis
applied wholly or not at all; the ones that count (`successful_job_count`) may count a job twice
when Redis applied a transaction whose answer was lost, which only a statistic sees. The run's own
result is in the database before RQ's bookkeeping starts, so an outage there costs no result. A
stop request (SIGTERM/SIGINT, noted in core.shutdown by worker.stops) ends the wait with RQ's
`StopRequested`, and the worker stops as RQ stops it; so does the worker leaving (`teardown`).

What a Retry cannot do, `RidingOutRedis` does:
- **registering again**: a Redis that lost its data no longer lists the worker (its hash and its
  place in `rq:workers`), and `rq info` and the capacity figures should. The heartbeat notices (the
  hash is gone) and registers the worker again; a worker idle in its blocking dequeue hears of
  Redis's return from RQ's pubsub thread, whose connection reconnects at once (`subscribe`).
- **fewer round trips per job** (16 of bare RQ's 23 for a no-op job were the worker's own): the
  heartbeat (RQ's HSET and two EXPIREs) is pipelined into one round trip; of the work loop's four
  plain heartbeats a job, those within `HEARTBEAT_FLOOR` of the last are dropped (the worker's TTL
  is minutes; a heartbeat with a job's TTL always goes, and the next plain one follows it); a
  state Redis holds already is not written again (RQ sets IDLE twice a job).
- **leaving without waiting**: at exit the worker does not wait for Redis; its key expires.
"""

from __future__ import annotations

import inspect
import logging
import socket
import threading
import time
from typing import Any

from redis.backoff import AbstractBackoff
from redis.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from rq import worker_registration
from rq.exceptions import StopRequested
from rq.worker import BaseWorker
from typing_extensions import override

from core import shutdown
from core.retry import Backoff

logger = logging.getLogger(__name__)

# BusyLoadingError is a ConnectionError: Redis answers, but is still loading its data.
OUTAGE_ERRORS = (RedisConnectionError, RedisTimeoutError, socket.timeout)
REDIS_BACKOFF = Backoff(first=0.5, factor=2.0, cap=5.0)
OUTAGE_LOG_PERIOD = 60.0  # seconds: one warning per outage, not one per waiting command
# The work loop sends a plain heartbeat (the worker's TTL, minutes) four times a job; those closer
# together than this are one.
HEARTBEAT_FLOOR = 1.0



class WaitingForRedis(AbstractBackoff):
    """redis-py's backoff seam: the wait before a command is sent again, from `REDIS_BACKOFF`; a
    stop request or the worker leaving ends the wait instead. One per worker, shared by the
    connections and threads of its pool (redis-py copies a Retry into each new connection)."""

    def __init__(self, policy: Backoff = REDIS_BACKOFF) -> None:
        self.policy = policy
        self.leaving = threading.Event()  # set at teardown: from then on, no command waits
        self.warned_at = float("-inf")

    def __deepcopy__(self, memo: dict[int, Any]) -> WaitingForRedis:
        return self

    @override
    def compute(self, failures: int) -> float:
        if shutdown.requested() or self.leaving.is_set():
            raise StopRequested()
        now = time.monotonic()
        if now - self.warned_at >= OUTAGE_LOG_PERIOD:
            self.warned_at = now
            logger.warning("Redis unavailable: the worker waits for it and goes on when it answers")
        return self.policy.delay(failures)


class StopsPubsubPromptly(BaseWorker):
    """A worker whose warm shutdown does not wait a minute for RQ's pubsub thread (below). Part of
    RidingOutRedis; on its own it also gives the benchmarks and tests a "bare RQ" worker that
    exits promptly (scripts/bench/bench_tasks.py)."""

    @override
    def unsubscribe(self) -> None:
        # RQ's own sends UNSUBSCRIBE, then stops its pubsub thread (started with sleep_time=60),
        # counting on the reply to wake the thread for its last loop. When the thread reads the
        # reply before the stop request (a loaded host), it loops on and waits up to 60 s for a
        # subscription that never comes, and redis-py 8's stop() joins it without a bound: the warm
        # shutdown of SIGTERM took a minute, past PM2's and systemd's kill timeouts. Here the stop
        # request comes first, so whenever the reply wakes the thread, its next loop check ends it
        # (no race left). The wait stays bounded for a reply that never comes (Redis gone): a
        # thread still waiting then is not reading the connection (closing it is safe) and ends
        # by itself, a daemon.
        if self.pubsub is None or self.pubsub_thread is None:
            return
        stop_without_waiting(self.pubsub_thread)
        self.pubsub.unsubscribe()
        self.pubsub_thread.join(timeout=PUBSUB_STOP_WAIT)
        self.pubsub.close()


class RidingOutRedis(StopsPubsubPromptly):
    """Mixed into the worker classes (worker.pool, worker.threaded) ahead of RQ's: the worker's
    connection waits out Redis outages, and the worker registers again after one (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting_for_redis = WaitingForRedis()
        # Commands wait out an outage of any length (retries=-1: no limit).
        self.connection.set_retry(Retry(self.waiting_for_redis, -1, OUTAGE_ERRORS))
        self._plain_beat_at: float | None = None

    @override
    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        # RQ sets IDLE twice a job (after it, and again as the dequeue begins): the second write is
        # the value Redis holds already (after an outage `_register_again` writes the state too).
        if pipeline is None and state == self.get_state():
            return
        super().set_state(state, pipeline=pipeline)

    @override
    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        last = self._plain_beat_at
        if timeout is not None:  # a TTL other than the worker's own: the next plain heartbeat restores it
            self._plain_beat_at = None
        elif pipeline is None and last is not None and time.monotonic() - last < HEARTBEAT_FLOOR:
            return  # the key's TTL (minutes) and its last_heartbeat were set within the floor
        if pipeline is not None:  # queued on the caller's pipeline: no round trip here
            super().heartbeat(timeout, pipeline=pipeline)
        else:
            with self.connection.pipeline(transaction=False) as pipe:
                pipe.exists(self.key)
                super().heartbeat(timeout, pipeline=pipe)
                existed = pipe.execute()[0]
            if not existed:
                self._register_again(timeout)
        if timeout is None:
            self._plain_beat_at = time.monotonic()

    def _register_again(self, timeout: int | None) -> None:
        """The worker's hash and its entry in `rq:workers`, as RQ's `register_birth` writes them
        (which cannot be called again: it refuses a worker whose live hash exists and resets the
        birth date)."""
        with self.connection.pipeline() as pipe:
            pipe.hset(self.key, mapping={**self.serialize(), "state": self.get_state()})
            worker_registration.register(self, pipe)
            self.heartbeat(timeout, pipeline=pipe)  # the key's TTL
            pipe.execute()
        logger.warning("worker %s registered again: Redis had lost its key (restarted without its data?)", self.name)

    @override
    def subscribe(self) -> None:
        super().subscribe()
        # redis-py calls a connection's connect callbacks when it reconnects, and RQ's pubsub
        # thread reconnects as soon as Redis answers again.
        if self.pubsub is not None and self.pubsub.connection is not None:
            self._reconnect_listener = ReconnectListener(self)
            self.pubsub.connection.register_connect_callback(self._reconnect_listener.connected)

    def redis_answers_again(self) -> None:
        self.waiting_for_redis.warned_at = float("-inf")  # the next outage is warned of again
        logger.warning("Redis answers again (worker %s): going on", self.name)
        try:
            self.heartbeat()
        except (RedisError, StopRequested) as exc:  # gone again, or stopping: the next heartbeat registers
            logger.info("worker %s: heartbeat after Redis came back failed: %s", self.name, exc)

    @override
    def teardown(self) -> None:
        # At exit: no waiting. The worker's key expires by itself within its TTL.
        self.waiting_for_redis.leaving.set()
        try:
            super().teardown()
        except (RedisError, StopRequested) as exc:
            logger.warning("could not unregister worker %s (its key expires by itself): %s", self.name, exc)


class ReconnectListener:
    """The pubsub connection's connect callback. Not a method of the worker: redis-py keeps it by
    weak reference and compares it with the others registered, and RQ's workers refuse to be
    compared with anything but a worker."""

    def __init__(self, worker: RidingOutRedis) -> None:
        self.worker = worker

    def connected(self, _connection: Any) -> None:
        self.worker.redis_answers_again()


# How long a stopping worker waits for its pubsub thread to read the UNSUBSCRIBE reply.
PUBSUB_STOP_WAIT = 1.0


def stop_without_waiting(thread: Any) -> None:
    """Ask redis-py's pubsub thread to end its loop, without waiting for it: redis-py 8's
    `PubSubWorkerThread.stop(timeout=None)` joins the thread, earlier ones only clear the flag."""
    if "timeout" in inspect.signature(thread.stop).parameters:
        thread.stop(timeout=0)
    else:
        thread.stop()
