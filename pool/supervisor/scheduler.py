"""Which child a task goes to and how many polls the children can back: pure state,
no I/O, no asyncio (the caller passes the clock's value).

    child ready / task done ──▶ add_idle ──▶ idle stack (the child that finished last on top)
    poller: promisable(now) > 0 ──▶ promise() ──▶ reserved + 1
    run(task) ──▶ take_idle() ──▶ task_started(child, type, now) ──▶ its lookahead window
    outcome  ──▶ task_ended(child, type, ran) ──▶ Lookahead.observe_run, window closed
    a child stops or dies ──▶ forget(child)

A promise is a poll backed by a child: an idle one, a busy one whose lookahead window
is open (pool.supervisor.lookahead), each backing ``lookahead.depth()`` polls, plus
``prefetch`` polls beyond every child. A promise stays counted until its task has a
child (:meth:`Scheduler.give_back`), so a task waiting for a busy child still holds it.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Generic, TypeVar

from .lookahead import Lookahead

__all__ = ["Reservation", "Scheduler"]

C = TypeVar("C")  # a child: hashable by identity


class Reservation:
    """A child promised to one task (``ProcessPool.reserve`` or ``claim``): held until
    it ends, once.

    It ends by :meth:`use` (``ProcessPool.run``: the task has its child) or by
    :meth:`release` (nobody needs it: the poll came back empty, the task runs outside
    the children, or it waits for its activity type's limit). Both are idempotent, so
    every path that may hold it ends it without knowing whether another did already.
    ``give_back(notify)`` returns the promise to the scheduler; ``notify``: wake those
    waiting for a promise (a used one turns into a busy child, so it frees nothing).
    """

    __slots__ = ("_give_back", "held")

    def __init__(self, give_back: Callable[[bool], None]) -> None:
        self._give_back = give_back
        self.held = True

    def __repr__(self) -> str:
        return f"<Reservation {'held' if self.held else 'ended'}>"

    def use(self) -> None:
        """The task took its child."""
        if self.held:
            self.held = False
            self._give_back(False)

    def release(self) -> None:
        """Give the promise back unused: another poll may be made for the child."""
        if self.held:
            self.held = False
            self._give_back(True)


class Scheduler(Generic[C]):
    """The promises made to pollers and the idle children that will keep them."""

    def __init__(self, lookahead: Lookahead, prefetch: int = 0) -> None:
        self.lookahead = lookahead
        self.prefetch = prefetch
        self.reserved = 0  # promises made whose task has no child yet
        self._idle: collections.deque[C] = collections.deque()
        self._windows: dict[C, tuple[float, float]] = {}  # busy child -> lookahead window
        self.promised_ahead = 0  # promises backed by a busy child (lookahead) or prefetch
        self.tasks_waited = 0  # tasks that found no idle child ...
        self.wait_seconds = 0.0  # ... how long they waited in all ...
        self.wait_max = 0.0  # ... and the longest wait

    def __repr__(self) -> str:
        return (
            f"<Scheduler [idle: {len(self._idle)}, reserved: {self.reserved}, "
            f"windows: {len(self._windows)} | prefetch: {self.prefetch}]>"
        )

    # -- promises ----------------------------------------------------------------------

    def free(self) -> int:
        """Idle children not yet promised to a poller."""
        return len(self._idle) - self.reserved

    def promisable(self, now: float) -> int:
        """Promises that can still be made at ``now``: idle children and busy children
        whose lookahead window is open, each backing ``lookahead.depth()`` polls, plus
        ``prefetch``, less those made."""
        backing = len(self._idle)
        for opens, closes in self._windows.values():
            if opens <= now <= closes:
                backing += 1
        return backing * self.lookahead.depth() + self.prefetch - self.reserved

    def promise(self) -> None:
        """Make a promise (the caller checked :meth:`promisable`)."""
        if len(self._idle) <= self.reserved:
            self.promised_ahead += 1  # backed by a busy child (or prefetch)
        self.reserved += 1

    def promise_now(self) -> None:
        """Make a promise beyond what :meth:`promisable` allows: for work already
        accepted (a local activity)."""
        self.reserved += 1

    def give_back(self) -> None:
        """A promise is kept (its task has a child) or given back (no task came)."""
        self.reserved -= 1

    # -- idle children -----------------------------------------------------------------

    @property
    def idle(self) -> int:
        return len(self._idle)

    def add_idle(self, child: C) -> None:
        self._idle.append(child)

    def take_idle(self) -> C:
        """The idle child that finished last: its code and data are still in the CPU
        caches (one that waited longer has had them evicted: ~20 us per task)."""
        return self._idle.pop()

    def forget(self, child: C) -> None:
        """``child`` can take no task (it stops, or it died): not idle, no window."""
        if child in self._idle:
            self._idle.remove(child)
        self._windows.pop(child, None)

    # -- tasks ---------------------------------------------------------------------------

    def task_started(self, child: C, activity_type: str, now: float) -> float | None:
        """``child`` started a task of ``activity_type`` at ``now``. Returns when its
        lookahead window opens, if later than ``now``: :meth:`promisable` grows then.
        A window already open (a short task) backs what the child backed while idle."""
        window = self.lookahead.window(activity_type, now)
        if window is None:
            return None
        self._windows[child] = window
        return window[0] if window[0] > now else None

    def task_ended(self, child: C, activity_type: str | None, ran: float | None) -> None:
        """``child``'s task ended; ``ran``: its run time, when it says something of the
        next run of ``activity_type`` (it completed or failed: not cancelled)."""
        self._windows.pop(child, None)
        if activity_type is not None and ran is not None:
            self.lookahead.observe_run(activity_type, ran)

    def wait_began(self) -> None:
        """A task found no idle child and waits for one."""
        self.tasks_waited += 1

    def wait_ended(self, seconds: float) -> None:
        self.wait_seconds += seconds
        self.wait_max = max(self.wait_max, seconds)
