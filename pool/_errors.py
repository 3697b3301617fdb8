"""One root exception; subclasses carry the pid, exit code or signal and say what
probably happened and what to check."""

from __future__ import annotations

import signal

__all__ = [
    "ChildBrokenError",
    "ChildProcessDied",
    "CrashLoopError",
    "PoolError",
    "SharedStateLostError",
    "WorkerConfigError",
]


class PoolError(Exception):
    """Root of every error this package raises."""


class WorkerConfigError(PoolError, ValueError):
    """An option or argument the worker cannot honour; the message names the fix."""


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


# What a death by each signal most likely means, for the operator reading the log.
_SIGNAL_CAUSES = {
    signal.SIGKILL: (
        "it was SIGKILLed: most often the kernel's OOM killer (check `dmesg` and "
        "max_memory_per_child) or someone ran `kill -9`"
    ),
    signal.SIGSEGV: (
        "a segmentation fault in native code (a C extension, ctypes or a library bug)"
    ),
    signal.SIGABRT: "it aborted (a failed assertion in native code, or os.abort())",
    signal.SIGBUS: "a bus error in native code (a truncated mmap'ed file, for example)",
    signal.SIGFPE: "a floating-point exception in native code",
    signal.SIGTERM: "it was sent SIGTERM by something other than this worker",
}


def describe_exit(exitcode: int | None) -> str:
    """Turn a ``Process.exitcode`` into words: how it ended and the likely cause."""
    # Imported here: runner is a sibling package and its import is cheap, but
    # keeping the module import-light lets tools import the errors alone.
    from runner import EXIT_BROKEN, EXIT_PARENT_GONE

    if exitcode is None:
        return "it vanished without an exit status"
    if exitcode < 0:
        signum = -exitcode
        cause = _SIGNAL_CAUSES.get(signum, "it was killed by a signal")  # type: ignore[call-overload]
        return f"killed by {_signal_name(signum)} ({signum}): {cause}"
    if exitcode == EXIT_PARENT_GONE:
        return f"exit code {exitcode}: it lost its control pipe to the parent"
    if exitcode == EXIT_BROKEN:
        return f"exit code {exitcode}: it could not load its activities"
    return (
        f"exit code {exitcode}: the activity (or a library it called) ended the process "
        "with sys.exit() or os._exit()"
    )


class ChildProcessDied(PoolError):
    """A child process died while it ran an activity. The activity fails (retryably)."""

    def __init__(
        self,
        *,
        pid: int,
        exitcode: int | None,
        activity_type: str | None = None,
        activity_id: str | None = None,
    ) -> None:
        self.pid = pid
        self.exitcode = exitcode
        self.signal = -exitcode if exitcode is not None and exitcode < 0 else None
        self.activity_type = activity_type
        self.activity_id = activity_id
        what = (
            f" while running activity {activity_type!r} (id {activity_id})" if activity_type else ""
        )
        super().__init__(f"Child process {pid} died{what}; {describe_exit(exitcode)}")


class ChildBrokenError(PoolError):
    """A child could not load the activities or the data converter it was sent."""

    def __init__(self, pid: int, reason: str) -> None:
        self.pid = pid
        self.reason = reason
        super().__init__(
            f"Child process {pid} could not load the worker's activities: {reason}. Every "
            "activity and the data converter must be importable (or picklable by value) "
            "in a fresh Python process started by the pool."
        )


class CrashLoopError(PoolError):
    """Children die faster than the configured rate: stop instead of spinning."""

    def __init__(self, deaths: int, window: float, last: str) -> None:
        self.deaths = deaths
        self.window = window
        super().__init__(
            f"Crash loop: {deaths} child processes died within {window:g} s (the limit set by "
            f"crash_loop_max_deaths / crash_loop_window); the last one: {last}. The worker "
            "stops instead of restarting children forever. Fix the cause (memory, native "
            "code, os._exit in an activity) or raise the limit."
        )


class SharedStateLostError(PoolError):
    """The heartbeat channel (the SharedStateManager) failed; the worker cannot go on."""
