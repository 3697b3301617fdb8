"""Messages between the parent and its children, defined once for both sides.

Every message is a small frozen dataclass moved as bytes that we serialise
ourselves (`dumps`/`loads`): `multiprocess` would pickle them with the slow
pure-Python pickler. The stdlib's C pickler goes first (a task message in
~15 us); cloudpickle (~40 us: its ``reducer_override`` runs for every object)
only when the stdlib cannot, e.g. a lambda or a class defined in a function
among the arguments or the result, or when the message refers to ``__main__``.

Two pipes per child:

* the task pipe (duplex): parent -> child ``RunTask`` / ``Stop``;
  child -> parent ``ChildReady`` / ``TaskDone`` / ``ChildLog``. Only the child's
  main thread reads it; writes take a lock (log records come from any thread).
* the control pipe (parent -> child): ``CancelTask`` / ``WorkerShutdown``, read
  by the child's listener thread, so cancellation reaches a busy child. Its EOF
  tells the child that the parent is gone.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any, Literal

import cloudpickle
import temporalio.activity

__all__ = [
    "ActivitySpec",
    "CancelTask",
    "ChildBroken",
    "ChildLog",
    "ChildReady",
    "ChildSpec",
    "Outcome",
    "RunTask",
    "Stop",
    "TaskDone",
    "WorkerShutdown",
    "dumps",
    "loads",
]


def dumps(msg: object) -> bytes:
    try:
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError):
        return cloudpickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    # The stdlib refers to ``__main__`` objects by name, and a class defined under
    # ``if __name__ == "__main__":`` does not exist in the other process:
    # cloudpickle sends those by value.
    if b"__main__" in data:
        return cloudpickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    return data


loads = pickle.loads


@dataclass(frozen=True)
class ChildSpec:
    """Everything a child needs, sent once when it starts."""

    index: int
    # cloudpickled ``dict[str, ActivitySpec]``: each callable crosses once per child.
    activities: bytes
    # cloudpickled DataConverter without codec (codecs run in the parent).
    converter: bytes
    # A picklable temporalio SharedHeartbeatSender (shared_state), or None.
    heartbeat_sender: Any
    log_level: int


@dataclass(frozen=True)
class ActivitySpec:
    fn: Any
    no_thread_cancel_exception: bool


@dataclass(frozen=True)
class RunTask:
    task_id: int
    activity_type: str
    args: tuple[Any, ...]
    info: temporalio.activity.Info
    # Seconds between heartbeats shipped to the parent (the sdk-core throttle).
    heartbeat_interval: float


@dataclass(frozen=True)
class Stop:
    """Finish the current loop iteration and exit 0 (recycling, shutdown)."""


@dataclass(frozen=True)
class CancelTask:
    task_id: int
    # temporalio.activity.ActivityCancellationDetails
    details: Any


@dataclass(frozen=True)
class WorkerShutdown:
    """The worker began shutting down: ``activity.is_worker_shutdown()`` turns true."""


@dataclass(frozen=True)
class ChildReady:
    pid: int


@dataclass(frozen=True)
class ChildBroken:
    """The child could not load its activities or converter; it exits next."""

    pid: int
    reason: str


@dataclass(frozen=True)
class ChildLog:
    """A log record from the child (``LogRecord.__dict__``, made picklable), for the
    parent's handlers."""

    record: dict[str, Any]


Outcome = Literal["completed", "failed", "cancelled", "complete_async"]


@dataclass(frozen=True)
class TaskDone:
    task_id: int
    outcome: Outcome
    # completed: the return value (the parent encodes it with the data converter);
    # failed / cancelled: a serialised temporalio.api.failure.v1.Failure (no codec yet).
    value: Any = None
    failure: bytes | None = None
    # Newest heartbeat details as serialised temporalio.api.common.v1.Payloads
    # (codec not applied), or None when the activity never heartbeated.
    last_heartbeat: bytes | None = None
    # Set when a heartbeat could not be converted: the activity is failed with it.
    heartbeat_error: bytes | None = None
    cpu_seconds: float = 0.0
