"""Fakes of the dispatcher's neighbours, so that it can be tested with neither a server
nor a child process.

    Dispatcher ─▶ FakeActivityService.call(name, request): recorded, answered with the
                  RPC's empty response (or an error the test sets)
               ─▶ FakeProcessPool.run(RunTask): ``respond(task)`` -> TaskDone at once,
                  or held until the test calls ``finish`` or the dispatcher ``cancel``s
               ─▶ FakeSharedState: the heartbeat hub's register / unregister, recorded

The dispatcher's integration tests run against the real dev server and real children;
these are for the decisions in between (what is reported, when, and what is released).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import temporalio.converter
import temporalio.exceptions
from temporalio.api.failure.v1 import Failure
from temporalio.api.workflowservice.v1 import (
    RecordActivityTaskHeartbeatResponse,
    RespondActivityTaskCanceledResponse,
    RespondActivityTaskCompletedResponse,
    RespondActivityTaskFailedResponse,
)

from runner import RunTask, TaskDone

from ..activity.wire import as_message
from ..supervisor import ChildKilled, Reservation

__all__ = [
    "FakeActivityService",
    "FakeProcessPool",
    "FakeSharedState",
    "encoded_failure",
]

_RESPONSES: dict[str, Callable[[], Any]] = {
    "RespondActivityTaskCompleted": RespondActivityTaskCompletedResponse,
    "RespondActivityTaskFailed": RespondActivityTaskFailedResponse,
    "RespondActivityTaskCanceled": RespondActivityTaskCanceledResponse,
    "RecordActivityTaskHeartbeat": RecordActivityTaskHeartbeatResponse,
}


def encoded_failure(error: BaseException) -> bytes:
    """``error`` as a child sends it: a serialised Failure (default converter, no codec)."""
    dc = temporalio.converter.DataConverter.default
    failure = Failure()
    dc.failure_converter.to_failure(error, dc.payload_converter, failure)
    return failure.SerializeToString()


class FakeActivityService:
    """Stands in for ``pool.activity.service.ActivityService``."""

    def __init__(self, namespace: str = "default", identity: str = "fake-worker") -> None:
        self.namespace = namespace
        self.identity = identity
        self.calls: list[tuple[str, Any]] = []  # (RPC name, request as parsed), in order
        self.sent: list[Any] = []  # the requests as given (a Spliced one unparsed)
        self.errors: dict[str, BaseException] = {}  # RPC name -> what the call raises
        self.heartbeat_response = RecordActivityTaskHeartbeatResponse()
        self.generation = 0  # ActivityService counts replace_client
        self.ended_calls: list[tuple[str, Any, float]] = []  # call_ended: calls of children

    async def call(self, name: str, request: Any, **_retry: Any) -> Any:
        self.sent.append(request)
        self.calls.append((name, as_message(request)))  # as the server reads it
        error = self.errors.get(name)
        if error is not None:
            raise error
        if name == "RecordActivityTaskHeartbeat":
            return self.heartbeat_response
        return _RESPONSES[name]()

    def call_ended(self, name: str, code: Any, seconds: float) -> None:
        self.ended_calls.append((name, code, seconds))

    def requests(self, name: str) -> list[Any]:
        """Every request sent to the RPC ``name``."""
        return [request for called, request in self.calls if called == name]

    def reports(self) -> list[str]:
        """The names of the Respond* RPCs sent, in order."""
        return [name for name, _ in self.calls if name.startswith("Respond")]


class FakeProcessPool:
    """Stands in for ``pool.supervisor.ProcessPool`` as the dispatcher uses it.

    ``respond(task)`` is the child: it returns the TaskDone, or raises what the pool's
    future would (``ChildProcessDied``, ``ChildKilled``, ...). Without it every task is
    held until :meth:`finish`. A cancel of a held task ends it as a child does when the
    activity raises the CancelledError (``kill_on_cancel``: as the pool does when the
    cancel grace passes)."""

    def __init__(
        self,
        respond: Callable[[RunTask], TaskDone] | None = None,
        *,
        pid: int = 4242,
        kill_on_cancel: bool = False,
    ) -> None:
        self._respond = respond
        self.pid = pid
        self.kill_on_cancel = kill_on_cancel
        self.ran: list[RunTask] = []
        self.reservations: list[Reservation | None] = []  # run(reservation=) of each task
        self.reservations_used = 0  # promises that ended in run() ...
        self.reservations_released = 0  # ... and those given back unused
        self.cancels: list[tuple[int, Any, str]] = []  # (task id, details, reason)
        self.shutdown_broadcast = False
        self._held: dict[int, asyncio.Future[TaskDone]] = {}
        self.started = asyncio.Event()  # set by every run()

    async def run(
        self, task: RunTask, *, reservation: Reservation | None = None
    ) -> tuple[int, asyncio.Future[TaskDone]]:
        self.ran.append(task)
        self.reservations.append(reservation)
        if reservation is not None:
            reservation.use()
        future: asyncio.Future[TaskDone] = asyncio.get_running_loop().create_future()
        if self._respond is None:
            self._held[task.task_id] = future
        else:
            try:
                future.set_result(self._respond(task))
            except BaseException as err:
                future.set_exception(err)
        self.started.set()
        return self.pid, future

    def promise(self) -> Reservation:
        """A reservation as ``ProcessPool.reserve`` hands out, counted when it ends."""
        return Reservation(self._reservation_ended)

    def _reservation_ended(self, released: bool) -> None:
        if released:
            self.reservations_released += 1
        else:
            self.reservations_used += 1

    def finish(self, task_id: int, done: TaskDone) -> None:
        """End a held task with ``done``."""
        self._held.pop(task_id).set_result(done)

    def cancel(self, pid: int, task_id: int, details: Any, reason: str) -> None:
        self.cancels.append((task_id, details, reason))
        future = self._held.pop(task_id, None)
        if future is None:
            return
        if self.kill_on_cancel:
            future.set_exception(ChildKilled(pid, "its cancel grace passed"))
        else:
            cancelled = encoded_failure(temporalio.exceptions.CancelledError("Cancelled"))
            future.set_result(TaskDone(task_id=task_id, outcome="cancelled", failure=cancelled))

    def broadcast_shutdown(self) -> None:
        self.shutdown_broadcast = True


class FakeSharedState:
    """Stands in for the heartbeat hub of ``shared_state``: who is registered, and the
    callbacks a test calls to play a child's shipped heartbeat."""

    def __init__(self) -> None:
        self.heartbeaters: dict[bytes, Callable[..., None]] = {}
        self.unregistered: list[bytes] = []

    async def register_heartbeater(self, token: bytes, callback: Callable[..., None]) -> None:
        self.heartbeaters[token] = callback

    async def unregister_heartbeater(self, token: bytes) -> None:
        self.heartbeaters.pop(token, None)
        self.unregistered.append(token)
