"""One root exception; subclasses carry the pid, exit code or signal and say what
probably happened and what to check."""

from __future__ import annotations

import signal

__all__ = [
    "ChildProcessDied",
    "ChildStartError",
    "ChildTraceback",
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
        return f"exit code {exitcode}: it failed before it was ready"
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


class ChildTraceback(Exception):
    """The traceback of an error raised in a child, as the cause of its copy here
    (``concurrent.futures`` does the same for a ``ProcessPoolExecutor``)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\nTraceback in the child:\n{self.text}"""'


class ChildStartError(PoolError):
    """A child failed before it was ready: its activities or data converter could not
    be loaded, the heartbeat channel refused it, or the initializer raised.

    Carries the child's own exception (``error_type``, ``error_message``) and its
    ``child_traceback`` (also its ``__cause__``, a :class:`ChildTraceback`, so a
    printed traceback shows the child's); ``None`` for all three when the child died
    without saying why (a signal, or an error before the pool's code ran: see its
    stderr).
    """

    def __init__(
        self,
        pid: int,
        *,
        error_type: str | None = None,
        error_message: str | None = None,
        child_traceback: str | None = None,
        exitcode: int | None = None,
    ) -> None:
        self.pid = pid
        self.error_type = error_type
        self.error_message = error_message
        self.child_traceback = child_traceback
        self.exitcode = exitcode
        if error_type is not None:
            what = f"{error_type}: {error_message}"
            hint = (
                "The child's traceback shows where: loading an activity (its module must "
                "import in a fresh process), the data converter or the heartbeat channel, "
                "or the initializer"
            )
        else:
            what = f"it died ({_describe_start_exit(exitcode)})"
            hint = "Its stderr (above) may say why"
        super().__init__(f"Child process {pid} failed before it was ready: {what}. {hint}.")
        if child_traceback:
            self.__cause__ = ChildTraceback(child_traceback)


def _describe_start_exit(exitcode: int | None) -> str:
    if exitcode is not None and exitcode > 0:
        # Before the pool's code ran: the start method's own bootstrap failed (for
        # example re-importing the main module), and it printed the traceback.
        return f"exit code {exitcode} while starting"
    return describe_exit(exitcode)


class CrashLoopError(PoolError):
    """Replacement children keep failing before they are ready: stop instead of spinning.

    Its ``__cause__`` is the last :class:`ChildStartError`."""

    def __init__(self, failures: int, window: float, last: ChildStartError) -> None:
        self.failures = failures
        self.window = window
        super().__init__(
            f"Crash loop: {failures} child processes failed to start within {window:g} s "
            "(the limit set by crash_loop_max_deaths / crash_loop_window); the last: "
            f"{last} The worker stops, as no child can run a task. "
            "Fix the cause or raise the limit."
        )


class SharedStateLostError(PoolError):
    """The heartbeat channel (the SharedStateManager) failed; the worker cannot go on."""
