"""The two dispatch passes the dispatch benchmarks time (shared by dispatch_throughput.py,
scale_free.py and peers.py).

- ours(): the project's Dispatcher.tick() with its RqEnqueuer, unchanged; a subclass only
  records how long each claim transaction and each enqueue pipeline took.
- reference(): the same design written plainly on the raw DBAPI connection: batched
  SELECT ... ORDER BY nextRunAt LIMIT n FOR UPDATE SKIP LOCKED, one UPDATE that takes the lease,
  COMMIT, then RQ's own Queue.enqueue_many in one pipeline, batch by batch.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import cast

import common  # noqa: F401  (puts the repository root on sys.path)
from redis import Redis
from rq import Queue
from sqlalchemy import Engine
from typing_extensions import override

from dispatcher.enqueue import RqEnqueuer
from dispatcher.service import DispatchPolicy, Dispatcher
from dispatcher.sinks import QueueSink
from core import claims
from dispatcher.jobspec import RUN_JOB
from core.clock import DatabaseClock, epoch_ms
from core.domain import ClaimedRun
from core.settings import Settings

JOB_FUNCTION = RUN_JOB  # the reference enqueues the same job function, by hand


@dataclass
class PassResult:
    rows: int
    seconds: float
    claim_s: list[float] = field(default_factory=list)
    enqueue_s: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    @property
    def batch_s(self) -> list[float]:
        return [c + e for c, e in zip(self.claim_s, self.enqueue_s)]


def _timed(enqueuer_class: type[RqEnqueuer], times: list[float]) -> type[RqEnqueuer]:
    """A subclass of `enqueuer_class` that records how long each enqueue() took."""

    def enqueue(self: RqEnqueuer, claimed: Sequence[ClaimedRun]) -> int:
        t0 = time.perf_counter()
        try:
            return enqueuer_class.enqueue(self, claimed)
        finally:
            times.append(time.perf_counter() - t0)

    # Built with type(): mypy takes no class statement on a base known only at run time (the
    # --enqueuer class), and the cast says what type() cannot: the result is that class's subclass.
    return cast(type[RqEnqueuer], type("Timed", (enqueuer_class,), {"enqueue": enqueue}))


class _TimedDispatcher(Dispatcher):
    claim_times: list[float]

    @override
    def _claim(self, now: datetime, limit: int, until: datetime) -> claims.Claim:
        t0 = time.perf_counter()
        try:
            return super()._claim(now, limit, until)
        finally:
            self.claim_times.append(time.perf_counter() - t0)


def ours(engine: Engine, settings: Settings, redis_conn: Redis, now: datetime, enqueuer_class: type[RqEnqueuer] | None = None) -> PassResult:
    enqueue_times: list[float] = []
    enqueuer = _timed(enqueuer_class or RqEnqueuer, enqueue_times)(redis_conn, settings.QUEUE_NAME, settings.JOB_TIMEOUT)
    sink = QueueSink(enqueuer, chunk_size=settings.DISPATCH_CHUNK_SIZE, max_depth=settings.QUEUE_MAX_DEPTH)
    dispatcher = _TimedDispatcher(engine, DatabaseClock(engine.dialect.name), DispatchPolicy.from_settings(settings), sink)
    dispatcher.claim_times = []
    t0 = time.perf_counter()
    summary = dispatcher.tick(now=now)
    seconds = time.perf_counter() - t0
    assert summary.error is None, summary
    # the final claim that found nothing is not a batch (one enqueue per batch)
    claims = dispatcher.claim_times[: len(enqueue_times)]
    return PassResult(summary.enqueued, seconds, claims, enqueue_times[: len(claims)])


# The plain claim on each server: the due rows over ix_UserMonitorSchedule_due (enabled, paused,
# nextRunAt) in nextRunAt order, as the dispatcher's own query. `paused` is in the index since
# migration 0008, so the reference names it too (else MariaDB cannot range-scan the index in order).
_SELECT = {
    "mysql": (
        "SELECT userId, nextRunAt FROM UserMonitorSchedule FORCE INDEX (ix_UserMonitorSchedule_due) "
        "WHERE enabled = 1 AND paused = 0 AND nextRunAt <= %s AND (lockedUntil IS NULL OR lockedUntil <= %s) "
        "ORDER BY nextRunAt LIMIT %s FOR UPDATE SKIP LOCKED"
    ),
    "postgresql": (
        'SELECT "userId", "nextRunAt" FROM "UserMonitorSchedule" '
        'WHERE enabled AND NOT paused AND "nextRunAt" <= %s AND ("lockedUntil" IS NULL OR "lockedUntil" <= %s) '
        'ORDER BY "nextRunAt" LIMIT %s FOR UPDATE SKIP LOCKED'
    ),
}
_UPDATE = {
    "mysql": "UPDATE UserMonitorSchedule SET runSlot = nextRunAt, attempt = 1, lockedBy = %s, lockedUntil = %s, "
             "nextRunAt = %s, updatedAt = %s WHERE userId IN ({marks})",
    "postgresql": 'UPDATE "UserMonitorSchedule" SET "runSlot" = "nextRunAt", attempt = 1, "lockedBy" = %s, "lockedUntil" = %s, '
                  '"nextRunAt" = %s, "updatedAt" = %s WHERE "userId" IN ({marks})',
}


def reference(engine: Engine, redis_conn: Redis, now: datetime, *, chunk: int, lease_ms: int, queue_name: str, timeout: int = 600) -> PassResult:
    """Claim + enqueue_many, written plainly (same driver, pool and session settings as ours)."""
    queue = Queue(queue_name, connection=redis_conn, default_timeout=timeout)
    lease_until = now + timedelta(milliseconds=lease_ms)
    now_ms = epoch_ms(now)
    result = PassResult(0, 0.0)
    dialect = "postgresql" if engine.dialect.name == "postgresql" else "mysql"
    raw = engine.raw_connection()
    t_start = time.perf_counter()
    try:
        while True:
            t0 = time.perf_counter()
            token = f"reference:{uuid.uuid4().hex[:16]}"
            cursor = raw.cursor()
            cursor.execute(_SELECT[dialect], (now, now, chunk))
            rows = cursor.fetchall()
            if rows:
                marks = ",".join(["%s"] * len(rows))
                cursor.execute(_UPDATE[dialect].format(marks=marks), (token, lease_until, lease_until, now, *[r[0] for r in rows]))
            raw.commit()
            cursor.close()
            if not rows:
                break
            result.claim_s.append(time.perf_counter() - t0)
            t1 = time.perf_counter()
            datas = []
            for user, slot in rows:
                encoded = base64.urlsafe_b64encode(user.encode()).decode().rstrip("=")
                slot_ms = epoch_ms(slot)
                datas.append(
                    Queue.prepare_data(
                        JOB_FUNCTION, args=(user, slot_ms, 1, token, "schedule", now_ms),
                        job_id=f"um-{slot_ms}-1-{encoded}", timeout=timeout,
                    )
                )
            with redis_conn.pipeline() as pipe:
                queue.enqueue_many(datas, pipeline=pipe)
                pipe.execute()
            result.enqueue_s.append(time.perf_counter() - t1)
            result.rows += len(rows)
            if len(rows) < chunk:
                break
    finally:
        raw.close()
    result.seconds = time.perf_counter() - t_start
    return result


def queue_length(redis_conn: Redis, queue_name: str) -> int:
    return Queue(queue_name, connection=redis_conn).count
