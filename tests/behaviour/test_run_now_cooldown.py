"""The "Run now" cooldown (RUN_NOW_COOLDOWN), on SQLite and MariaDB with a fixed clock.

Given a user who just ran manually, when they ask again within the cooldown, then the claim
refuses (RunNowTooSoon, with the seconds left) and nothing runs; once the cooldown has elapsed, it
runs. The cooldown is a condition of the claim's UPDATE, so racing requests admit exactly one.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from core.exceptions import LeaseHeld, RunNowTooSoon
from core.executor import Runner
from dispatcher.service import Dispatcher
from tests.conftest import Backend

COOLDOWN = timedelta(seconds=60)


def inline(backend: Backend) -> Dispatcher:
    cfg = backend.settings()
    return Dispatcher.inline(cfg, backend.engine, backend.clock, Runner(backend.engine, cfg, backend.clock, lambda user_id, context: None))


def test_a_second_run_now_within_the_cooldown_is_refused_until_it_elapses(backend: Backend) -> None:
    # Given alice ran manually at T0,
    [alice] = backend.add_schedules(1, prefix="alice", interval=1440)
    dispatcher = inline(backend)
    assert dispatcher.run_user_now(alice, cooldown=COOLDOWN).succeeded == 1
    # when she asks again 59.5 s later, then she is told to wait one more second and nothing runs;
    backend.clock.advance(seconds=59.5)
    with pytest.raises(RunNowTooSoon) as refused:
        dispatcher.run_user_now(alice, cooldown=COOLDOWN)
    assert (refused.value.retry_after, refused.value.cooldown) == (1, 60)
    assert "try again in 1s" in str(refused.value)
    assert len(backend.runs(alice)) == 1
    # once the minute is over, the next request runs.
    backend.clock.advance(seconds=0.5)
    assert dispatcher.run_user_now(alice, cooldown=COOLDOWN).succeeded == 1
    assert [r.trigger for r in backend.runs(alice)] == ["manual", "manual"]


def test_operators_are_not_limited_and_do_not_use_up_the_users_cooldown(backend: Backend) -> None:
    [alice] = backend.add_schedules(1, prefix="alice")
    dispatcher = inline(backend)
    # Alice runs her schedule; an operator (no cooldown) then runs it twice in a row: all run.
    assert dispatcher.run_user_now(alice, cooldown=COOLDOWN).succeeded == 1
    backend.clock.advance(seconds=30)
    assert dispatcher.run_user_now(alice).succeeded == 1
    assert dispatcher.run_user_now(alice).succeeded == 1
    # Alice's own next request counts from her own last one, not from the operator's.
    backend.clock.advance(seconds=10)
    with pytest.raises(RunNowTooSoon) as refused:
        dispatcher.run_user_now(alice, cooldown=COOLDOWN)
    assert refused.value.retry_after == 20
    backend.clock.advance(seconds=20)
    assert dispatcher.run_user_now(alice, cooldown=COOLDOWN).succeeded == 1
    assert len(backend.runs(alice)) == 4


def test_a_schedule_inserted_by_plain_sql_has_no_cooldown_yet(backend: Backend) -> None:
    with backend.engine.begin() as conn:
        conn.execute(backend.sql("""INSERT INTO "UserMonitorSchedule" ("userId") VALUES ('plain')"""))
    assert backend.schedule("plain").manual_run_at is None
    assert inline(backend).run_user_now("plain", cooldown=COOLDOWN).succeeded == 1
    assert backend.schedule("plain").manual_run_at == backend.clock.moment


@pytest.mark.mysql
def test_racing_requests_within_the_cooldown_admit_exactly_one(mysql_backend: Backend) -> None:
    # Given one user and eight web threads that each send three back-to-back "Run now" requests
    # at the same moment (the task is instant, so a run ends long before the last request):
    [alice] = mysql_backend.add_schedules(1, prefix="alice", interval=1440)
    dispatcher = inline(mysql_backend)
    start = threading.Barrier(8)
    outcomes: list[str] = []
    lock = threading.Lock()

    def requests() -> None:
        start.wait()
        for _ in range(3):
            try:
                dispatcher.run_user_now(alice, cooldown=COOLDOWN)
                outcome = "ran"
            except RunNowTooSoon:
                outcome = "too soon"
            except LeaseHeld:
                outcome = "running"
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=requests) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # then exactly one of the 24 requests ran the task.
    assert len(outcomes) == 24
    assert outcomes.count("ran") == 1, outcomes
    assert len(mysql_backend.runs(alice)) == 1
