"""SIGINT, SIGTERM and SIGHUP on the asyncio loop, and the waits the commands build on them.

signal ─▶ Signals._received ─▶ 1st: ``first`` set (graceful stop)
                               2nd: ``second`` set (cancel now)
                               more: a log line
unless_signalled(coro)  coro's result, or StoppedEarly when ``first`` comes first
first_done(*aws)        the first of ``aws`` done; the waits it made are cancelled
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["Signals", "StoppedEarly", "first_done", "unless_signalled"]

logger = logging.getLogger("pool.launcher")

T = TypeVar("T")


class Signals:
    """SIGINT/SIGTERM/SIGHUP on the loop: the first sets ``first``, the second ``second``.

    SIGHUP (a closed terminal, or an operator's ``kill -HUP``) stops the launcher as
    SIGTERM does: there is nothing to reload, and its default action would end the
    launcher at once (exit 129), unlogged, without a graceful shutdown."""

    HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.count = 0
        self.last = ""
        self.first = asyncio.Event()
        self.second = asyncio.Event()
        for signum in self.HANDLED:
            loop.add_signal_handler(signum, self._received, signum)

    def _received(self, signum: int) -> None:
        self.count += 1
        self.last = signal.Signals(signum).name
        if self.count == 1:
            self.first.set()
        elif self.count == 2:
            self.second.set()
        else:
            logger.warning("%s received: already stopping at once, please wait", self.last)

    def close(self) -> None:
        for signum in self.HANDLED:
            self._loop.remove_signal_handler(signum)


class StoppedEarly(Exception):
    """A signal arrived before the worker was running."""


async def unless_signalled(coro: Coroutine[Any, Any, T], signals: Signals) -> T:
    """``coro``'s result, or StoppedEarly (``coro`` cancelled) if a first signal comes first."""
    work = asyncio.ensure_future(coro)
    stop = asyncio.ensure_future(signals.first.wait())
    try:
        await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if work.done():
        return work.result()
    work.cancel()
    with contextlib.suppress(BaseException):
        await work
    raise StoppedEarly


async def first_done(*aws: Coroutine[Any, Any, Any] | asyncio.Future[Any]) -> set[Any]:
    """Wait until one of ``aws`` is done; cancel the others that were passed as coroutines
    (waits on events), never a future the caller owns."""
    futures = [asyncio.ensure_future(a) for a in aws]
    done, pending = await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    for future, given in zip(futures, aws, strict=True):
        if future in pending and future is not given:
            future.cancel()
    return done
