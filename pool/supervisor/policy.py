"""Supervision policy as pure functions: plain values (and a clock value) in, a decision out.

a task finished ──▶ after_task: keep the child, or why to recycle it
memory sample   ──▶ memory_verdict: kill, recycle or nothing
a child ended   ──▶ decide_exit(ChildEnd, DeathHistory, now) ──▶ ExitDecision: expected,
                    a death or a start failure; what to log; replace now, after a backoff
                    (respawn_delay), never, or a crash loop (fatal); what its task fails with
"""

from __future__ import annotations

import collections
import enum
import logging
import signal
from dataclasses import dataclass

from .._config import PoolConfig
from .._errors import ChildProcessDied, ChildStartError, CrashLoopError, describe_exit

__all__ = [
    "ChildEnd",
    "DeathHistory",
    "Ending",
    "ExitDecision",
    "Replace",
    "after_task",
    "decide_exit",
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


def is_crash_loop(start_failures: int, config: PoolConfig) -> bool:
    """True when ``start_failures`` within the window (this one included) are too many."""
    return start_failures > config.crash_loop_max_deaths


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


# -- a child ended ----------------------------------------------------------------------


class Ending(enum.Enum):
    """What a child's end says (and what the supervisor counts)."""

    EXPECTED = "expected"  # it was recycled, killed on purpose, or the pool is stopping
    DEATH = "death"  # a ready child died: counted towards the respawn backoff
    START_FAILURE = "start failure"  # it failed before it was ready (is_start_failure)


class Replace(enum.Enum):
    """When the child that ended is replaced."""

    NOW = "now"
    AFTER_BACKOFF = "after a backoff"  # ExitDecision.delay seconds
    NEVER = "never"  # the pool is stopping, or start() fails with the start error
    FATAL = "fatal"  # a crash loop: the worker fails with ExitDecision.fatal


@dataclass(frozen=True)
class ChildEnd:
    """How a child ended, as the supervisor saw it once its sentinel fired."""

    pid: int
    index: int
    exitcode: int | None
    state: str  # what it was doing: "starting", "idle", "busy" or "stopping" (recycled)
    activity_type: str | None = None  # its task's, if it had one
    activity_id: str | None = None
    task_pending: bool = False  # its task still waits for an outcome
    kill_reason: BaseException | None = None  # why it was killed on purpose (ChildKilled)
    start_error: ChildStartError | None = None  # why it cannot start, as it said (ChildBroken)


@dataclass(frozen=True)
class DeathHistory:
    """The pool's state that an end is judged against. Times on the monotonic clock,
    oldest first; entries older than ``crash_loop_window`` are ignored."""

    closing: bool = False  # the pool is stopping
    up: bool = True  # every first child was ready (before: a start failure fails start())
    deaths: tuple[float, ...] = ()  # of ready children, unexpected
    start_failures: tuple[float, ...] = ()  # of replacements
    start_error_known: bool = False  # before up: a start failure is already recorded
    last_said: tuple[str | None, str | None] | None = None  # last start failure logged


@dataclass(frozen=True)
class ExitDecision:
    """What to do about a child that ended."""

    ending: Ending
    replace: Replace
    delay: float = 0.0  # seconds before the replacement starts (AFTER_BACKOFF)
    logs: tuple[tuple[int, str], ...] = ()  # (logging level, text), in order
    task_error: BaseException | None = None  # its pending task fails with this
    counts_as: str | None = None  # "deaths" or "start_failures": record this end there
    fails_start: ChildStartError | None = None  # before up: start() raises this
    fatal: CrashLoopError | None = None  # Replace.FATAL: the worker fails with this
    said: tuple[str | None, str | None] | None = None  # the start failure logged now


def decide_exit(
    end: ChildEnd, history: DeathHistory, now: float, config: PoolConfig
) -> ExitDecision:
    """Judge a child's end: expected (replace it at once), a death (log it, back off
    when deaths repeat) or a start failure (fatal before the pool is up; otherwise
    counted, backing off, and a crash loop past ``crash_loop_max_deaths``)."""
    expected = end.state == "stopping" or end.kill_reason is not None or history.closing
    task_error = _task_error(end)
    if expected:
        replace = Replace.NEVER if history.closing else Replace.NOW
        return ExitDecision(Ending.EXPECTED, replace, task_error=task_error)
    if end.state == "starting" and is_start_failure(end.start_error is not None, end.exitcode):
        return _start_failure(end, history, now, config, task_error)
    died = f"Child process {end.pid} died ({describe_exit(end.exitcode)}) {_doing(end)}"
    deaths = _within_window(history.deaths, now, config) + 1
    replace, delay, backoff = _backoff(end.index, deaths, "died", config)
    return ExitDecision(
        Ending.DEATH,
        replace,
        delay,
        logs=((logging.WARNING, died), *backoff),
        task_error=task_error,
        counts_as="deaths",
    )


def _start_failure(
    end: ChildEnd,
    history: DeathHistory,
    now: float,
    config: PoolConfig,
    task_error: BaseException | None,
) -> ExitDecision:
    error = end.start_error or ChildStartError(end.pid, exitcode=end.exitcode)
    said = (error.error_type, error.error_message)
    logged = (logging.ERROR, _start_failure_text(error, history.last_said))
    if not history.up:  # start() raises the first; later ones say the same
        if history.start_error_known:
            return ExitDecision(Ending.START_FAILURE, Replace.NEVER, task_error=task_error)
        return ExitDecision(
            Ending.START_FAILURE,
            Replace.NEVER,
            logs=(logged,),
            task_error=task_error,
            fails_start=error,
            said=said,
        )
    failures = _within_window(history.start_failures, now, config) + 1
    crash: CrashLoopError | None = None
    backoff: tuple[tuple[int, str], ...] = ()
    if is_crash_loop(failures, config):
        crash = CrashLoopError(failures, config.seconds("crash_loop_window"), error)
        crash.__cause__ = error
        replace, delay = Replace.FATAL, 0.0
    else:
        replace, delay, backoff = _backoff(end.index, failures, "failed to start", config)
    return ExitDecision(
        Ending.START_FAILURE,
        replace,
        delay,
        logs=(logged, *backoff),
        task_error=task_error,
        counts_as="start_failures",
        fatal=crash,
        said=said,
    )


def _start_failure_text(
    error: ChildStartError, last_said: tuple[str | None, str | None] | None
) -> str:
    """A start failure; the child's traceback only when it says something new."""
    if error.child_traceback and (error.error_type, error.error_message) != last_said:
        return f"{error}\nTraceback in the child:\n{error.child_traceback.rstrip()}"
    return str(error)


def _backoff(
    index: int, deaths: int, what: str, config: PoolConfig
) -> tuple[Replace, float, tuple[tuple[int, str], ...]]:
    """Replace the child at ``index`` after the backoff for ``deaths`` recent ones."""
    delay = respawn_delay(deaths, config)
    if delay <= 0:
        return Replace.NOW, 0.0, ()
    window = config.seconds("crash_loop_window")
    text = (
        f"{deaths} children {what} within {window:g} s: "
        f"the replacement of child {index} starts in {delay:.2f} s"
    )
    return Replace.AFTER_BACKOFF, delay, ((logging.WARNING, text),)


def _task_error(end: ChildEnd) -> BaseException | None:
    if not end.task_pending:
        return None
    return end.kill_reason or ChildProcessDied(
        pid=end.pid,
        exitcode=end.exitcode,
        activity_type=end.activity_type,
        activity_id=end.activity_id,
    )


def _doing(end: ChildEnd) -> str:
    if end.activity_type is not None:
        return f"while running {end.activity_type!r}"
    return "before it was ready" if end.state == "starting" else "while idle"


def _within_window(times: tuple[float, ...], now: float, config: PoolConfig) -> int:
    window = config.seconds("crash_loop_window")
    return sum(1 for t in times if now - t <= window)
