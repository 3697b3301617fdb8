"""Sync local activities in the pool's children: an executor for temporalio's worker.

    temporalio Worker (workflows, local activities)
      └─ run_in_executor(LocalActivityExecutor, _execute_sync_activity, info, ..., fn, *args)
           submit() ─▶ a task on this loop ─▶ claim a child ─▶ ProcessPool.run ─▶ child
                    ◀─ concurrent Future ◀─ TaskDone: the value, or the child's Failure as
                                            an exception; a dead child: ChildProcessDied
    cancel: temporalio sets the attempt's cancel event (made by LocalSharedState)
              ─▶ still waiting for a child: stop waiting, CancelledError
              ─▶ running: ProcessPool.cancel (CancelledError raised in the child, the child
                 killed after cancel_grace)

temporalio hands a non-thread executor its private, module-level
``_execute_sync_activity`` with that function's arguments (the Info, a heartbeat sender,
the cancel and worker-shutdown events, the cancellation details, the activity function
and its decoded arguments). Nothing of that crosses a process boundary: the adapter reads
them here, by parameter name, and sends the pool's own ``RunTask`` for the registered
activity of that type. The events and the heartbeat sender come from
:class:`LocalSharedState`, temporalio's ``shared_state_manager`` for these calls: plain
in-process objects, no manager round trips. temporalio keeps no heartbeats of local
activities (sdk-core records none for a worker that polls no activity tasks), so the
child's heartbeats are dropped: they are shipped at most once an hour and nobody takes
them.

Capacity: local activities and remote activity tasks share the children. A local activity
claims a child as soon as temporalio submits it (:meth:`ProcessPool.claim`), ahead of
polls not yet made: it is work already accepted, and a poller may hold an idle child's
promise through a long poll that brings nothing. While local activities hold or wait for
every child, no activity task is polled. A local activity that finds no idle child waits
in the pool (counted in the snapshot's ``tasks_waited``) for the next one to finish;
temporalio's local-activity slots (``max_concurrent_local_activities``, the tuner) bound
how many wait.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import temporalio.activity
import temporalio.converter
import temporalio.exceptions
import temporalio.worker
import temporalio.worker._activity
from temporalio.worker import SharedHeartbeatSender

import runner.context
from runner import RunTask, TaskDone

from ._errors import ChildProcessDied
from .activity.dispatch.codec import decode_child_failure
from .supervisor import ChildKilled, ChildMemoryExceeded, ProcessPool, TaskTransferError

__all__ = ["EXECUTE_PARAMETERS", "LocalActivityExecutor", "LocalSharedState"]

# The call temporalio submits for a sync activity to an executor that is not a thread
# pool, and the parameters we read from it (tests/pool/test_local_activities.py checks
# that shape against the installed temporalio).
_EXECUTE: Callable[..., Any] = temporalio.worker._activity._execute_sync_activity
_SIGNATURE = inspect.signature(_EXECUTE)
EXECUTE_PARAMETERS = (
    "info",
    "cancelled_event",
    "worker_shutdown_event",
    "cancellation_details",
    "fn",
    "args",
)
# Heartbeats of local activities go nowhere (see above): the child ships them this rarely.
_HEARTBEAT_INTERVAL = 3600.0
# Our task ids start far above the dispatcher's (it counts from 1), so a late cancel of a
# remote task can never match a local activity on the same child, nor the other way.
_FIRST_TASK_ID = 1 << 48


class _WatchedEvent(threading.Event):
    """A ``threading.Event`` that calls ``on_set`` when set (temporalio sets an attempt's
    cancel event, and the worker-shutdown event, on the loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.on_set: Callable[[], object] | None = None

    def set(self) -> None:
        super().set()
        if self.on_set is not None:
            self.on_set()

    def watch(self, callback: Callable[[], object]) -> None:
        self.on_set = callback
        if self.is_set():
            callback()


class _NoHeartbeats(SharedHeartbeatSender):
    def send_heartbeat(self, task_token: bytes, *details: Any) -> None:
        """Never called: the sender is read in this process and not sent to the child."""


class LocalSharedState(temporalio.worker.SharedStateManager):
    """The ``shared_state_manager`` temporalio's worker uses for local activities run by a
    :class:`LocalActivityExecutor`: in-process events we watch, no heartbeat channel."""

    def new_event(self) -> threading.Event:
        return _WatchedEvent()

    async def register_heartbeater(
        self, task_token: bytes, heartbeat: Callable[..., None]
    ) -> SharedHeartbeatSender:
        return _NoHeartbeats()

    async def unregister_heartbeater(self, task_token: bytes) -> None:
        return None


class _LocalFuture(concurrent.futures.Future[Any]):
    """The future temporalio awaits; cancelling it (its asyncio wrapper was cancelled)
    cancels the local activity like its cancel event does."""

    def __init__(self) -> None:
        super().__init__()
        self.on_cancel: Callable[[], object] | None = None

    def cancel(self) -> bool:
        if self.on_cancel is not None and not self.done():
            self.on_cancel()
        return super().cancel()


@dataclass(eq=False)
class _LocalRun:
    id: int
    info: temporalio.activity.Info
    holder: Any  # temporalio's cancellation details holder for this attempt
    future: _LocalFuture
    task: asyncio.Task[None] | None = None
    pid: int | None = None
    waiting: bool = False  # in ProcessPool.run, waiting for an idle child
    cancelled: bool = False


def _watched(event: threading.Event) -> _WatchedEvent:
    if not isinstance(event, _WatchedEvent):
        raise TypeError(
            f"temporalio passed a {type(event).__name__} where pool.Worker expects the events "
            "of its LocalSharedState: the inner worker was built without it"
        )
    return event


def _cancel_reason(details: temporalio.activity.ActivityCancellationDetails | None) -> str:
    if details is not None and details.worker_shutdown:
        return "the worker is shutting down"
    if details is not None and details.timed_out:
        return "its local activity timeout passed"
    if details is not None and details.cancel_requested:
        return "its workflow cancelled it"
    return "temporalio cancelled the local activity"


class LocalActivityExecutor(concurrent.futures.Executor):
    """Runs the sync local activities of temporalio's worker in a :class:`ProcessPool`.

    Hand it to ``temporalio.worker.Worker`` as ``activity_executor`` together with its
    :attr:`shared_state` as ``shared_state_manager``. The pool must run the same sync
    activities (registered by name) and be started before the first local activity.
    """

    def __init__(
        self, pool: ProcessPool, data_converter: temporalio.converter.DataConverter
    ) -> None:
        self._pool = pool
        self._dc = data_converter
        self.shared_state = LocalSharedState()
        self._ids = itertools.count(_FIRST_TASK_ID)
        self._runs: set[_LocalRun] = set()

    def __repr__(self) -> str:
        waiting = sum(1 for run in self._runs if run.pid is None)
        return (
            f"<LocalActivityExecutor [Local activities: {len(self._runs) - waiting} running, "
            f"{waiting} waiting for a child]>"
        )

    @property
    def running(self) -> int:
        """Local activities submitted and not finished yet."""
        return len(self._runs)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> _LocalFuture:
        """Take temporalio's call for one sync local activity (on the worker's loop)."""
        if fn is not _EXECUTE:
            raise TypeError(
                f"LocalActivityExecutor runs temporalio's sync local activities only, not {fn!r}"
            )
        bound = _SIGNATURE.bind(*args, **kwargs)
        bound.apply_defaults()  # an activity without arguments: args=()
        call = bound.arguments
        loop = asyncio.get_running_loop()
        run = _LocalRun(
            id=next(self._ids),
            info=call["info"],
            holder=call["cancellation_details"],
            future=_LocalFuture(),
        )
        run.future.set_running_or_notify_cancel()
        run.future.on_cancel = lambda: loop.call_soon_threadsafe(self._cancel, run)
        _watched(call["worker_shutdown_event"]).watch(
            lambda: loop.call_soon_threadsafe(self._pool.broadcast_shutdown)
        )
        self._runs.add(run)
        # Watched before the task exists: a cancel that came first (while temporalio
        # decoded the arguments) is handled before the task starts, so it claims nothing.
        _watched(call["cancelled_event"]).watch(
            lambda: loop.call_soon_threadsafe(self._cancel, run)
        )
        run.task = loop.create_task(
            self._run(run, call["args"]), name=f"local-activity:{run.info.activity_type}"
        )
        return run.future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Nothing to do: the pool belongs to the worker, which stops it."""

    # -- one local activity --------------------------------------------------------------

    async def _run(self, run: _LocalRun, args: tuple[Any, ...]) -> None:
        try:
            value = await self._execute(run, args)
        except asyncio.CancelledError:
            run.future.set_exception(temporalio.exceptions.CancelledError("Cancelled"))
            raise
        except BaseException as err:
            run.future.set_exception(err)
        else:
            run.future.set_result(value)
        finally:
            self._runs.discard(run)

    async def _execute(self, run: _LocalRun, args: tuple[Any, ...]) -> Any:
        if run.cancelled:
            raise temporalio.exceptions.CancelledError("Cancelled")
        task = RunTask(
            task_id=run.id,
            activity_type=run.info.activity_type,
            args=tuple(args),
            info=run.info,
            heartbeat_interval=_HEARTBEAT_INTERVAL,
        )
        reservation = self._pool.claim()
        run.waiting = True
        try:
            run.pid, done = await self._pool.run(task, reservation=reservation)
        except TaskTransferError as err:
            raise temporalio.exceptions.ApplicationError(
                str(err), type="ArgumentTransferError"
            ) from None
        except asyncio.CancelledError:
            if not run.cancelled:
                raise
            raise temporalio.exceptions.CancelledError("Cancelled") from None
        finally:
            run.waiting = False
        try:
            return self._outcome(run, await done)
        except ChildMemoryExceeded as err:
            raise temporalio.exceptions.ApplicationError(
                str(err), type="ChildMemoryExceeded"
            ) from None
        except ChildKilled as err:
            if run.cancelled:
                raise temporalio.exceptions.CancelledError(str(err)) from None
            raise temporalio.exceptions.ApplicationError(str(err), type="ChildKilled") from None
        except ChildProcessDied as err:
            raise temporalio.exceptions.ApplicationError(
                str(err), type="ChildProcessDied"
            ) from None

    def _cancel(self, run: _LocalRun) -> None:
        """Cancel one local activity (on the loop); only the first call counts."""
        if run.cancelled or run not in self._runs:
            return
        run.cancelled = True
        details = run.holder.details
        if run.pid is not None:
            self._pool.cancel(run.pid, run.id, details, _cancel_reason(details))
        elif run.waiting and run.task is not None:
            run.task.cancel()
        # Not started yet: _execute sees run.cancelled before it claims a child.

    def _outcome(self, run: _LocalRun, done: TaskDone) -> Any:
        if done.heartbeat_error is not None:
            raise self._rebuild(run.info, done.heartbeat_error)
        if done.outcome == "completed":
            return done.value
        if done.outcome == "complete_async":
            raise runner.context.CompleteAsyncError()
        raise self._rebuild(run.info, done.failure or b"")

    def _rebuild(self, info: temporalio.activity.Info, data: bytes) -> BaseException:
        """The exception the child's Failure describes, for temporalio to report (its
        proto rides along, so the child's message and stack trace are kept as they are)."""
        dc = self._dc.with_context(runner.context.serialization_context(info))
        return decode_child_failure(data, dc)
