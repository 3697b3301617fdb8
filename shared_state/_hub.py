"""The heartbeat hub: a coalescing mailbox hosted in the manager server process.

Senders ``post(token, details)``; the one drainer in the owning process calls
``drain(timeout)`` in a loop. Only the newest details per token are kept, so memory is
bounded by the number of distinct tokens, and ``post`` never waits for room.

This module is imported by the manager server process, so it stays free of heavy imports.
"""

from __future__ import annotations

import threading
import time
from typing import Any

__all__ = ["Batch", "HeartbeatHub"]

# What drain() returns: (heartbeats as (token, details) in posting order of each token's
# first pending post, flush requests as tokens in request order).
Batch = tuple[list[tuple[bytes, Any]], list[bytes]]


class HeartbeatHub:
    """Newest-details-per-token mailbox, safe to call from many server threads."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._pending: dict[bytes, Any] = {}
        self._flushes: list[bytes] = []
        self._closed = False
        self._posted = 0

    def post(self, token: bytes, details: Any) -> None:
        """Make ``details`` the pending heartbeat of ``token``, replacing an undrained one."""
        with self._cond:
            self._pending[token] = details
            self._posted += 1
            self._cond.notify()

    def flush(self, token: bytes) -> None:
        """Ask the drainer to report back once everything posted so far for ``token`` has
        been handed to its function (the marker comes out of drain() after those posts)."""
        with self._cond:
            self._flushes.append(token)
            self._cond.notify()

    def drain(self, timeout: float | None) -> Batch:
        """Wait until something is pending, the hub is closed, or ``timeout`` passes; then
        take everything pending at once."""
        with self._cond:
            if timeout is None:
                while not (self._pending or self._flushes or self._closed):
                    self._cond.wait()
            else:
                deadline = time.monotonic() + timeout
                while not (self._pending or self._flushes or self._closed):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            beats = list(self._pending.items())
            flushes = self._flushes
            self._pending = {}
            self._flushes = []
            return beats, flushes

    def close(self) -> None:
        """Wake every drain() now and make later ones return at once."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def stats(self) -> dict[str, int]:
        """Pending tokens, pending flushes and heartbeats posted since start."""
        with self._cond:
            return {
                "hub_pending": len(self._pending),
                "hub_flushes": len(self._flushes),
                "hub_posted": self._posted,
            }
