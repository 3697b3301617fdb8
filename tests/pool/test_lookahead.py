"""The lookahead's pure decisions: when a busy child may back a poll."""

from __future__ import annotations

import pytest

from pool.supervisor.lookahead import Lookahead

pytestmark = pytest.mark.unit


def _seasoned(runs: list[float], polls: list[float], enabled: bool = True) -> Lookahead:
    la = Lookahead(enabled)
    for seconds in runs:
        la.observe_run("t", seconds)
    for seconds in polls:
        la.observe_poll(seconds)
    return la


def test_no_window_until_the_type_ran_min_runs_times():
    la = _seasoned([0.2] * (Lookahead.MIN_RUNS - 1), [0.01])
    assert la.window("t", 100.0) is None
    la.observe_run("t", 0.2)
    assert la.window("t", 100.0) == pytest.approx((100.19, 100.21))
    assert la.window("other type", 100.0) is None


def test_the_window_is_centred_on_the_longest_recent_run():
    la = _seasoned([0.1, 0.5, 0.2], [0.01, 0.03, 0.02])
    # longest run 0.5 s, median round trip 0.02 s
    assert la.window("t", 10.0) == pytest.approx((10.48, 10.52))


def test_only_the_last_runs_count():
    la = _seasoned([9.0] + [0.1] * Lookahead.RUNS_KEPT, [0.01])
    assert la.window("t", 0.0) == pytest.approx((0.09, 0.11))


def test_a_long_poll_is_not_a_round_trip():
    la = _seasoned([1.0] * 3, [30.0, 45.0, 60.0])
    assert la.ahead() == Lookahead.MAX_AHEAD
    assert la.window("t", 0.0) == pytest.approx((1.0 - Lookahead.MAX_AHEAD, 1.0 + 0.05))


def test_no_poll_seen_or_disabled_means_no_window():
    assert _seasoned([0.1] * 3, []).window("t", 0.0) is None
    off = _seasoned([0.1] * 3, [0.01], enabled=False)
    assert off.window("t", 0.0) is None and off.ahead() == 0.0


def test_types_are_bounded_forgetting_the_oldest():
    la = _seasoned([], [0.01])
    last = Lookahead.MAX_TYPES + 9
    for i in range(last + 1):
        for _ in range(Lookahead.MIN_RUNS):
            la.observe_run(f"type-{i}", 0.1)
    assert la.window("type-0", 0.0) is None
    assert la.window(f"type-{last}", 0.0) is not None
    assert f"{Lookahead.MAX_TYPES} types" in repr(la)


def test_depth_counts_recent_tasks_that_fit_in_a_round_trip():
    la = _seasoned([], [0.02])
    assert la.depth() == 1  # no history yet
    for _ in range(Lookahead.RECENT_KEPT):
        la.observe_run("noop", 0.004)
    assert la.depth() == Lookahead.MAX_DEPTH  # 5 fit, capped
    la.observe_run("noop", 0.0075)
    assert la.depth() == 2  # the longest recent run decides: 2 fit in 20 ms
    la.observe_run("crunch", 0.5)
    assert la.depth() == 1  # one long task among them: back to one per child
    assert Lookahead(enabled=False).depth() == 1
