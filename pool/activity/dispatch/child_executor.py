"""Sync activities in a child process: the innermost step of the chain for them.

    ExecuteActivityInput ─▶ RunTask (values, or payloads the child converts)
        ─▶ pool.run() ─▶ (pid, future) ─▶ TaskDone, or the child's death or kill
        ─▶ the value (or EncodedResult, or ChildReported when the child sent the result
           to the server itself), or the error the activity raised

The child's heartbeats arrive through the shared state manager while it runs
(``on_heartbeat``); its newest details come back with the TaskDone too. A cancel goes
to the child's control pipe (``pool.cancel``), which kills it after cancel_grace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple, Protocol

import temporalio.activity
import temporalio.common
import temporalio.converter
import temporalio.exceptions
import temporalio.worker
from temporalio.api.common.v1 import Payloads

import runner.context
import runner.metrics
import runner.trace
from pool._errors import ChildProcessDied
from pool.supervisor import ChildKilled, ChildMemoryExceeded, TaskTransferError
from pool.supervisor.scheduler import Reservation
from runner import RunTask, TaskDone
from runner.report import Reported

from .codec import EncodedArgs, decode_child_failure
from .task import CancelTargets, Task

__all__ = ["ChildExecutor", "ChildPool", "ChildReported", "EncodedResult"]


class ChildPool(Protocol):
    """What the dispatcher uses of the process pool (pool.supervisor.ProcessPool)."""

    async def run(
        self, task: RunTask, *, reservation: Reservation | None = None
    ) -> tuple[int, Awaitable[TaskDone]]: ...

    def cancel(self, pid: int, task_id: int, details: Any, reason: str) -> None: ...

    def broadcast_shutdown(self) -> None: ...


class EncodedResult(NamedTuple):
    """A result the child converted (serialised Payloads, codec not yet applied). Only
    seen where no interceptor wraps the chain: interceptors get the value itself."""

    data: bytes | memoryview  # memoryview: a large one, as it came from the child


class ChildReported(NamedTuple):
    """The child sent the completion itself (``RunTask.report``); the server's answer.
    Like EncodedResult, only where no interceptor wraps the chain."""

    reported: Reported


class ChildExecutor:
    kind = "process"
    takes_child = True
    threads = None

    def __init__(
        self,
        pool: ChildPool,
        shared_state: Any,
        *,
        on_heartbeat: Callable[[bytes, bytes], None],
        on_last_details: Callable[[Task, Payloads], None],
        metric_meter: temporalio.common.MetricMeter | None,
    ) -> None:
        self._pool = pool
        self._shared_state = shared_state
        self._on_heartbeat = on_heartbeat  # (token, serialised Payloads), on the loop
        self._on_last_details = on_last_details
        self._metric_meter = metric_meter
        self._instruments: dict[Any, Any] = {}  # what children's metrics replay on

    def targets(self, defn: temporalio.activity._Definition) -> CancelTargets:
        return CancelTargets.new(in_loop=False, raiser=None)

    def deliver_cancel(self, task: Task) -> None:
        assert task.cancel is not None
        if task.targets is not None and task.targets.holder.details is None:
            task.targets.holder.details = task.cancel
        if task.pid is not None:
            self._pool.cancel(task.pid, task.id, task.cancel, task.cancel_reason)

    async def run(
        self,
        task: Task,
        input: temporalio.worker.ExecuteActivityInput,
        dc: temporalio.converter.DataConverter,
    ) -> Any:
        loop = asyncio.get_running_loop()
        token = task.token

        def on_heartbeat(*details: Any) -> None:  # called on the drainer thread
            if details and isinstance(details[0], bytes):
                loop.call_soon_threadsafe(self._on_heartbeat, token, details[0])

        await self._shared_state.register_heartbeater(token, on_heartbeat)
        done: TaskDone | None = None
        try:
            try:
                pid, future = await self._pool.run(
                    _run_task(task, input.args), reservation=task.reservation
                )
            except TaskTransferError as err:
                raise temporalio.exceptions.ApplicationError(
                    str(err), type="ArgumentTransferError"
                ) from None
            task.pid = pid
            if task.cancel_requested:  # it came while the task waited for its child
                self.deliver_cancel(task)
            done = await _child_done(task, future)
        finally:
            await self._forget_heartbeater(token, done)
        return self._from_child(task, done, dc)

    async def _forget_heartbeater(self, token: bytes, done: TaskDone | None) -> None:
        forget = getattr(self._shared_state, "forget_heartbeater", None)
        silent = done is not None and done.last_heartbeat is None and not done.heartbeat_error
        if silent and forget is not None:
            forget(token)  # it never heartbeated: nothing to flush
        else:
            await self._shared_state.unregister_heartbeater(token)

    def _from_child(
        self, task: Task, done: TaskDone, dc: temporalio.converter.DataConverter
    ) -> Any:
        """The child's answer as the activity's return value or raised error."""
        if done.metrics and self._metric_meter is not None:
            runner.metrics.replay(self._metric_meter, done.metrics, self._instruments)
        if done.last_heartbeat is not None:
            self._on_last_details(task, Payloads.FromString(done.last_heartbeat))
        if done.heartbeat_error is not None:
            task.heartbeat_error = decode_child_failure(done.heartbeat_error, dc)
            raise task.heartbeat_error
        if done.outcome == "completed":
            if done.reported is not None:
                return ChildReported(done.reported)
            return EncodedResult(done.result) if done.result is not None else done.value
        if done.outcome == "complete_async":
            raise runner.context.CompleteAsyncError()
        raise decode_child_failure(done.failure or b"", dc)


def _run_task(task: Task, args: Sequence[Any]) -> RunTask:
    """The message the child gets: values, or the payloads' bytes when no interceptor
    decoded the EncodedArgs (the child decodes them)."""
    assert task.info is not None
    encoded = None
    if isinstance(args, EncodedArgs) and not args.decoded:
        encoded = args.serialized
        if encoded is None:
            encoded = args.payloads.SerializeToString()
        args = ()
    return RunTask(
        task_id=task.id,
        activity_type=task.activity_type,
        args=tuple(args),
        info=task.info,
        heartbeat_interval=task.throttle,
        trace_context=runner.trace.current_carrier(),
        encoded_args=encoded,
        encoded_heartbeat=task.encoded_heartbeat,
        encode_result=task.encode_result,
        report=task.child_reports,
    )


async def _child_done(task: Task, future: Awaitable[TaskDone]) -> TaskDone:
    """Wait for the child's answer; its death or kill becomes the activity's error."""
    try:
        return await future
    except ChildMemoryExceeded as err:
        task.child_end = "killed"
        raise temporalio.exceptions.ApplicationError(str(err), type="ChildMemoryExceeded") from None
    except ChildKilled as err:
        task.child_end = "killed"
        if task.cancel_requested:
            raise temporalio.exceptions.CancelledError("Cancelled") from None
        raise temporalio.exceptions.ApplicationError(str(err), type="ChildKilled") from None
    except ChildProcessDied as err:
        task.child_end = "crashed"
        raise temporalio.exceptions.ApplicationError(str(err), type="ChildProcessDied") from None
