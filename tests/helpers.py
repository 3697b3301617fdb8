"""Test helpers: wait for a condition by polling with a deadline, never by a bare sleep."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["assert_eventually", "async_assert_eventually", "workflow_id"]


def _timeout_error(
    timeout: float, tries: int, last_error: AssertionError | None, last: Any
) -> AssertionError:
    if last_error is not None:
        return AssertionError(f"still failing after {timeout:.1f}s ({tries} tries): {last_error}")
    hint = " (a checker that only asserts must `return True`)" if last is None else ""
    return AssertionError(
        f"condition still false after {timeout:.1f}s ({tries} tries): last result {last!r}{hint}"
    )


def assert_eventually(fn: Callable[[], T], timeout: float = 10.0, interval: float = 0.05) -> T:
    """Call `fn` until it returns a truthy value (returned) without raising AssertionError.

    On timeout, raise an AssertionError carrying the last failure (chained) or last result.
    Any other exception from `fn` propagates at once.
    """
    deadline = time.monotonic() + timeout
    tries = 0
    while True:
        tries += 1
        last_error: AssertionError | None = None
        result: Any = None
        try:
            result = fn()
        except AssertionError as e:
            last_error = e
        else:
            if result:
                return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timeout_error(timeout, tries, last_error, result) from last_error
        time.sleep(min(interval, remaining))


async def async_assert_eventually(
    fn: Callable[[], T | Awaitable[T]], timeout: float = 10.0, interval: float = 0.05
) -> T:
    """`assert_eventually` for async tests: `fn` may be sync or async; waits without blocking."""
    deadline = time.monotonic() + timeout
    tries = 0
    while True:
        tries += 1
        last_error: AssertionError | None = None
        result: Any = None
        try:
            result = fn()
            if inspect.isawaitable(result):
                result = await result
        except AssertionError as e:
            last_error = e
        else:
            if result:
                return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timeout_error(timeout, tries, last_error, result) from last_error
        await asyncio.sleep(min(interval, remaining))


def workflow_id() -> str:
    """A fresh workflow id for one test run."""
    return f"wf-{uuid.uuid4().hex[:10]}"
