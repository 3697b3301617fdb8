"""The exceptions of ``shared_state``: one root, a subclass per thing that went wrong."""

from __future__ import annotations

__all__ = [
    "HeartbeatDetailsError",
    "SharedStateClosedError",
    "SharedStateError",
    "SharedStateUnreachableError",
]


class SharedStateError(Exception):
    """Root of every error raised by ``shared_state``."""


class SharedStateUnreachableError(SharedStateError):
    """The manager server process could not be reached, or stopped answering.

    ``address`` is its socket path; ``__cause__`` holds the low-level error.
    """

    def __init__(self, address: str, problem: str) -> None:
        self.address = address
        self.problem = problem
        super().__init__(
            f"the shared state manager at {address} is unreachable: {problem}. Its server "
            "process has probably exited (killed by a signal or the OOM killer, or shut down "
            "together with the worker that owns it) or is stuck; heartbeats and events that "
            "go through it are lost. Check that the worker owning this manager is still "
            "running and what ended the manager process."
        )

    def __reduce__(self) -> tuple[type[SharedStateUnreachableError], tuple[str, str]]:
        return (type(self), (self.address, self.problem))


class SharedStateClosedError(SharedStateError):
    """The manager was shut down, or its heartbeat channel has failed, so it takes no new
    heartbeaters."""


class HeartbeatDetailsError(SharedStateError, TypeError):
    """Heartbeat details could not be pickled (stdlib pickle, then cloudpickle)."""
