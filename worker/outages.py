"""Workers ride out Redis outages: wait with capped backoff and go on, never exit.

RQ's work loop treats any error outside its dequeue as fatal ("found an unhandled exception,
quitting"), and a Redis time-out even inside it; only the blocking dequeue itself retries a
ConnectionError. A Redis restart therefore ended a worker whose task had just succeeded: RQ's
bookkeeping after the job met `BusyLoadingError` (a ConnectionError while Redis reloads its
append-only file) or a refused connection.

`RidingOutRedis` wraps each of RQ's own Redis steps of the work loop (heartbeat, state, suspension
check, maintenance, preparing a job, the bookkeeping of its end) so that a connection error,
BusyLoadingError or time-out makes it wait (doubling from 0.5 s to 5 s) and then do the same step
again. Why doing a step again is safe: each writes absolute values (a state, a heartbeat time, a
TTL), or is a MULTI/EXEC transaction that Redis applied wholly or not at all; the ones that
count (`successful_job_count`) may count a job twice, which only a statistic sees. The run's own
result is in the database before RQ's bookkeeping starts, so an outage there costs no result.

When Redis is back, the worker registers itself again (its hash and its place in `rq:workers`),
since a Redis that lost its data no longer lists it and `rq info` should. A stop request during the
wait ends the wait (StopRequested), and the worker stops as RQ stops it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import worker_registration
from rq.exceptions import StopRequested
from rq.worker import BaseWorker

logger = logging.getLogger(__name__)

T = TypeVar("T")

# BusyLoadingError is a ConnectionError: Redis answers, but is still loading its data.
OUTAGE_ERRORS = (RedisConnectionError, RedisTimeoutError)
FIRST_DELAY = 0.5
MAX_DELAY = 5.0


class RidingOutRedis(BaseWorker):
    """Mixed into the worker classes (worker.pool) ahead of RQ's: each wrapped step waits out a
    Redis outage and runs again."""

    _outage_began: float | None = None

    def _riding_out(self, step: str, call: Callable[[], T]) -> T:
        delay = FIRST_DELAY
        while True:
            try:
                result = call()
            except OUTAGE_ERRORS as exc:
                if self._stop_requested:
                    raise StopRequested() from exc
                if self._outage_began is None:
                    self._outage_began = time.monotonic()
                    logger.warning("Redis unavailable during %s, waiting for it (worker %s): %s", step, self.name, exc)
                time.sleep(delay)
                delay = min(delay * 2, MAX_DELAY)
                continue
            if self._outage_began is not None:
                self._back_from_outage(step)
            return result

    def _back_from_outage(self, step: str) -> None:
        began, self._outage_began = self._outage_began, None
        try:
            self._register_again()
        except RedisError as exc:  # Redis went away again: the next step waits for it
            self._outage_began = began
            logger.info("registering worker %s again failed: %s", self.name, exc)
            return
        logger.warning("Redis is back after %.1fs (worker %s, during %s): going on", time.monotonic() - (began or 0.0), self.name, step)

    def _register_again(self) -> None:
        """The worker's hash and its entry in `rq:workers`, as `register_birth` writes them."""
        with self.connection.pipeline() as pipeline:
            pipeline.hset(self.key, mapping=self.serialize())
            worker_registration.register(self, pipeline)
            pipeline.expire(self.key, self.worker_ttl + 60)
            pipeline.execute()

    # --- RQ's Redis steps, each waiting out an outage --------------------------------------------

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        if pipeline is not None:  # queued on the caller's pipeline: no round trip here
            super().heartbeat(timeout, pipeline)
            return
        self._riding_out("the heartbeat", lambda: super(RidingOutRedis, self).heartbeat(timeout, pipeline))

    def set_state(self, state: str, pipeline: Any = None) -> None:
        if pipeline is not None:
            super().set_state(state, pipeline)
            return
        self._riding_out("setting the state", lambda: super(RidingOutRedis, self).set_state(state, pipeline))

    def check_for_suspension(self, burst: bool) -> None:
        self._riding_out("the suspension check", lambda: super(RidingOutRedis, self).check_for_suspension(burst))

    def run_maintenance_tasks(self) -> None:
        self._riding_out("maintenance", lambda: super(RidingOutRedis, self).run_maintenance_tasks())

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        # RQ retries its blocking pop on ConnectionError but not on a time-out; the steps around it
        # are wrapped above.
        return self._riding_out("the dequeue", lambda: super(RidingOutRedis, self).dequeue_job_and_maintain_ttl(timeout, max_idle_time))

    def prepare_execution(self, job: Any) -> Any:
        return self._riding_out("registering the execution", lambda: super(RidingOutRedis, self).prepare_execution(job))

    def prepare_job_execution(self, job: Any, remove_from_intermediate_queue: bool = False) -> None:
        self._riding_out("preparing the job", lambda: super(RidingOutRedis, self).prepare_job_execution(job, remove_from_intermediate_queue))

    def handle_execution_ended(self, job: Any, queue: Any, heartbeat_ttl: int) -> None:
        self._riding_out("ending the execution", lambda: super(RidingOutRedis, self).handle_execution_ended(job, queue, heartbeat_ttl))

    def handle_job_success(self, job: Any, queue: Any, started_job_registry: Any, execution: Any) -> None:
        self._riding_out(
            "recording the job's success",
            lambda: super(RidingOutRedis, self).handle_job_success(job, queue, started_job_registry, execution),
        )

    def handle_job_failure(self, job: Any, queue: Any, started_job_registry: Any = None, exc_string: str = "", execution: Any = None) -> None:
        self._riding_out(
            "recording the job's failure",
            lambda: super(RidingOutRedis, self).handle_job_failure(
                job, queue, started_job_registry=started_job_registry, exc_string=exc_string, execution=execution,
            ),
        )

    def maintain_heartbeats(self, job: Any, execution: Any) -> None:
        self._riding_out("the job's heartbeat", lambda: super(RidingOutRedis, self).maintain_heartbeats(job, execution))

    def register_death(self) -> None:
        # At exit: no waiting. The worker's key expires by itself within its TTL.
        try:
            super().register_death()
        except RedisError as exc:
            logger.warning("could not register the death of worker %s (its key expires by itself): %s", self.name, exc)
