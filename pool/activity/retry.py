"""sdk-core's retry rules for the activity side's RPCs (activity-protocol.md §6), pure.

    a failed RPC (status code, details) + attempt + the clock's now + a random source
        call_retry_delay  -> seconds to wait before the next attempt, or None: give up
        poll_retry        -> seconds to wait and since when non-transient errors last,
                             or None: give up (the worker fails)

Normal calls back off 100 ms x1.7 up to 5 s for at most 10 s or 10 attempts; polls
retry without end on transient errors and every 10 s for 60 s on the others;
``RESOURCE_EXHAUSTED`` waits at least core's throttle backoff; ``NOT_FOUND`` and other
answers, and a message too large, are never retried. The caller owns the clock (any
monotonic one) and the random source (``random.Random``), so tests pass fakes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import grpc

__all__ = [
    "NORMAL_BACKOFF",
    "POLL_BACKOFF",
    "Backoff",
    "PollRetry",
    "RandomSource",
    "call_retry_delay",
    "is_too_large",
    "poll_retry",
]

RETRYABLE = frozenset(
    {
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
    }
)
# A poll also retries these without limit (the transport or our own deadline).
POLL_RETRYABLE = RETRYABLE | {grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED}
_TOO_LARGE_PREFIXES = (
    "grpc: received message larger than max",
    "grpc: received message after decompression larger than max",
    "grpc: message after decompression larger than max",
)


class RandomSource(Protocol):
    """What the jitter needs of ``random.Random``."""

    def uniform(self, a: float, b: float) -> float: ...


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with random jitter, and the budget it retries within."""

    initial: float
    multiplier: float
    maximum: float
    max_elapsed: float | None
    max_attempts: int | None
    jitter: float = 0.2

    def delay(self, attempt: int, rng: RandomSource) -> float:
        base = min(self.initial * self.multiplier ** (attempt - 1), self.maximum)
        return base * rng.uniform(1 - self.jitter, 1 + self.jitter)


NORMAL_BACKOFF = Backoff(
    initial=0.1, multiplier=1.7, maximum=5.0, max_elapsed=10.0, max_attempts=10
)
POLL_BACKOFF = Backoff(
    initial=0.2, multiplier=2.0, maximum=10.0, max_elapsed=None, max_attempts=None
)
# RESOURCE_EXHAUSTED waits at least this much (core's throttle backoff).
THROTTLE_BACKOFF = Backoff(
    initial=1.0, multiplier=2.0, maximum=10.0, max_elapsed=None, max_attempts=None
)
# Other errors on a poll: every 10 s for 60 s, then the worker fails.
POLL_FATAL_INTERVAL = 10.0
POLL_FATAL_BUDGET = 60.0


def is_too_large(code: grpc.StatusCode, details: str) -> bool:
    """A message over gRPC's size limit: retrying sends the same bytes again."""
    return code == grpc.StatusCode.RESOURCE_EXHAUSTED and details.startswith(_TOO_LARGE_PREFIXES)


def _backoff_delay(
    code: grpc.StatusCode, attempt: int, backoff: Backoff, rng: RandomSource
) -> float:
    delay = backoff.delay(attempt, rng)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        delay = max(delay, THROTTLE_BACKOFF.delay(attempt, rng))
    return delay


def call_retry_delay(
    code: grpc.StatusCode,
    details: str,
    *,
    attempt: int,
    started: float,
    now: float,
    rng: RandomSource,
    backoff: Backoff = NORMAL_BACKOFF,
    give_up_at: float | None = None,
) -> float | None:
    """How long to wait before attempt ``attempt + 1`` of a call first sent at
    ``started``; None: give up. ``give_up_at`` (same clock) extends the budget, so a
    result is held while the server is away until the task's own deadline passes."""
    if code not in RETRYABLE or is_too_large(code, details):
        return None
    delay = _backoff_delay(code, attempt, backoff, rng)
    within_budget = (
        backoff.max_elapsed is None or now + delay - started <= backoff.max_elapsed
    ) and (backoff.max_attempts is None or attempt < backoff.max_attempts)
    if within_budget:
        return delay
    if give_up_at is not None and now + delay < give_up_at:
        return min(delay, backoff.maximum)
    return None


@dataclass(frozen=True)
class PollRetry:
    """Wait ``delay`` seconds, then poll again; ``fatal_since``: when the current run
    of non-transient errors began (None after a transient one)."""

    delay: float
    fatal_since: float | None


def poll_retry(
    code: grpc.StatusCode,
    *,
    attempt: int,
    fatal_since: float | None,
    now: float,
    rng: RandomSource,
) -> PollRetry | None:
    """What to do after a failed long poll; None: give up (polling failed for good)."""
    if code in POLL_RETRYABLE:
        return PollRetry(_backoff_delay(code, attempt, POLL_BACKOFF, rng), None)
    since = now if fatal_since is None else fatal_since
    if now - since >= POLL_FATAL_BUDGET:
        return None
    return PollRetry(POLL_FATAL_INTERVAL, since)
