"""Waiting on the worker's loop until some state says so.

    waiter: await changes.until(predicate, timeout) ─▶ parked on a future
    whoever changes the state: changes.notify()  ─▶ every parked waiter wakes and
                                                    checks its own predicate again

``asyncio.Condition`` needs its lock taken to notify, which a plain callback (a
sentinel's reader, a task's done callback) cannot do; here ``notify()`` is a plain
call. Every waiter re-checks its predicate, so a waiter cancelled after a wake-up
loses nothing for the others.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["Changes"]


class Changes:
    """Waiters for a change of one piece of state, all woken on every change."""

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []

    def __repr__(self) -> str:
        return f"<Changes [{len(self._waiters)} waiting]>"

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def until(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Wait until ``predicate()`` holds, re-checked on every :meth:`notify`.
        False when ``timeout`` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        loop = asyncio.get_running_loop()
        while not predicate():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except asyncio.TimeoutError:
                return predicate()
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        return True

    def notify(self) -> None:
        """The state changed: wake every waiter."""
        if not self._waiters:
            return
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
