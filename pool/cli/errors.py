"""Exit codes and the one error type of the CLI.

    a problem the user can fix ─▶ LaunchError(code, message) ─▶ main: one line on stderr,
                                                                 exit with ``code``

Every problem a user can fix ends the process with one line on stderr (what is wrong and
what to do) and one of the exit codes below; never a traceback.
"""

from __future__ import annotations

__all__ = [
    "EXIT_CONFIG",
    "EXIT_CONNECT",
    "EXIT_FATAL",
    "EXIT_INTERRUPTED",
    "EXIT_NAMESPACE",
    "EXIT_OK",
    "EXIT_USAGE",
    "LaunchError",
    "one_line",
    "require",
]

# -- exit codes (docs/launcher.md has the same table) ---------------------------------

EXIT_OK = 0
"""Stopped as asked (a signal, or the demo finished)."""
EXIT_FATAL = 1
"""The worker (or the dev server) failed while running; the log says why."""
EXIT_USAGE = 2
"""The command line does not parse: unknown flag, missing argument, malformed value."""
EXIT_CONFIG = 3
"""Bad configuration: unknown module, nothing to run, a flag out of range, an option the
worker rejects, an unreadable TLS or config file, a busy port."""
EXIT_CONNECT = 4
"""The Temporal server cannot be reached (or refused the credentials)."""
EXIT_NAMESPACE = 5
"""The namespace does not exist on the server."""
EXIT_INTERRUPTED = 130
"""A signal during start-up, before there was a worker to shut down (128 + SIGINT)."""


class LaunchError(Exception):
    """A problem the user can fix: ``message`` is the one line printed, ``code`` the exit."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def one_line(text: object, limit: int = 400) -> str:
    """Collapse whitespace (multi-line library messages) and cap the length."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def require(ok: bool, message: str) -> None:
    """A value that parses but cannot work: LaunchError(EXIT_CONFIG, message) unless ``ok``."""
    if not ok:
        raise LaunchError(EXIT_CONFIG, message)
