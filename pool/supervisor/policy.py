"""Supervision policy as pure functions: plain values (and a clock value) in, a decision out.

a task finished ──▶ after_task: keep the child, or why to recycle it
memory sample   ──▶ memory_verdict: kill, recycle or nothing
a child died    ──▶ is_start_failure / recent / is_crash_loop / respawn_delay
"""

from __future__ import annotations

import collections
import signal

from .._config import PoolConfig

__all__ = [
    "after_task",
    "is_crash_loop",
    "is_start_failure",
    "memory_verdict",
    "recent",
    "respawn_delay",
]


def after_task(child_tasks_done: int, rss: int, config: PoolConfig) -> str | None:
    """Why a child that just finished a task must be replaced, or None to keep it."""
    if config.max_tasks_per_child is not None and child_tasks_done >= config.max_tasks_per_child:
        return f"ran {child_tasks_done} tasks (max_tasks_per_child={config.max_tasks_per_child})"
    if config.max_memory_per_child is not None and rss > config.max_memory_per_child:
        return f"RSS {rss} bytes over max_memory_per_child={config.max_memory_per_child}"
    return None


def memory_verdict(rss: int, busy: bool, config: PoolConfig) -> str | None:
    """``kill``, ``recycle`` or None for a child's current RSS."""
    if busy and config.hard_memory_per_child is not None and rss > config.hard_memory_per_child:
        return "kill"
    if config.max_memory_per_child is not None and rss > config.max_memory_per_child:
        return "recycle"
    return None


def recent(deaths: collections.deque[float], now: float, config: PoolConfig) -> int:
    """Drop deaths older than ``crash_loop_window``; how many remain."""
    window = config.seconds("crash_loop_window")
    while deaths and now - deaths[0] > window:
        deaths.popleft()
    return len(deaths)


def is_crash_loop(failures: collections.deque[float], now: float, config: PoolConfig) -> bool:
    """True when too many start failures fall within the window (older ones dropped)."""
    return recent(failures, now, config) > config.crash_loop_max_deaths


# Signals by which a child's own native code ends it: a crash during start-up (say,
# importing a broken C extension) will happen again in every replacement.
_CRASH_SIGNALS = frozenset(
    {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT}
)


def is_start_failure(reported: bool, exitcode: int | None) -> bool:
    """Whether a child that died before it was ready says that no child can start:
    it reported an error, exited by itself, or crashed in native code. Killed from
    outside (SIGKILL, SIGTERM: the OOM killer, an operator) it says nothing of the
    next one."""
    if reported or (exitcode is not None and exitcode > 0):
        return True
    return exitcode is not None and -exitcode in _CRASH_SIGNALS


def respawn_delay(deaths: int, config: PoolConfig) -> float:
    """Seconds to wait before replacing a child that died as the ``deaths``-th within
    the window: none for the first, then doubling from ``respawn_backoff`` up to
    ``respawn_backoff_max``."""
    if deaths <= 1:
        return 0.0
    doubling = 2.0 ** min(deaths - 2, 64)
    return min(config.seconds("respawn_backoff") * doubling, config.seconds("respawn_backoff_max"))
