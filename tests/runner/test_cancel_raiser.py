"""runner.context.CancelRaiser: when a cancel may land in the activity's code (pure),
and pool.activity.threads.ThreadCancelRaiser, its delivery into a thread."""

from __future__ import annotations

import threading

import pytest
import temporalio.exceptions

from pool.activity.threads import ThreadCancelRaiser
from runner.context import CancelRaiser

pytestmark = pytest.mark.unit


def _armed() -> CancelRaiser:
    raiser = CancelRaiser()
    raiser.arm()
    return raiser


def test_a_cancel_before_arming_is_ignored() -> None:
    raiser = CancelRaiser()
    assert not raiser.armed
    assert raiser.request() is False
    raiser.arm()
    assert raiser.take() is False


def test_a_cancel_lands_once() -> None:
    raiser = _armed()
    assert raiser.request() is True
    assert raiser.take() is True
    assert not raiser.armed
    assert raiser.take() is False
    assert raiser.request() is False


def test_nothing_to_take_without_a_request() -> None:
    assert _armed().take() is False


def test_a_shield_defers_the_cancel_to_its_exit() -> None:
    raiser = _armed()
    with pytest.raises(temporalio.exceptions.CancelledError), raiser.shielded():
        assert raiser.request() is False  # do not interrupt inside the shield
        assert raiser.take() is False
    assert raiser.take() is False  # raised once, at the exit


def test_nested_shields_raise_at_the_outermost_exit() -> None:
    raiser = _armed()
    with pytest.raises(temporalio.exceptions.CancelledError), raiser.shielded():
        with raiser.shielded():
            raiser.request()
        assert raiser.armed  # still pending: the outer shield is open
    assert not raiser.armed


def test_a_shield_without_a_cancel_raises_nothing() -> None:
    raiser = _armed()
    with raiser.shielded():
        pass
    assert raiser.request() is True


def test_disarm_drops_a_pending_cancel() -> None:
    raiser = _armed()
    with raiser.shielded():
        raiser.request()
        raiser.disarm()
    raiser.arm()
    assert raiser.take() is False


def test_arm_starts_afresh() -> None:
    raiser = _armed()
    raiser.request()
    raiser.arm()  # the next task: the last one's pending cancel is gone
    assert raiser.take() is False
    assert raiser.request() is True


def _run_bound(raiser: ThreadCancelRaiser, body: object) -> list[str]:
    """Run ``body(raiser)`` in a thread bound to ``raiser``; what happened there."""
    seen: list[str] = []

    def target() -> None:
        try:
            try:
                raiser.bind()
                body(raiser)  # type: ignore[operator]
                seen.append("returned")
            finally:
                raiser.unbind()
        except temporalio.exceptions.CancelledError:
            seen.append("cancelled")

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    return seen


def _spin(raiser: ThreadCancelRaiser) -> None:
    # The asynchronous exception lands within a few bytecodes of being set.
    for _ in range(10_000_000):
        pass


def test_a_cancel_requested_before_the_thread_binds_lands_as_it_binds() -> None:
    raiser = ThreadCancelRaiser()
    assert raiser.request() is False  # no thread yet: kept pending
    assert _run_bound(raiser, _spin) == ["cancelled"]


def test_a_cancel_inside_a_thread_lands_there() -> None:
    def body(raiser: ThreadCancelRaiser) -> None:
        assert raiser.request() is True
        _spin(raiser)

    assert _run_bound(ThreadCancelRaiser(), body) == ["cancelled"]


def test_a_shielded_thread_is_cancelled_at_the_shield_exit() -> None:
    inside: list[str] = []

    def body(raiser: ThreadCancelRaiser) -> None:
        with raiser.shielded():
            assert raiser.request() is False
            _spin(raiser)
            inside.append("shield ran to its end")

    assert _run_bound(ThreadCancelRaiser(), body) == ["cancelled"]
    assert inside == ["shield ran to its end"]


def test_no_cancel_lets_the_thread_return() -> None:
    assert _run_bound(ThreadCancelRaiser(), lambda raiser: None) == ["returned"]
