"""Sync mode runs side by side (SYNC_THREADS), told as stories on SQLite and MariaDB alike.

Overlap is shown by what the tasks record (their own start and end times, and a barrier that only
opens when all of them run at once), never by asserting on the wall clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest

from core import shutdown
from core.domain import RunStatus
from core.executor import Runner
from core.tasks import RunContext
from dispatcher.service import DispatchPolicy, Dispatcher
from dispatcher.sinks import InlineSink
from tests.conftest import Backend

Task = Callable[[str, RunContext], None]


def sync_dispatcher(backend: Backend, task: Task, *, monotonic: Callable[[], float] = time.monotonic, **settings: object) -> Dispatcher:
    cfg = backend.settings(**settings)
    runner = Runner(backend.engine, cfg, backend.clock, task, worker_name="test")
    sink = InlineSink(runner, time_budget=cfg.SYNC_TIME_BUDGET, threads=cfg.SYNC_THREADS, monotonic=monotonic)
    return Dispatcher(backend.engine, backend.clock, DispatchPolicy.from_settings(cfg), sink)


def leases_held(backend: Backend) -> int:
    with backend.engine.connect() as conn:
        return int(conn.execute(backend.sql('SELECT COUNT(*) FROM "UserMonitorSchedule" WHERE "lockedBy" IS NOT NULL')).scalar_one())


class Together:
    """A task that records when it ran and returns only once `parties` runs are in it at once."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=20)
        self.spans: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def __call__(self, user_id: str, context: RunContext) -> None:
        began = time.monotonic()
        self.barrier.wait()  # breaks (the run fails) unless all the runs overlap
        with self._lock:
            self.spans[user_id] = (began, time.monotonic())


@pytest.mark.parametrize("runs", [5, 20])
def test_slow_runs_of_one_pass_overlap_and_each_is_recorded_once_under_its_lease(
    backend: Backend, runs: int, caplog: pytest.LogCaptureFixture,
) -> None:
    """Given `runs` due users and SYNC_THREADS=`runs`, when one sync pass runs tasks that wait for
    each other, then every task started before any ended, each run is recorded once (succeeded,
    with the lease it was claimed under), and no lease is held after the pass; on SQLite the
    twenty finishing writes all land (no "database is locked")."""
    ids = backend.add_schedules(runs)
    task = Together(runs)
    dispatcher = sync_dispatcher(backend, task, SYNC_THREADS=runs)

    with caplog.at_level(logging.WARNING):
        summary = dispatcher.tick()

    assert (summary.claimed, summary.succeeded, summary.failed, summary.released) == (runs, runs, 0, 0)
    assert max(began for began, _ in task.spans.values()) < min(ended for _, ended in task.spans.values()), "all ran at once"
    recorded = backend.runs()
    assert sorted(r.user_id for r in recorded) == ids, "each run recorded once"
    assert {r.status for r in recorded} == {"succeeded"}
    assert all(r.lease_token for r in recorded)
    assert leases_held(backend) == 0
    assert "database is locked" not in caplog.text


def test_a_run_past_job_timeout_among_side_by_side_runs_is_failed_and_the_others_succeed(backend: Backend) -> None:
    """Given three due users, SYNC_THREADS=3 and JOB_TIMEOUT 1 s, when the first user's task never
    returns (until released) while the other two wait for each other, then that run is failed
    (timed out), the other two succeed, no lease is held after the pass, and the late result is
    recorded stale."""
    backend.add_schedules(3)
    release = threading.Event()
    others = Together(2)

    def task(user_id: str, context: RunContext) -> None:
        if user_id == "user-000000":
            release.wait(30)
        else:
            others(user_id, context)

    summary = sync_dispatcher(backend, task, SYNC_THREADS=3, JOB_TIMEOUT=1).tick()

    assert (summary.claimed, summary.failed, summary.succeeded) == (3, 1, 2)
    assert "timed out" in (backend.schedule("user-000000").last_error or "")
    assert [backend.schedule(f"user-00000{i}").last_status for i in (1, 2)] == ["succeeded", "succeeded"]
    assert leases_held(backend) == 0
    release.set()
    deadline = time.monotonic() + 10
    while len(backend.runs("user-000000")) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [r.status for r in backend.runs("user-000000")] == ["failed", "stale"]


def test_with_one_thread_a_run_past_job_timeout_hands_its_slot_to_the_rest_of_the_batch(backend: Backend) -> None:
    """Given three due users, SYNC_THREADS=1 and JOB_TIMEOUT 1 s, when the first user's task never
    returns (until released), then its run is failed (timed out) and the other two still run in
    the same pass, on another thread (the one that ran the first keeps it until its task returns)."""
    backend.add_schedules(3)
    release = threading.Event()
    threads: dict[str, int] = {}

    def task(user_id: str, context: RunContext) -> None:
        threads[user_id] = threading.get_ident()
        if user_id == "user-000000":
            release.wait(30)

    try:
        summary = sync_dispatcher(backend, task, SYNC_THREADS=1, JOB_TIMEOUT=1).tick()
    finally:
        release.set()

    assert (summary.claimed, summary.failed, summary.succeeded, summary.released) == (3, 1, 2, 0)
    assert "timed out" in (backend.schedule("user-000000").last_error or "")
    assert [backend.schedule(f"user-00000{i}").last_status for i in (1, 2)] == ["succeeded", "succeeded"]
    assert threads["user-000001"] != threads["user-000000"]
    assert leases_held(backend) == 0


