from __future__ import annotations

import threading

import pytest
from typing_extensions import override

from dispatcher.loop import DispatchLoop, parse_duration
from core.exceptions import InvalidInput, QueueUnavailable


class FakeTime:
    """A monotonic clock that only moves when the loop waits or a pass 'takes' time."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class RecordingStop(threading.Event):
    def __init__(self, clock: FakeTime) -> None:
        super().__init__()
        self.clock = clock
        self.waits: list[float] = []

    @override
    def wait(self, timeout=None):
        self.waits.append(round(timeout, 6))
        self.clock.now += timeout
        return self.is_set()


def make_loop(durations: list[float], every: float = 10.0):
    clock = FakeTime()
    stop = RecordingStop(clock)
    starts: list[float] = []

    def tick() -> None:
        starts.append(clock.now)
        clock.now += durations[len(starts) - 1]

    return DispatchLoop(tick, every, monotonic=clock, stop=stop), starts, stop


def test_passes_start_one_period_after_the_previous_start() -> None:
    loop, starts, stop = make_loop([2.0, 3.0, 0.5])
    loop.run(max_passes=3)
    assert starts == [100.0, 110.0, 120.0]
    assert stop.waits == [8.0, 7.0]


def test_an_overrunning_pass_skips_the_missed_starts() -> None:
    loop, starts, _ = make_loop([25.0, 1.0])
    loop.run(max_passes=2)
    assert starts == [100.0, 130.0], "no back-to-back catch-up passes"
    assert loop.skipped_starts == 2


def test_a_failed_pass_does_not_stop_the_loop() -> None:
    clock = FakeTime()
    stop = RecordingStop(clock)
    calls = []

    def tick() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise QueueUnavailable("Redis unreachable")

    loop = DispatchLoop(tick, 5.0, monotonic=clock, stop=stop)
    loop.run(max_passes=2)
    assert (loop.passes, loop.failures) == (2, 1)


def test_a_stop_request_ends_the_loop_between_passes() -> None:
    loop, starts, stop = make_loop([1.0] * 10)
    original_tick = loop.tick

    def tick_then_stop() -> None:
        original_tick()
        if len(starts) == 2:
            stop.set()

    loop.tick = tick_then_stop
    loop.run()
    assert len(starts) == 2


@pytest.mark.parametrize("text,seconds", [("10s", 10), ("500ms", 0.5), ("1m", 60), ("2h", 7200), ("15", 15)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "0s", "-1s", "10 parsecs", "s"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(InvalidInput):
        parse_duration(bad)


def test_a_pass_failing_during_an_outage_is_logged_once_per_outage_without_traceback(caplog: pytest.LogCaptureFixture) -> None:
    from sqlalchemy import exc

    lost = exc.OperationalError("SELECT NOW(3)", {}, Exception(2013, "Lost connection to MySQL server during query"))
    outcomes: list[Exception | None] = [lost, lost, lost, None, QueueUnavailable("Redis unreachable"), QueueUnavailable("Redis unreachable"), None]
    clock = FakeTime()

    def tick() -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    loop = DispatchLoop(tick, 10.0, monotonic=clock, stop=RecordingStop(clock))
    with caplog.at_level("INFO", logger="dispatcher.loop"):
        loop.run(max_passes=7)

    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert [r.getMessage().split(": ", 1)[1] for r in warnings] == [
        "database unavailable: Exception: (2013, 'Lost connection to MySQL server during query')", "Redis unreachable",
    ]
    assert all(r.exc_info is None for r in caplog.records), "no traceback for an outage"
    assert [r.getMessage() for r in caplog.records if r.levelname == "INFO"] == [
        "dispatch passes succeed again after 3 failed in 30s", "dispatch passes succeed again after 2 failed in 20s",
    ]
    assert loop.failures == 5 and loop.passes == 7


def test_a_pass_crashing_on_a_bug_keeps_its_traceback_every_time(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeTime()

    def tick() -> None:
        raise KeyError("bug")

    loop = DispatchLoop(tick, 10.0, monotonic=clock, stop=RecordingStop(clock))
    with caplog.at_level("INFO", logger="dispatcher.loop"):
        loop.run(max_passes=2)
    assert [(r.levelname, r.exc_info is not None) for r in caplog.records] == [("ERROR", True), ("ERROR", True)]
