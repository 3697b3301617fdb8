"""When to poll for a child that is still busy.

A task is only polled when a child can start it at once (sdk-python #1168). Taken
literally, that leaves every child idle for one poll round trip after each task:
on a loaded dev server 5-12 ms, which is most of a no-op's cycle and a few percent
of a 0.5 s one. Lookahead polls for a busy child *one poll round trip before its
task is expected to end*, so the next task arrives as the child frees, not after.

The expectation is deliberately conservative, so a task rarely waits in the worker:

* the run time of an activity type is the **longest** of its last few runs (a
  type with fewer than ``MIN_RUNS`` runs gets no lookahead);
* the round trip is the **median** of recent polls that returned a task, capped at
  ``MAX_AHEAD`` (a long poll on a quiet queue is not a round trip);
* a child whose task already ran past that expectation by more than a round trip
  gets no lookahead (it is doing something unusual);
* one promise per busy child, unless tasks are short (below).

Short tasks: when even the longest of the last ``RECENT_KEPT`` runs (any type) fits
several times into one round trip, a child starts several tasks per round trip, and
each child (idle, or busy with its window open) backs up to ``depth()`` polls, at
most ``MAX_DEPTH``. A no-op worker then keeps a few polls in flight per child, as the
stock worker does with its spare slots, while a task still waits no longer than
about one round trip.

When a prediction is wrong the task waits for the first child that frees (any
child), and :class:`pool.ProcessPool` counts it (``tasks_waited``, and for how long).
"""

from __future__ import annotations

import collections
import statistics

__all__ = ["Lookahead"]


class Lookahead:
    MIN_RUNS = 3
    RUNS_KEPT = 8
    POLLS_KEPT = 16
    MAX_AHEAD = 0.05  # seconds
    MAX_TYPES = 1024
    RECENT_KEPT = 16
    MAX_DEPTH = 4

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._runs: dict[str, collections.deque[float]] = {}
        self._polls: collections.deque[float] = collections.deque(maxlen=self.POLLS_KEPT)
        self._recent: collections.deque[float] = collections.deque(maxlen=self.RECENT_KEPT)
        # Recomputed on every observation (once per task), read on every reserve check.
        self._ahead = 0.0
        self._depth = 1

    def __repr__(self) -> str:
        state = "on" if self.enabled else "off"
        ahead_ms = self.ahead() * 1000
        return f"<Lookahead [{state} | ahead {ahead_ms:.1f} ms, {len(self._runs)} types]>"

    def observe_run(self, activity_type: str, seconds: float) -> None:
        """A task of ``activity_type`` ran ``seconds`` (dispatch to result, parent clock)."""
        runs = self._runs.get(activity_type)
        if runs is None:
            if len(self._runs) >= self.MAX_TYPES:  # dynamic activities: forget the oldest type
                del self._runs[next(iter(self._runs))]
            runs = self._runs[activity_type] = collections.deque(maxlen=self.RUNS_KEPT)
        runs.append(seconds)
        self._recent.append(seconds)
        self._update()

    def observe_poll(self, seconds: float) -> None:
        """A poll that returned a task took ``seconds`` from request to response."""
        self._polls.append(seconds)
        self._update()

    def _update(self) -> None:
        if not self.enabled or not self._polls:
            return
        self._ahead = ahead = min(statistics.median(self._polls), self.MAX_AHEAD)
        if len(self._recent) == self.RECENT_KEPT:
            longest = max(max(self._recent), 1e-6)
            self._depth = max(1, min(self.MAX_DEPTH, int(ahead // longest)))

    def ahead(self) -> float:
        """How long before a child's expected end its next task is polled (0: never):
        the median recent round trip, at most ``MAX_AHEAD``."""
        return self._ahead

    def depth(self) -> int:
        """Polls a child may back at once: how many of the recent tasks (the longest of
        the last ``RECENT_KEPT``, any type) it runs within one round trip, 1 to
        ``MAX_DEPTH``."""
        return self._depth

    def window(self, activity_type: str, started: float) -> tuple[float, float] | None:
        """When a child that started ``activity_type`` at ``started`` may back a poll:
        (opens, closes) on the same clock, or None when it may not at all."""
        runs = self._runs.get(activity_type)
        if not self.enabled or runs is None or len(runs) < self.MIN_RUNS:
            return None
        ahead = self._ahead
        if ahead <= 0.0:
            return None
        expected_end = started + max(runs)
        return expected_end - ahead, expected_end + ahead
