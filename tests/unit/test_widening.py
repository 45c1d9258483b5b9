"""The width of a sync pass (core.executor.Widening): how many run threads it wants, decided from
how its backlog moves. Times are passed in: no threads, no sleeps."""

from __future__ import annotations

import pytest

from core.executor import GROW_AFTER, GROW_CHECK_MAX, GROW_RETRY, Widening


def test_a_backlog_that_keeps_moving_keeps_one_thread_and_is_looked_at_ever_less_often() -> None:
    """Given runs quicker than GROW_AFTER (the backlog moves between looks), when the pass looks
    each time a look is due, then the width stays 1 and the gap between looks doubles up to
    GROW_CHECK_MAX (the pass's thread stays asleep beside a busy run thread)."""
    widening = Widening(most=4)
    widening.begin(0.0)
    now, gaps = 0.0, []
    for _ in range(10):
        looked_at = widening.look_at
        while now + GROW_AFTER / 4 < looked_at:  # a run taken every quarter of GROW_AFTER
            now += GROW_AFTER / 4
            widening.moved(now)
        now = looked_at
        widening.look(now)
        gaps.append(round(widening.look_at - now, 6))
    assert widening.width == 1
    assert gaps[0] == 2 * GROW_AFTER and gaps[-1] == GROW_CHECK_MAX and gaps == sorted(gaps)


def test_a_backlog_standing_still_doubles_the_width_every_grow_after_up_to_the_threads() -> None:
    """Given runs that wait (no run taken from the backlog), when the pass looks each time a look
    is due, then the width goes 1, 2, 4, 8, 16, 20 at one look GROW_AFTER apart each."""
    widening = Widening(most=20)
    widening.moved(0.0)
    widening.begin(0.0)
    now, widths = 0.0, list[int]()
    while widening.width < 20 and len(widths) < 10:
        assert widening.look_at - now <= GROW_AFTER + 1e-9, "the next look is at most GROW_AFTER away"
        now = widening.look_at
        widening.look(now)
        widths.append(widening.width)
    assert widths == [2, 4, 8, 16, 20]
    assert now <= 5 * GROW_AFTER + 1e-9, "every thread busy within five GROW_AFTER"


def test_a_backlog_that_moved_just_before_a_look_is_looked_at_again_grow_after_from_its_move() -> None:
    """Given a run taken just before a look, when the pass looks, then the width stays and the
    next look comes no earlier than GROW_AFTER after that move (a stall is judged on its length)."""
    widening = Widening(most=4)
    widening.begin(0.0)
    widening.moved(GROW_AFTER * 0.9)
    widening.look(GROW_AFTER)
    assert widening.width == 1
    assert widening.look_at >= GROW_AFTER * 1.9


def test_a_missing_slot_is_sought_again_after_grow_retry() -> None:
    widening = Widening(most=4)
    widening.seek_slot_later(1.0)
    assert widening.look_at == 1.0 + GROW_RETRY


def test_chains_starting_again_keep_the_looks_as_rare_as_they_had_come_to_be() -> None:
    """Given a pass of quick runs whose looks have backed off, when its next batch starts a chain
    from none (at width 1 each batch does), then the next look stays where the backoff put it;
    a pass that never looked gets its first look GROW_AFTER after the start."""
    widening = Widening(most=4)
    widening.begin(0.0)
    assert widening.look_at == pytest.approx(GROW_AFTER)
    now = 0.0
    for _ in range(8):  # the backlog moves just before each look
        now = widening.look_at
        widening.moved(now - GROW_AFTER / 10)
        widening.look(now)
    backed_off = widening.look_at
    assert backed_off - now == pytest.approx(GROW_CHECK_MAX)
    widening.begin(now + 0.001)
    assert widening.look_at == backed_off and widening.width == 1