def test_the_time_budget_stops_starting_and_claiming_and_hands_back_what_did_not_run(backend: Backend) -> None:
    """Given 30 due users and SYNC_THREADS=2, when the budget runs out while the first two runs
    run (both in their task at once), then those two are recorded, the rest of their claim is
    handed back unrun (due again at once), no further claim is made, and no lease is held."""
    backend.add_schedules(30)
    clock = [0.0]
    pair = Together(2)

    def task(user_id: str, context: RunContext) -> None:
        pair(user_id, context)
        clock[0] = 100.0  # both ran past the 10 s budget

    summary = sync_dispatcher(backend, task, monotonic=lambda: clock[0], SYNC_THREADS=2, SYNC_TIME_BUDGET=10).tick()

    assert (summary.ran, summary.succeeded, summary.budget_exhausted) == (2, 2, True)
    assert (summary.claimed, summary.released) == (20, 18), "one claim of one batch: nothing claimed after the budget"
    assert leases_held(backend) == 0
    assert len(backend.runs()) == 2
    assert sum(1 for i in range(30) if backend.schedule(f"user-{i:06d}").last_status is None) == 28, "due again, never run"


@pytest.mark.parametrize(("seconds_per_run", "claims"), [(0.0, [20, 40, 40]), (1.0, [20] * 5)], ids=["quick", "slow"])
def test_quick_runs_grow_the_next_claim_and_slow_ones_keep_it_small(
    backend: Backend, seconds_per_run: float, claims: list[int],
) -> None:
    """Given 100 due users and SYNC_THREADS=1, when a pass's batches all start within
    QUICK_BATCH_SECONDS, then each next claim doubles (fewer claims per run); when each run takes
    a second, the claims stay at SYNC_CLAIM_BATCH (runs of minutes do not wait under a lease)."""
    backend.add_schedules(100)
    clock = [0.0]

    def task(user_id: str, context: RunContext) -> None:
        clock[0] += seconds_per_run

    summary = sync_dispatcher(backend, task, monotonic=lambda: clock[0], SYNC_THREADS=1, SYNC_TIME_BUDGET=1000).tick()

    assert (summary.claimed, summary.succeeded, summary.released) == (100, 100, 0)
    by_claim: dict[str, int] = {}
    for run in backend.runs():
        assert run.lease_token is not None
        by_claim[run.lease_token] = by_claim.get(run.lease_token, 0) + 1
    assert sorted(by_claim.values(), reverse=True) == sorted(claims, reverse=True)


def test_a_pass_fills_a_slot_as_soon_as_a_run_ends(backend: Backend) -> None:
    """Given SYNC_THREADS=2 and one slow run among quick ones, when a pass runs them, then the
    quick ones go on in the other slot while the slow one runs (they do not wait for it)."""
    backend.add_schedules(6)
    slow_done = threading.Event()
    quick_while_slow: list[str] = []

    def task(user_id: str, context: RunContext) -> None:
        if user_id == "user-000000":
            deadline = time.monotonic() + 20
            while len(quick_while_slow) < 5 and time.monotonic() < deadline:
                time.sleep(0.01)
            slow_done.set()
        elif not slow_done.is_set():
            quick_while_slow.append(user_id)

    summary = sync_dispatcher(backend, task, SYNC_THREADS=2).tick()

    assert summary.succeeded == 6
    assert sorted(quick_while_slow) == [f"user-00000{i}" for i in range(1, 6)]
    assert [r.status for r in backend.runs("user-000000")] == [RunStatus.SUCCEEDED.value]


def test_passes_at_once_in_one_process_share_the_sync_threads(backend: Backend) -> None:
    """Given SYNC_THREADS=2 and 8 due users, when two passes of the same dispatcher run at once
    (the embedded loop beside the sync HTTP trigger), 4 users each, then never more than 2 tasks run at once,
    and every user runs once."""
    backend.add_schedules(8)
    lock = threading.Lock()
    running: list[int] = [0]
    most: list[int] = [0]
    ran: list[str] = []

    def task(user_id: str, context: RunContext) -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            ran.append(user_id)
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    dispatcher = sync_dispatcher(backend, task, SYNC_THREADS=2, DISPATCH_BATCH_SIZE=4)  # 4 users each
    summaries = []
    passes = [threading.Thread(target=lambda: summaries.append(dispatcher.tick())) for _ in range(2)]
    for thread in passes:
        thread.start()
    for thread in passes:
        thread.join(30)

    assert [s.succeeded for s in summaries] == [4, 4] and sorted(ran) == [f"user-{i:06d}" for i in range(8)]
    assert most[0] <= 2
    assert leases_held(backend) == 0


def test_a_stop_request_records_the_runs_going_side_by_side_and_leaves_no_lease(backend: Backend) -> None:
    """Given SYNC_THREADS=3 and three due users all in their task at once, when one of them gets a
    real stop request (Ctrl-C), then the pass stops: that run is failed, the two others are recorded
    failed as stopped (their late results are refused), and no lease is held."""
    backend.add_schedules(3)
    all_in = threading.Barrier(3, timeout=20)
    release = threading.Event()

    def task(user_id: str, context: RunContext) -> None:
        all_in.wait()
        if user_id == "user-000000":
            shutdown.request()  # what the entry point's signal handler does on a real SIGINT
            raise KeyboardInterrupt
        release.wait(30)

    dispatcher = sync_dispatcher(backend, task, SYNC_THREADS=3)
    try:
        with pytest.raises(KeyboardInterrupt):
            dispatcher.tick()
    finally:
        shutdown.forget()
        release.set()

    assert leases_held(backend) == 0
    assert backend.schedule("user-000000").last_status == "failed"
    for user_id in ("user-000001", "user-000002"):
        row = backend.schedule(user_id)
        assert row.last_status == "failed" and "stopped" in (row.last_error or ""), row
    deadline = time.monotonic() + 10
    while len(backend.runs()) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(r.status for r in backend.runs()) == ["failed", "failed", "failed", "stale", "stale"]
