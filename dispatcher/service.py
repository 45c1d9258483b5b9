"""The dispatch pass: one claim loop, two sinks (dispatcher.sinks). One "now" per pass, from the
database where hosts meet.

Order inside a batch is what makes it safe: the claim commits before the sink is called, so no row
lock is held across a network call; if the queue then fails, the batch's leases are released in
the same pass (the rows are due again at once) and the pass ends with DispatchFailed, which carries
what the pass did before.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from redis import Redis
from sqlalchemy import Connection, Engine

from core import claims, health, queries, writes
from core.capacity import Sample
from core.clock import Clock, utc_text
from core.db import run_transaction
from core.domain import ClaimedRun, DispatchSummary, Mode, Schedule, Trigger
from core.exceptions import DispatchFailed, LeaseHeld, QueueUnavailable, RunNowTooSoon, UnknownUser
from core.executor import Runner
from core.retry import RetryDefaults
from core.settings import Settings
from dispatcher.enqueue import RqEnqueuer
from dispatcher.sinks import InlineSink, QueueSink, Sink

logger = logging.getLogger(__name__)

START_GRACE_MS = 10_000
# One pass in this many prunes the capacity samples past CAPACITY_SAMPLE_RETENTION (one batch), so
# the table stays bounded without a cron line; `monitor-scheduler prune` does the rest.
SAMPLE_PRUNE_EVERY = 100
SAMPLE_PRUNE_BATCH = 1000


@dataclass(frozen=True)
class DispatchPolicy:
    """The settings a pass obeys, and nothing else."""

    batch_size: int  # most users one pass claims
    lease_ms: int
    # The capacity sample each successful pass writes (core.health.measure_load).
    capacity_window_minutes: int = 60
    default_run_seconds: float = 10.0
    sample_retention: timedelta = timedelta(days=7)
    # A lost run is a failed attempt: whether its slot is retried depends on the retry defaults.
    retry_defaults: RetryDefaults = RetryDefaults()

    @classmethod
    def from_settings(cls, settings: Settings) -> DispatchPolicy:
        return cls(
            batch_size=settings.DISPATCH_BATCH_SIZE, lease_ms=settings.DISPATCH_LOCK_TTL,
            capacity_window_minutes=settings.CAPACITY_RUN_WINDOW, default_run_seconds=settings.CAPACITY_DEFAULT_RUN_SECONDS,
            sample_retention=timedelta(days=settings.CAPACITY_SAMPLE_RETENTION),
            retry_defaults=RetryDefaults.from_settings(settings),
        )


class Dispatcher:
    def __init__(self, engine: Engine, clock: Clock, policy: DispatchPolicy, sink: Sink) -> None:
        self.engine = engine
        self.clock = clock
        self.policy = policy
        self.sink = sink
        self._passes = 0

    @classmethod
    def for_queue(cls, settings: Settings, engine: Engine, clock: Clock, redis: Redis) -> Dispatcher:
        enqueuer = RqEnqueuer(redis, settings.QUEUE_NAME, settings.JOB_TIMEOUT)
        # A started job's lease is renewed first thing; allow that statement a third of a lease.
        start_grace = timedelta(milliseconds=min(START_GRACE_MS, settings.DISPATCH_LOCK_TTL / 3))
        sink = QueueSink(enqueuer, chunk_size=settings.DISPATCH_CHUNK_SIZE, max_depth=settings.QUEUE_MAX_DEPTH, start_grace=start_grace)
        return cls(engine, clock, DispatchPolicy.from_settings(settings), sink)

    @classmethod
    def inline(cls, settings: Settings, engine: Engine, clock: Clock, runner: Runner) -> Dispatcher:
        sink = InlineSink(runner, time_budget=settings.SYNC_TIME_BUDGET, threads=settings.SYNC_THREADS)
        return cls(engine, clock, DispatchPolicy.from_settings(settings), sink)

    @property
    def mode(self) -> Mode:
        return Mode(self.sink.mode)

    # --- one pass -------------------------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> DispatchSummary:
        """One dispatch pass at `now` (the database's clock when None). Raises DispatchFailed
        after releasing what it could not hand on."""
        started = time.perf_counter()
        if now is None:
            # A read: running it again on a fresh connection changes nothing.
            now = run_transaction(self.engine, self.clock.now, what="reading the pass's clock")
        summary = DispatchSummary.starting(self.sink.mode, now)
        try:
            self._claim_loop(now, summary)
        finally:
            summary.duration_ms = int((time.perf_counter() - started) * 1000)
        self._record_pass(summary)
        logger.info("%s", summary.line())
        return summary

    def _claim_loop(self, now: datetime, summary: DispatchSummary) -> None:
        self.sink.begin_pass()
        with self._ending_pass(summary):
            self._claim_batches(now, summary)

    @contextmanager
    def _ending_pass(self, summary: DispatchSummary) -> Iterator[None]:
        """The sink's runs still going end with the pass (sync mode), whatever ended the claims; on
        a stop request (Ctrl-C) they are recorded stopped instead of waited for."""
        try:
            yield
        except Exception:
            self.sink.end_pass(summary, stopping=False)
            raise
        except BaseException:
            self.sink.end_pass(summary, stopping=True)
            raise
        self.sink.end_pass(summary, stopping=False)

    def _claim_batches(self, now: datetime, summary: DispatchSummary) -> None:
        remaining = self.policy.batch_size
        until = claims.lease_until(now, self.policy.lease_ms)
        while remaining > 0:
            if self.sink.must_stop(summary):
                if summary.backpressure:
                    with self.engine.connect() as conn:
                        summary.skipped_backpressure = min(remaining, queries.count_due(conn, now=now))
                return
            limit = min(self.sink.claim_limit(), remaining)
            claim = self._claim(now, limit, until)
            if not claim.rows:
                return
            claimed = claim.claimed + self._take_over_dead(claim, now, until, summary)
            if claimed:
                summary.claimed += len(claimed)
                self._deliver(claimed, summary)
            remaining -= claim.rows
            if claim.rows < limit:
                return

    def _take_over_dead(
        self, claim: claims.Claim, now: datetime, until: datetime, summary: DispatchSummary, *, restart: bool = False
    ) -> list[ClaimedRun]:
        """The expired-lease rule after the claim (the pass's and run-now's): of the parked runs,
        those whose job still waits in the queue keep their place; those whose job is gone are
        taken over (`claims.take_over`, fenced on the holder's token), recorded lost once. `restart`:
        a manual run, in the slot `now`."""
        if not claim.parked:
            return []
        try:
            alive = self.sink.alive(claim.parked, now)
        except QueueUnavailable as exc:
            summary.released += self._release(claim.claimed)
            summary.error = str(exc)
            logger.error("queue check failed, released %s leases: %s", len(claim.claimed), exc)
            raise DispatchFailed(str(exc), summary) from exc
        summary.kept += len(alive)
        dead = [run for run in claim.parked if run.user_id not in alive]
        if alive:
            logger.info("%s expired lease(s) kept: their jobs still wait in the queue", len(alive))
        if not dead:
            return []
        with self.engine.begin() as conn:
            taken = claims.take_over(
                conn, parked=dead, token=claims.new_lease_token(), lease_until=until,
                trigger=Trigger.MANUAL if restart else self.sink.trigger, now=now, restart=restart,
                defaults=self.policy.retry_defaults,
            )
        logger.warning("%s run(s) lost (job gone from the queue, lease expired): retrying %s", len(dead), ", ".join(r.user_id for r in taken[:20]))
        return taken

    def _deliver(self, claimed: Sequence[ClaimedRun], summary: DispatchSummary) -> None:
        try:
            undelivered = self.sink.deliver(claimed, summary)
        except QueueUnavailable as exc:
            summary.released += self._release(claimed)
            summary.error = str(exc)
            logger.error("enqueue failed, released %s leases: %s", len(claimed), exc)
            raise DispatchFailed(str(exc), summary) from exc
        except BaseException:
            # A real shutdown mid-batch (Ctrl-C, a forced stop): hand back the leases of the runs
            # not started. Finished runs released theirs already, so the fenced release touches
            # only the rest, which are due again at once instead of after a TTL.
            summary.released += self._release(claimed)
            raise
        if undelivered:
            summary.released += self._release(undelivered)

    def _record_pass(self, summary: DispatchSummary) -> None:
        """Note a successful pass for the dead-man check, and the capacity sample of its end
        (counts, demand, the sink's capacity), in one transaction of two writes; the figures are
        read before it. A failed pass raised before this and leaves no sample."""
        sample = self._sample()
        with self.engine.begin() as conn:
            writes.record_dispatch_pass(conn, at=sample.at, detail=json.dumps(summary.as_dict()))
            writes.insert_sample(conn, sample)
        self._passes += 1
        if self._passes % SAMPLE_PRUNE_EVERY == 1:  # this process's first pass, then one in a hundred
            with self.engine.begin() as conn:
                writes.prune_samples(conn, taken_before=sample.at - self.policy.sample_retention, batch=SAMPLE_PRUNE_BATCH)

    def _sample(self) -> Sample:
        available = self.sink.capacity()
        with self.engine.connect() as conn:
            return health.capacity_report(
                conn, now=self.clock.now(conn), available=available,
                window_minutes=self.policy.capacity_window_minutes, default_run_seconds=self.policy.default_run_seconds,
            ).sample()

    # --- one user, now ---------------------------------------------------------------------------

    def run_user_now(self, user_id: str, now: datetime | None = None, *, cooldown: timedelta | None = None) -> DispatchSummary:
        """Direct mode: run `user_id` now whatever its nextRunAt, never beside a live run of it, nor
        beside its run that waits in the queue (the expired-lease rule of the pass); with
        `cooldown`, not within `cooldown` of its last manual run either (RunNowTooSoon)."""
        started = time.perf_counter()
        self.sink.begin_pass()  # queue: fail fast, before the lease is taken
        token = claims.new_lease_token()
        with self.engine.begin() as conn:
            now = now or self.clock.now(conn)
            until = claims.lease_until(now, self.policy.lease_ms)
            claim = claims.claim_user(
                conn, user_id=user_id, now=now, token=token, lease_until=until, trigger=Trigger.MANUAL, park_expired=self.sink.parks_expired,
                cooldown=cooldown, defaults=self.policy.retry_defaults,
            )
            existing = queries.get_schedule(conn, user_id) if claim is None else None
        if claim is None:
            if existing is None:
                raise UnknownUser(f"no schedule for user {user_id!r}")
            if cooldown is not None and (existing.locked_until is None or existing.locked_until <= now):
                raise _too_soon(existing, now, cooldown)  # the lease was free: the cooldown refused it
            raise LeaseHeld(
                f"user {user_id!r} is running (lease held by {existing.locked_by} until {utc_text(existing.locked_until, sep=' ')})",
                until=existing.locked_until,
            )
        summary = DispatchSummary.starting(self.sink.mode, now)
        claimed = claim.claimed + self._take_over_dead(claim, now, until, summary, restart=True)
        if not claimed:
            [parked] = claim.parked
            if summary.kept:
                raise LeaseHeld(f"user {user_id!r} has a run waiting in the queue (slot {utc_text(parked.slot, sep=' ')})", queued=True)
            raise LeaseHeld(f"user {user_id!r} was claimed by another dispatcher while its lost run was checked")
        summary.claimed = len(claimed)
        try:
            with self._ending_pass(summary):
                self._deliver(claimed, summary)
        finally:
            summary.duration_ms = int((time.perf_counter() - started) * 1000)
        logger.info("direct run user=%s token=%s %s", user_id, claimed[0].token, summary.line())
        return summary

    # --- helpers ---------------------------------------------------------------------------------

    def _claim(self, now: datetime, limit: int, until: datetime) -> claims.Claim:
        token = claims.new_lease_token()

        def claim(conn: Connection) -> claims.Claim:
            return claims.claim_due(
                conn, now=now, limit=limit, token=token, lease_until=until, trigger=self.sink.trigger, park_expired=self.sink.parks_expired,
                defaults=self.policy.retry_defaults,
            )

        # Run again only if the connection died before COMMIT: the server discarded the claim with
        # it, and nothing was enqueued yet (the sink is called after the claim commits).
        return run_transaction(self.engine, claim, what="the claim")

    def _release(self, claimed: Sequence[ClaimedRun]) -> int:
        released = 0
        by_token: dict[str, list[str]] = {}
        for run in claimed:
            by_token.setdefault(run.token, []).append(run.user_id)
        with self.engine.begin() as conn:
            for token, user_ids in by_token.items():
                released += claims.release_leases(conn, user_ids=user_ids, token=token)
        return released


def _too_soon(schedule: Schedule, now: datetime, cooldown: timedelta) -> RunNowTooSoon:
    last = schedule.manual_run_at or now
    retry_after = max(1, math.ceil((last + cooldown - now).total_seconds()))
    seconds = int(cooldown.total_seconds())
    return RunNowTooSoon(
        f"user {schedule.user_id!r} asked for a run less than {seconds}s ago (RUN_NOW_COOLDOWN): try again in {retry_after}s",
        retry_after=retry_after, cooldown=seconds,
    )
