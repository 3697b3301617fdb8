"""sdk-core's retry rules with a fake clock and a fake random source: no server."""

from __future__ import annotations

import random

import grpc
import pytest

from pool.activity.retry import (
    NORMAL_BACKOFF,
    POLL_BACKOFF,
    POLL_FATAL_BUDGET,
    POLL_FATAL_INTERVAL,
    call_retry_delay,
    is_too_large,
    poll_retry,
)

pytestmark = pytest.mark.unit

TOO_LARGE = "grpc: received message larger than max (5 vs. 4)"


class Jitter:
    """A random source that always answers one end (or the middle) of the range."""

    def __init__(self, where: str) -> None:
        self.where = where

    def uniform(self, a: float, b: float) -> float:
        return {"low": a, "mid": (a + b) / 2, "high": b}[self.where]


def _delay(code, attempt=1, elapsed=0.0, give_up_in=None, details="x", where="mid"):
    now = 1000.0
    return call_retry_delay(
        code,
        details,
        attempt=attempt,
        started=now - elapsed,
        now=now,
        rng=Jitter(where),
        give_up_at=None if give_up_in is None else now + give_up_in,
    )


def test_transient_errors_back_off_like_core():
    assert _delay(grpc.StatusCode.UNAVAILABLE) == pytest.approx(0.1)
    assert _delay(grpc.StatusCode.UNAVAILABLE, where="low") == pytest.approx(0.08)  # -20 %
    assert _delay(grpc.StatusCode.UNAVAILABLE, where="high") == pytest.approx(0.12)  # +20 %
    assert _delay(grpc.StatusCode.UNAVAILABLE, attempt=3) == pytest.approx(0.1 * 1.7**2)
    assert _delay(grpc.StatusCode.UNAVAILABLE, attempt=9, where="high") == pytest.approx(6.0)
    assert _delay(grpc.StatusCode.UNAVAILABLE, attempt=10) is None  # 10 attempts at most
    assert _delay(grpc.StatusCode.UNAVAILABLE, elapsed=10.5) is None  # 10 s at most
    assert _delay(grpc.StatusCode.UNAVAILABLE, elapsed=9.85) is not None  # 9.85 + 0.1 <= 10


def test_a_seeded_random_source_gives_the_same_jitter():
    def delays(seed: int) -> list[float | None]:
        rng = random.Random(seed)
        return [
            call_retry_delay(
                grpc.StatusCode.UNAVAILABLE, "x", attempt=n, started=0.0, now=0.0, rng=rng
            )
            for n in range(1, 5)
        ]

    first, *_ = delays(7)
    assert delays(7) == delays(7)
    assert first is not None and 0.08 <= first <= 0.12


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.CANCELLED],
)
def test_answers_are_not_retried(code):
    assert _delay(code) is None


def test_resource_exhausted_waits_at_least_the_throttle_backoff():
    assert _delay(grpc.StatusCode.RESOURCE_EXHAUSTED, where="low") == pytest.approx(0.8)
    assert is_too_large(grpc.StatusCode.RESOURCE_EXHAUSTED, TOO_LARGE)
    assert not is_too_large(grpc.StatusCode.INTERNAL, TOO_LARGE)
    assert _delay(grpc.StatusCode.RESOURCE_EXHAUSTED, details=TOO_LARGE) is None


def test_a_result_is_held_until_the_tasks_own_deadline():
    assert _delay(grpc.StatusCode.UNAVAILABLE, elapsed=20, give_up_in=30) is not None
    assert _delay(grpc.StatusCode.UNAVAILABLE, elapsed=20, give_up_in=0) is None
    late = _delay(grpc.StatusCode.UNAVAILABLE, attempt=40, elapsed=20, give_up_in=3000)
    assert late == pytest.approx(NORMAL_BACKOFF.maximum)  # capped while held


def test_poll_backoff_is_capped():
    assert POLL_BACKOFF.delay(1, Jitter("low")) == pytest.approx(0.16)
    assert POLL_BACKOFF.delay(1, Jitter("high")) == pytest.approx(0.24)
    assert POLL_BACKOFF.delay(50, Jitter("high")) == pytest.approx(10 * 1.2)


def test_polls_retry_transient_errors_without_end():
    for code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        retry = poll_retry(code, attempt=1000, fatal_since=5.0, now=1e6, rng=Jitter("mid"))
        assert retry is not None and retry.fatal_since is None  # the fatal run is over
        assert retry.delay == pytest.approx(POLL_BACKOFF.maximum)
    throttled = poll_retry(
        grpc.StatusCode.RESOURCE_EXHAUSTED, attempt=1, fatal_since=None, now=0.0, rng=Jitter("low")
    )
    assert throttled is not None and throttled.delay == pytest.approx(0.8)


def test_other_poll_errors_retry_every_10_s_for_60_s():
    code, rng = grpc.StatusCode.PERMISSION_DENIED, Jitter("mid")
    first = poll_retry(code, attempt=1, fatal_since=None, now=100.0, rng=rng)
    assert first is not None and (first.delay, first.fatal_since) == (POLL_FATAL_INTERVAL, 100.0)
    later = poll_retry(code, attempt=5, fatal_since=100.0, now=159.0, rng=rng)
    assert later is not None and later.fatal_since == 100.0
    assert (
        poll_retry(code, attempt=7, fatal_since=100.0, now=100 + POLL_FATAL_BUDGET, rng=rng) is None
    )
