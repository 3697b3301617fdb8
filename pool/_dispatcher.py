"""The dispatcher: one polled task in, exactly one outcome out.

    poll response ─▶ decode args (codec in the parent) ─▶ activity context set
    ─▶ interceptor chain (a task on this loop) ─▶ its innermost step, by activity kind
        sync, process pool  ─▶ ProcessPool.run ─▶ child ─▶ TaskDone / death / kill
        sync, thread pool   ─▶ executor thread (CancelledError raised in the thread)
        async               ─▶ awaited in the chain's task
    ─▶ value or error ─▶ outcome (stock's log line) ─▶
       RespondActivityTask{Completed,Failed,Canceled} (or nothing)

Cancellation from every source (heartbeat answers, local deadlines, worker
shutdown) enters through :meth:`Dispatcher.cancel`; the first reason wins and
decides how the outcome is reported (activity-protocol.md §2 and §4).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import itertools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

import grpc
import temporalio.activity
import temporalio.client
import temporalio.common
import temporalio.converter
import temporalio.exceptions
import temporalio.worker
from google.protobuf import duration_pb2, timestamp_pb2
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.enums.v1 import ActivityTaskFailedCause, ApplicationErrorCategory
from temporalio.api.failure.v1 import Failure
from temporalio.api.workflowservice.v1 import (
    PollActivityTaskQueueResponse,
    RespondActivityTaskCanceledRequest,
    RespondActivityTaskCompletedRequest,
    RespondActivityTaskFailedRequest,
)

import runner.context
import runner.metrics
import runner.trace
from runner import RunTask, TaskDone

from ._codec import EncodedArgs, codec_decoded, decode_child_failure, encode_payloads
from ._errors import ChildProcessDied
from ._interceptors import Innermost, Outbound, build_chain
from .activity.heartbeats import HeartbeatManager, throttle_interval
from .activity.service import ActivityService, describe_rpc_error
from .activity.slots import Slots
from .activity.threads import ThreadCancelRaiser, run_in_thread
from .observe.sdk_metrics import ActivityMetrics
from .supervisor import ChildKilled, ChildMemoryExceeded, ProcessPool, TaskTransferError

__all__ = ["DispatchSettings", "Dispatcher", "RunningTask", "cancel_outcome"]

logger = logging.getLogger("pool.dispatcher")

Details = temporalio.activity.ActivityCancellationDetails
# What a cancelled async activity's CancelledError says (stock's words).
_CANCEL_MESSAGE = "Activity cancelled"
# Core's cause for a failure the activity raised (nothing more specific applies).
_UNHANDLED = ActivityTaskFailedCause.ACTIVITY_TASK_FAILED_CAUSE_ACTIVITY_WORKER_UNHANDLED_FAILURE


@dataclass(frozen=True)
class DispatchSettings:
    task_queue: str
    default_heartbeat_throttle: timedelta
    max_heartbeat_throttle: timedelta
    local_timeout_buffer: float
    blob_size_limit: int | None
    disable_payload_error_limit: bool


@dataclass(eq=False)
class _Task:
    id: int
    token: bytes
    activity_type: str
    received: float
    workflow_type: str = ""
    kind: str = "unknown"
    info: temporalio.activity.Info | None = None
    pid: int | None = None
    throttle: float = 30.0
    cancel: Details | None = None
    cancel_reason: str = ""
    heartbeat_error: BaseException | None = None
    last_heartbeat: Payloads | None = None  # newest details, codec not applied
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    give_up_at: float | None = None
    # in-parent execution
    thread_cancelled: threading.Event | None = None
    async_cancelled: asyncio.Event | None = None
    holder: Any = None
    thread_raiser: ThreadCancelRaiser | None = None
    async_task: asyncio.Task[Any] | None = None  # the interceptor chain, for every kind
    # the chain
    context: Any = None  # the activity context the chain runs in
    innermost: Innermost | None = None
    reserved_child: bool = False  # a child is promised to this task until run() takes it
    # Payloads the child converts (issue 13): the earlier attempt's heartbeat details
    # (codec applied in reverse), and whether the child returns the result as payloads.
    encoded_heartbeat: bytes | None = None
    encode_result: bool = False
    label: str = ""  # killed / crashed: how a child's end is counted


class RunningTask(NamedTuple):
    token: bytes
    activity_type: str
    pid: int | None


@dataclass
class _Outcome:
    kind: str  # completed | failed | cancelled | none
    result: Payloads | None = None
    failure: Failure | None = None
    cause: ActivityTaskFailedCause.ValueType = (
        ActivityTaskFailedCause.ACTIVITY_TASK_FAILED_CAUSE_UNSPECIFIED
    )
    label: str = ""  # for stats: completed / failed / cancelled / crashed / killed / ...


class _EncodedResult(NamedTuple):
    """A result the child converted (serialised Payloads, codec not yet applied). Only
    seen where no interceptor wraps the chain: interceptors get the value itself."""

    data: bytes


def _log_context(task: _Task) -> dict[str, Any]:
    """``extra`` for log records about a task: the keys temporalio's activity logger uses,
    plus the child pid when a child runs it."""
    if task.info is not None:
        fields = runner.context.log_fields(task.info)
    else:
        fields = {"activity_type": task.activity_type}
    return {"temporal_activity": fields, "child_pid": task.pid}


def cancel_outcome(details: Details) -> tuple[str, BaseException | None]:
    """How an activity that ended by cancellation is reported, by the reason.

    ``("none", None)``: nothing (the server already gave up on the attempt);
    ``("cancelled", None)``: RespondActivityTaskCanceled;
    ``("failed", error)``: RespondActivityTaskFailed with ``error``.
    """
    if details.not_found or details.timed_out:
        return "none", None
    if details.cancel_requested:
        return "cancelled", None
    if details.reset:
        return "failed", temporalio.exceptions.ApplicationError(
            "Unhandled activity cancel error produced by activity reset", type="ActivityReset"
        )
    if details.paused:
        return "failed", temporalio.exceptions.ApplicationError(
            "Unhandled activity cancel error produced by activity pause", type="ActivityPause"
        )
    if details.worker_shutdown:
        return "failed", temporalio.exceptions.ApplicationError(
            "Worker is shutting down and this activity did not complete in time",
            type="WorkerShutdown",
            non_retryable=False,
        )
    return "failed", temporalio.exceptions.ApplicationError("Activity was cancelled")


def _is_benign(failure: Failure | None) -> bool:
    """A failure the activity raised as a benign ApplicationError (core does not count it)."""
    return failure is not None and (
        failure.application_failure_info.category
        == ApplicationErrorCategory.APPLICATION_ERROR_CATEGORY_BENIGN
    )


def _ts(ts: timestamp_pb2.Timestamp) -> datetime:
    return ts.ToDatetime().replace(tzinfo=timezone.utc)


def _duration(resp: PollActivityTaskQueueResponse, name: str) -> timedelta | None:
    if not resp.HasField(name):  # type: ignore[arg-type]
        return None
    value: duration_pb2.Duration = getattr(resp, name)
    # Unset timeouts arrive as present zero durations.
    if value.seconds == 0 and value.nanos == 0:
        return None
    return value.ToTimedelta()


class Dispatcher:
    def __init__(
        self,
        *,
        service: ActivityService,
        settings: DispatchSettings,
        activities: Mapping[str, temporalio.activity._Definition],
        dynamic: temporalio.activity._Definition | None,
        data_converter: temporalio.converter.DataConverter,
        client: temporalio.client.Client,
        pool: ProcessPool | None,
        thread_executor: concurrent.futures.ThreadPoolExecutor | None,
        shared_state: Any,
        release_slot: Callable[[bytes], None],
        metric_meter: temporalio.common.MetricMeter | None,
        type_limits: Mapping[str, int] | None = None,
        interceptors: Sequence[temporalio.worker.Interceptor] = (),
        decode_headers: bool = False,
        metrics: ActivityMetrics | None = None,
        children_convert: Collection[str] = (),
    ) -> None:
        self._service = service
        self._settings = settings
        self._activities = dict(activities)
        self._dynamic = dynamic
        self._dc = data_converter
        self.client = client
        self._pool = pool
        self._threads = thread_executor
        self._shared_state = shared_state
        self._release_slot = release_slot
        self._metric_meter = metric_meter
        self._child_instruments: dict[Any, Any] = {}  # what children's metrics replay on
        self._interceptors = list(interceptors)
        # Activity types whose payloads the children convert (the parent applies only
        # the codec): every registered sync type, unless the converter or the type's
        # parameter types cannot be sent to a child.
        self._children_convert = frozenset(children_convert)
        self._decode_headers = decode_headers
        self._metrics = metrics
        # Per-activity-type concurrency limits: a semaphore per limited type.
        self._type_slots = {name: Slots(limit) for name, limit in (type_limits or {}).items()}
        self._ids = itertools.count(1)
        self._tasks: dict[bytes, _Task] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._encoding: set[asyncio.Task[None]] = set()
        self._shutdown_thread_event = threading.Event()
        self._shutdown_async_event = asyncio.Event()
        self._shutdown_cancelling = False
        self.heartbeats = HeartbeatManager(
            service, on_cancel=self._on_heartbeat_cancel, on_sent=self._on_heartbeat_sent
        )
        # (activity type, outcome label) -> count; labels: completed, failed,
        # cancelled, killed, crashed, timed_out, not_found, complete_async.
        self.stats: collections.Counter[tuple[str, str]] = collections.Counter()
        self.started: collections.Counter[str] = collections.Counter()
        # Called with (activity type, seconds); the metrics module sets these.
        self.on_schedule_to_start: Callable[[str, float], None] | None = None
        self.on_run_time: Callable[[str, float], None] | None = None

    # -- read-only state ----------------------------------------------------------------

    @property
    def outstanding(self) -> int:
        return len(self._running)

    def running(self) -> list[RunningTask]:
        """Every task in flight: its token, activity type and child pid (None in-parent)."""
        return [RunningTask(t.token, t.activity_type, t.pid) for t in self._tasks.values()]

    def __repr__(self) -> str:
        kinds = collections.Counter(t.kind for t in self._tasks.values())
        inner = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none"
        return f"<Dispatcher [Tasks: {len(self._tasks)} running ({inner})]>"

    # -- entry points -------------------------------------------------------------------

    def start(self, resp: PollActivityTaskQueueResponse, reserved_child: bool) -> None:
        """Take ownership of a polled task (and of its slot and child reservation)."""
        handle = asyncio.create_task(self._handle(resp, reserved_child), name="activity-task")
        self._running.add(handle)
        handle.add_done_callback(self._task_finished)

    def _task_finished(self, handle: asyncio.Task[None]) -> None:
        self._running.discard(handle)
        if not handle.cancelled() and handle.exception() is not None:
            logger.error("Activity task handler failed", exc_info=handle.exception())
        if not self._running:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every accepted task has been reported. False on timeout."""
        if not self._running:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def begin_shutdown(self) -> None:
        """``activity.is_worker_shutdown()`` turns true everywhere."""
        self._shutdown_thread_event.set()
        self._shutdown_async_event.set()
        if self._pool is not None:
            self._pool.broadcast_shutdown()

    def cancel_all_for_shutdown(self) -> None:
        """The graceful period is over: cancel everything still running, and every
        task that arrives from now on."""
        self._shutdown_cancelling = True
        for token in list(self._tasks):
            self.cancel(token, Details(worker_shutdown=True), "the worker is shutting down")

    def cancel(self, token: bytes, details: Details, reason: str) -> None:
        """Cancel one running activity. Only the first cancellation counts."""
        task = self._tasks.get(token)
        if task is None or task.cancel is not None:
            return
        task.cancel = details
        task.cancel_reason = reason
        logger.debug("Cancelling %s (%s)", task.activity_type, reason, extra=_log_context(task))
        self._deliver_cancel(task)

    def _deliver_cancel(self, task: _Task) -> None:
        details = task.cancel
        if details is None:
            return
        if task.holder is not None and task.holder.details is None:
            task.holder.details = details
        if task.kind == "process" and task.pid is not None and self._pool is not None:
            self._pool.cancel(task.pid, task.id, details, task.cancel_reason)
        elif task.kind == "thread":
            if task.thread_cancelled is not None:
                task.thread_cancelled.set()
            if task.thread_raiser is not None:
                task.thread_raiser.request()
        elif task.kind == "async":
            if task.thread_cancelled is not None:
                task.thread_cancelled.set()
            if task.async_cancelled is not None:
                task.async_cancelled.set()
            if task.async_task is not None:
                task.async_task.cancel(_CANCEL_MESSAGE)

    # -- heartbeat plumbing ------------------------------------------------------------

    def _on_heartbeat_cancel(self, token: bytes, details: Details) -> None:
        reason = (
            "the attempt is gone on the server (NOT_FOUND)"
            if details.not_found
            else ("the server asked for cancellation")
        )
        self.cancel(token, details, reason)

    def _on_heartbeat_sent(self, token: bytes) -> None:
        task = self._tasks.get(token)
        if task is not None and task.info is not None and task.info.heartbeat_timeout:
            self._arm_timer(
                task, "heartbeat", task.info.heartbeat_timeout.total_seconds(), "heartbeat timeout"
            )

    def child_heartbeat(self, token: bytes, data: bytes) -> None:
        """Details a child shipped through the shared state manager (already payloads)."""
        task = self._tasks.get(token)
        if task is not None:
            self._child_details(task, Payloads.FromString(data), record=True)

    def _child_details(self, task: _Task, payloads: Payloads, *, record: bool) -> None:
        """A child's heartbeat details. When an interceptor wraps the outbound side they
        pass through its ``heartbeat()`` as Python values, as stock's do; otherwise the
        payloads go straight to the heartbeat manager (``record``) or the final report."""
        innermost = task.innermost
        if innermost is not None and innermost.intercepted and innermost.heartbeat is not None:
            try:
                details = self._dc.payload_converter.from_payloads(list(payloads.payloads))
            except Exception as err:
                task.heartbeat_error = err
                self.cancel(task.token, Details(), "its heartbeat details could not be decoded")
                return
            with runner.context.activated(task.context):
                innermost.heartbeat(*details)
            return
        task.last_heartbeat = payloads
        if record:
            self._record_heartbeat(task, payloads)

    def parent_heartbeat(self, task: _Task, details: tuple[Any, ...]) -> None:
        """The end of the outbound chain: ``activity.heartbeat()`` in this process, or a
        child's details that passed through an interceptor."""
        if self._tasks.get(task.token) is not task:
            return
        try:
            payloads = Payloads(payloads=self._dc.payload_converter.to_payloads(details))
        except Exception as err:
            task.heartbeat_error = err
            self.cancel(task.token, Details(), "its heartbeat details could not be converted")
            return
        task.last_heartbeat = payloads
        self._record_heartbeat(task, payloads)

    def _record_heartbeat(self, task: _Task, payloads: Payloads) -> None:
        if self._dc.payload_codec is None:
            self.heartbeats.record(task.token, payloads, task.throttle)
            return

        async def encode_then_record() -> None:
            encoded = Payloads()
            encoded.CopyFrom(payloads)
            await encode_payloads(self._dc, encoded)
            if task.token in self._tasks:
                self.heartbeats.record(task.token, encoded, task.throttle)

        pending = asyncio.create_task(encode_then_record())
        self._encoding.add(pending)
        pending.add_done_callback(self._encoding.discard)

    # -- local deadlines ---------------------------------------------------------------

    def _arm_timer(
        self, task: _Task, name: str, seconds: float, what: str, since: float | None = None
    ) -> None:
        """Cancel ``task`` as timed out ``seconds`` after ``since`` (a ``time.monotonic()``),
        or, without it, ``seconds`` + ``local_timeout_buffer`` from now.

        The start-to-close deadline counts from when the task arrived, with no buffer:
        the server fails the attempt then, and a result after it is refused anyway, so
        the child's core is freed as early as possible. The heartbeat timeout, re-armed
        after each heartbeat RPC, keeps sdk-core's buffer for the RPC's own latency.
        """
        old = task.timers.pop(name, None)
        if old is not None:
            old.cancel()
        if since is None:
            buffer = self._settings.local_timeout_buffer
            delay = seconds + buffer
            reason = f"its {what} ({seconds:g} s + {buffer:g} s buffer) passed"
        else:
            delay = since + seconds - time.monotonic()
            reason = f"its {what} ({seconds:g} s since the worker received it) passed"
        loop = asyncio.get_running_loop()
        task.timers[name] = loop.call_later(
            delay, self.cancel, task.token, Details(not_found=True, timed_out=True), reason
        )

    # -- one task ----------------------------------------------------------------------

    async def _handle(self, resp: PollActivityTaskQueueResponse, reserved_child: bool) -> None:
        task = _Task(
            id=next(self._ids),
            token=resp.task_token,
            activity_type=resp.activity_type.name,
            received=time.monotonic(),
            workflow_type=resp.workflow_type.name,
        )
        self._tasks[task.token] = task
        s2c = _duration(resp, "start_to_close_timeout")
        sched = _duration(resp, "schedule_to_close_timeout")
        limit = s2c or sched
        if limit is not None:
            task.give_up_at = task.received + limit.total_seconds()
        try:
            try:
                outcome = await self._execute(task, resp, reserved_child)
            except Exception as err:  # our own bug: still report the task
                logger.exception(
                    "Internal error running %s", task.activity_type, extra=_log_context(task)
                )
                outcome = await self._failed(
                    task,
                    temporalio.exceptions.ApplicationError(
                        f"Internal worker error: {type(err).__name__}: {err}",
                        type="PoolInternalError",
                    ),
                )
            await self._report(task, outcome)
        finally:
            for timer in task.timers.values():
                timer.cancel()
            self._tasks.pop(task.token, None)
            self._release_slot(task.token)

    async def _execute(
        self, task: _Task, resp: PollActivityTaskQueueResponse, reserved_child: bool
    ) -> _Outcome:
        defn = self._activities.get(task.activity_type, self._dynamic)
        kind = "unknown"
        if defn is not None:
            if defn.is_async:
                kind = "async"
            elif self._threads is not None:
                kind = "thread"
            else:
                kind = "process"
        if reserved_child and kind != "process":
            assert self._pool is not None
            self._pool.unreserve()
            reserved_child = False
        task.kind = kind
        try:
            if defn is None:
                names = ", ".join(sorted(self._activities)) or "(none)"
                where = resp.workflow_execution.workflow_id
                return await self._activity_failed(
                    task,
                    temporalio.exceptions.ApplicationError(
                        f"Activity function {task.activity_type} for workflow {where} is not "
                        f"registered on this worker, available activities: {names}",
                        type="NotFoundError",
                    ),
                )
            dc = self._dc.with_context(
                temporalio.converter.ActivitySerializationContext(
                    namespace=resp.workflow_namespace or self._service.namespace,
                    activity_id=resp.activity_id,
                    activity_type=task.activity_type,
                    activity_task_queue=self._settings.task_queue,
                    workflow_id=resp.workflow_execution.workflow_id or None,
                    workflow_type=resp.workflow_type.name or None,
                    is_local=False,
                )
            )
            child_converts = kind == "process" and defn.name in self._children_convert
            try:
                args = await self._decode_args(resp, defn, dc, child_converts)
            except temporalio.exceptions.ApplicationError as error:
                return await self._activity_failed(task, error, dc)
            try:
                heartbeat_details = await self._decode_heartbeat(
                    task, resp, dc, child_converts and not self._interceptors
                )
            except temporalio.exceptions.ApplicationError as error:
                return await self._activity_failed(task, error, dc)
            task.encode_result = child_converts and not self._interceptors
            info = self._build_info(resp, task.token, heartbeat_details)
            task.info = info
            if self.on_schedule_to_start is not None:
                waited = info.started_time - info.current_attempt_scheduled_time
                self.on_schedule_to_start(task.activity_type, waited.total_seconds())
            task.throttle = throttle_interval(
                info.heartbeat_timeout,
                self._settings.default_heartbeat_throttle,
                self._settings.max_heartbeat_throttle,
            )
            if info.start_to_close_timeout:
                self._arm_timer(
                    task,
                    "start_to_close",
                    info.start_to_close_timeout.total_seconds(),
                    "start-to-close timeout",
                    since=task.received,
                )
            if info.heartbeat_timeout:
                self._arm_timer(
                    task, "heartbeat", info.heartbeat_timeout.total_seconds(), "heartbeat timeout"
                )
            type_slots = self._type_slots.get(task.activity_type)
            if type_slots is not None:
                # From here on this task holds one of its type's slots (released below).
                reserved_child = await self._wait_for_type_slot(task, type_slots, reserved_child)
            if self._shutdown_cancelling and task.cancel is None:
                task.cancel = Details(worker_shutdown=True)
                task.cancel_reason = "the worker is shutting down"
            started = time.monotonic()
            self.started[task.activity_type] += 1
            headers = await self._headers(resp, dc)
            task.reserved_child, reserved_child = reserved_child, False
            try:
                return await self._run_chain(task, defn, args, headers, dc)
            finally:
                reserved_child, task.reserved_child = task.reserved_child, False
                if self.on_run_time is not None:
                    self.on_run_time(task.activity_type, time.monotonic() - started)
                if type_slots is not None:
                    type_slots.release()
        finally:
            if reserved_child:
                assert self._pool is not None
                self._pool.unreserve()

    async def _decode_args(
        self,
        resp: PollActivityTaskQueueResponse,
        defn: temporalio.activity._Definition,
        dc: temporalio.converter.DataConverter,
        in_child: bool,
    ) -> Sequence[Any]:
        """The task's arguments: decoded here, or (``in_child``) through the codec only,
        as :class:`EncodedArgs` that the child decodes unless an interceptor reads them."""
        payloads = resp.input.payloads
        arg_types = defn.arg_types
        if not defn.name:
            arg_types = [temporalio.common.RawValue] * len(payloads)
        elif arg_types is not None and len(arg_types) != len(payloads):
            arg_types = None
        try:
            if in_child:
                decoded = await codec_decoded(dc, payloads)
                return EncodedArgs(decoded, dc.payload_converter, arg_types)
            args = await dc.decode(payloads, type_hints=arg_types) if payloads else []
        except Exception as err:
            raise temporalio.exceptions.ApplicationError(
                f"Failed decoding arguments: {type(err).__name__}: {err}"
            ) from err
        return args if defn.name else [args]

    async def _decode_heartbeat(
        self,
        task: _Task,
        resp: PollActivityTaskQueueResponse,
        dc: temporalio.converter.DataConverter,
        in_child: bool,
    ) -> list[Any]:
        """The earlier attempt's heartbeat details for ``info()``: decoded here, or
        (``in_child``) through the codec only, for the child (``task.encoded_heartbeat``)."""
        payloads = resp.heartbeat_details.payloads
        if not payloads:
            return []
        try:
            if in_child:
                task.encoded_heartbeat = (await codec_decoded(dc, payloads)).SerializeToString()
                return []
            return await dc.decode(payloads)
        except Exception as err:
            raise temporalio.exceptions.ApplicationError(
                f"Failed decoding heartbeat details: {type(err).__name__}: {err}",
                non_retryable=True,
            ) from err

    async def _wait_for_type_slot(self, task: _Task, type_slots: Slots, reserved: bool) -> bool:
        """Take a slot of the task's activity type; returns whether a child is reserved.

        A task of a type at its limit waits here (its start-to-close clock runs), and
        gives its child back meanwhile so other activity types keep every core busy.
        Once it may run, it takes the next idle child ahead of the pollers' promises.
        """
        if type_slots.used < type_slots.size:
            await type_slots.acquire()
            return reserved
        if reserved and self._pool is not None:
            self._pool.unreserve()
        logger.debug(
            "%s waits: its activity_type_limits is reached",
            task.activity_type,
            extra=_log_context(task),
        )
        await type_slots.acquire()
        return False

    async def _headers(
        self, resp: PollActivityTaskQueueResponse, dc: temporalio.converter.DataConverter
    ) -> dict[str, Payload]:
        """The task's headers for the interceptors, through the codec when the client's
        ``header_codec_behavior`` says so."""
        headers = dict(resp.header.fields)
        if self._decode_headers and dc.payload_codec is not None and headers:
            names = list(headers)
            decoded = await dc.payload_codec.decode([headers[name] for name in names])
            headers = dict(zip(names, decoded, strict=True))
        return headers

    def _build_info(
        self, resp: PollActivityTaskQueueResponse, token: bytes, heartbeat_details: list[Any]
    ) -> temporalio.activity.Info:
        by_workflow = bool(resp.workflow_execution.workflow_id)
        return temporalio.activity.Info(
            activity_id=resp.activity_id,
            activity_type=resp.activity_type.name,
            attempt=resp.attempt,
            current_attempt_scheduled_time=_ts(resp.current_attempt_scheduled_time),
            heartbeat_details=heartbeat_details,
            heartbeat_timeout=_duration(resp, "heartbeat_timeout"),
            is_local=False,
            namespace=resp.workflow_namespace or self._service.namespace,
            schedule_to_close_timeout=_duration(resp, "schedule_to_close_timeout"),
            scheduled_time=_ts(resp.scheduled_time),
            start_to_close_timeout=_duration(resp, "start_to_close_timeout"),
            started_time=_ts(resp.started_time),
            task_queue=self._settings.task_queue,
            task_token=token,
            workflow_id=resp.workflow_execution.workflow_id or None,
            workflow_namespace=resp.workflow_namespace or None,
            workflow_run_id=resp.workflow_execution.run_id or None,
            workflow_type=resp.workflow_type.name or None,
            priority=temporalio.common.Priority._from_proto(resp.priority),
            retry_policy=temporalio.common.RetryPolicy.from_proto(resp.retry_policy)
            if resp.HasField("retry_policy")
            else None,
            activity_run_id=None if by_workflow else (resp.activity_run_id or None),
        )

    async def _run_chain(
        self,
        task: _Task,
        defn: temporalio.activity._Definition,
        args: Sequence[Any],
        headers: Mapping[str, Payload],
        dc: temporalio.converter.DataConverter,
    ) -> _Outcome:
        """Run the interceptor chain (its innermost step runs the activity) in a task
        of its own, with the activity context set, then turn its end into an outcome."""
        info = task.info
        assert info is not None
        task.thread_cancelled = threading.Event()
        task.holder = runner.context.new_cancellation_holder()
        if task.cancel is not None:
            task.holder.details = task.cancel
            task.thread_cancelled.set()
        if task.kind == "async":
            task.async_cancelled = asyncio.Event()
            if task.cancel is not None:
                task.async_cancelled.set()
        if task.kind == "thread" and not defn.no_thread_cancel_exception:
            task.thread_raiser = ThreadCancelRaiser()
            if task.cancel is not None:
                task.thread_raiser.request()
        # The context lives in this handler task: the chain's task copies it, and the
        # outcome's log lines below carry the activity's fields, as stock's do.
        runner.context.enter_activity_context(
            info=info,
            heartbeat=lambda *details: self.parent_heartbeat(task, details),
            cancelled_event=task.thread_cancelled,
            worker_shutdown_event=self._shutdown_thread_event,
            shield=task.thread_raiser.shielded if task.thread_raiser else None,
            payload_converter=dc.payload_converter,
            cancellation_details=task.holder,
            async_cancelled_event=task.async_cancelled,
            async_worker_shutdown_event=self._shutdown_async_event,
            metric_meter=self._metric_meter,
            client=self.client if task.kind == "async" else None,
        )
        task.context = runner.context.current_context()
        innermost = Innermost(lambda input: self._run_kind(task, input, dc))
        task.innermost = innermost
        chain = build_chain(self._interceptors, innermost)
        outbound = Outbound(info, lambda *details: self.parent_heartbeat(task, details))
        activity_input = temporalio.worker.ExecuteActivityInput(
            fn=defn.fn,
            args=args,
            executor=self._threads if task.kind == "thread" else None,
            headers=headers,
        )

        async def run() -> Any:
            temporalio.activity.logger.debug("Starting activity")
            chain.init(outbound)
            return await chain.execute_activity(activity_input)

        task.async_task = asyncio.create_task(run(), name=f"activity:{task.activity_type}")
        if task.cancel is not None and task.kind == "async":
            task.async_task.cancel(_CANCEL_MESSAGE)
        try:
            try:
                value = await asyncio.shield(task.async_task)
            except asyncio.CancelledError:
                if not task.async_task.cancelled():
                    raise  # we ourselves were cancelled
                raise temporalio.exceptions.CancelledError("Cancelled") from None
        except runner.context.CompleteAsyncError:
            temporalio.activity.logger.debug("Completing asynchronously")
            return _Outcome("none", label="complete_async")
        except BaseException as err:
            return await self._from_error(task, err, dc)
        return await self._completed(task, value, dc)

    async def _run_kind(
        self,
        task: _Task,
        input: temporalio.worker.ExecuteActivityInput,
        dc: temporalio.converter.DataConverter,
    ) -> Any:
        """The chain's innermost step: the child, a thread or this loop."""
        if task.kind == "process":
            return await self._run_in_child(task, input, dc)
        if task.kind == "thread":
            return await self._run_in_thread(task, input)
        return await input.fn(*input.args)

    async def _run_in_child(
        self,
        task: _Task,
        input: temporalio.worker.ExecuteActivityInput,
        dc: temporalio.converter.DataConverter,
    ) -> Any:
        assert self._pool is not None and self._shared_state is not None
        assert task.info is not None
        loop = asyncio.get_running_loop()
        token = task.token

        def on_heartbeat(*details: Any) -> None:  # called on the drainer thread
            if details and isinstance(details[0], bytes):
                loop.call_soon_threadsafe(self.child_heartbeat, token, details[0])

        await self._shared_state.register_heartbeater(token, on_heartbeat)
        done: TaskDone | None = None
        try:
            reserved, task.reserved_child = task.reserved_child, False  # run() consumes it
            args: Sequence[Any] = input.args
            encoded = None
            if isinstance(args, EncodedArgs) and not args.decoded:
                encoded = args.payloads.SerializeToString()  # the child decodes them
                args = ()
            run = RunTask(
                task_id=task.id,
                activity_type=task.activity_type,
                args=tuple(args),
                info=task.info,
                heartbeat_interval=task.throttle,
                trace_context=runner.trace.current_carrier(),
                encoded_args=encoded,
                encoded_heartbeat=task.encoded_heartbeat,
                encode_result=task.encode_result,
            )
            try:
                pid, future = await self._pool.run(run, reserved=reserved)
            except TaskTransferError as err:
                raise temporalio.exceptions.ApplicationError(
                    str(err), type="ArgumentTransferError"
                ) from None
            task.pid = pid
            if task.cancel is not None:
                self._deliver_cancel(task)
            done = await self._child_done(task, future)
        finally:
            forget = getattr(self._shared_state, "forget_heartbeater", None)
            silent = done is not None and done.last_heartbeat is None and not done.heartbeat_error
            if silent and forget is not None:
                forget(token)  # it never heartbeated: nothing to flush
            else:
                await self._shared_state.unregister_heartbeater(token)
        return self._from_child(task, done, dc)

    async def _child_done(self, task: _Task, future: Awaitable[TaskDone]) -> TaskDone:
        """Wait for the child's answer; its death or kill becomes the activity's error."""
        try:
            return await future
        except ChildMemoryExceeded as err:
            task.label = "killed"
            raise temporalio.exceptions.ApplicationError(
                str(err), type="ChildMemoryExceeded"
            ) from None
        except ChildKilled as err:
            task.label = "killed"
            if task.cancel is not None:
                raise temporalio.exceptions.CancelledError("Cancelled") from None
            raise temporalio.exceptions.ApplicationError(str(err), type="ChildKilled") from None
        except ChildProcessDied as err:
            task.label = "crashed"
            raise temporalio.exceptions.ApplicationError(
                str(err), type="ChildProcessDied"
            ) from None

    def _from_child(
        self, task: _Task, done: TaskDone, dc: temporalio.converter.DataConverter
    ) -> Any:
        """The child's answer as the activity's return value or raised error."""
        if done.metrics and self._metric_meter is not None:
            runner.metrics.replay(self._metric_meter, done.metrics, self._child_instruments)
        if done.last_heartbeat is not None:
            self._child_details(task, Payloads.FromString(done.last_heartbeat), record=False)
        if done.heartbeat_error is not None:
            task.heartbeat_error = decode_child_failure(done.heartbeat_error, dc)
            raise task.heartbeat_error
        if done.outcome == "completed":
            return _EncodedResult(done.result) if done.result is not None else done.value
        if done.outcome == "complete_async":
            raise runner.context.CompleteAsyncError()
        raise decode_child_failure(done.failure or b"", dc)

    async def _run_in_thread(
        self, task: _Task, input: temporalio.worker.ExecuteActivityInput
    ) -> Any:
        assert self._threads is not None and task.innermost is not None
        loop = asyncio.get_running_loop()
        # The thread's heartbeats go through the outbound chain, on this loop, in the
        # activity context (stock does the same).
        chain_heartbeat = task.innermost.heartbeat
        assert chain_heartbeat is not None
        context = contextvars.copy_context()

        def heartbeat(*details: Any) -> None:
            loop.call_soon_threadsafe(lambda: chain_heartbeat(*details), context=context)

        assert task.info is not None and task.holder is not None
        assert task.thread_cancelled is not None
        context_kwargs: dict[str, Any] = {
            "info": task.info,
            "heartbeat": heartbeat,
            "cancelled_event": task.thread_cancelled,
            "worker_shutdown_event": self._shutdown_thread_event,
            "shield": task.thread_raiser.shielded if task.thread_raiser else None,
            "payload_converter": runner.context.current_context().payload_converter,
            "cancellation_details": task.holder,
            "metric_meter": self._metric_meter,
        }
        # The thread runs in a copy of this context, so context variables the
        # interceptors set reach the activity (stock does the same).
        return await loop.run_in_executor(
            self._threads,
            contextvars.copy_context().run,
            run_in_thread,
            context_kwargs,
            task.thread_raiser,
            input.fn,
            tuple(input.args),
        )

    async def _from_error(
        self, task: _Task, err: BaseException, dc: temporalio.converter.DataConverter
    ) -> _Outcome:
        """How an activity that raised is reported, with stock's log line for each case."""
        log = temporalio.activity.logger
        cancelled = isinstance(err, (temporalio.exceptions.CancelledError, asyncio.CancelledError))
        if task.heartbeat_error is not None:
            error = task.heartbeat_error
            log.warning(
                f"Completing as failure during heartbeat with error of type {type(error)}: {error}"
            )
            return await self._failed(task, error, dc)
        if task.cancel is not None and (cancelled or task.label):
            kind, reported = cancel_outcome(task.cancel)
            if kind == "none":
                default = "timed_out" if task.cancel.timed_out else "not_found"
                return _Outcome("none", label=task.label or default)
            if kind == "failed":
                assert reported is not None
                if task.cancel.paused or task.cancel.reset:
                    cause = "pause" if task.cancel.paused else "reset"
                    log.warning(
                        "Completing as failure due to unhandled cancel error produced by "
                        f"activity {cause}"
                    )
                return await self._failed(task, reported, dc, label=task.label or "cancelled")
            log.debug("Completing as cancelled")
            if not isinstance(err, temporalio.exceptions.CancelledError):
                err = temporalio.exceptions.CancelledError("Cancelled")
            failure = Failure()
            await dc.encode_failure(err, failure)
            if not failure.HasField("canceled_failure_info"):
                failure.Clear()
                await dc.encode_failure(temporalio.exceptions.CancelledError("Cancelled"), failure)
            return _Outcome("cancelled", failure=failure, label=task.label or "cancelled")
        return await self._activity_failed(task, err, dc)

    async def _activity_failed(
        self,
        task: _Task,
        err: BaseException,
        dc: temporalio.converter.DataConverter | None = None,
    ) -> _Outcome:
        """Stock's "Completing activity as failed" (DEBUG for a benign error), then the
        failure report."""
        benign = (
            isinstance(err, temporalio.exceptions.ApplicationError)
            and err.category == temporalio.exceptions.ApplicationErrorCategory.BENIGN
        )
        temporalio.activity.logger.log(
            logging.DEBUG if benign else logging.WARNING,
            "Completing activity as failed",
            exc_info=err,
            extra={"__temporal_error_identifier": "ActivityFailure", **_log_context(task)},
        )
        return await self._failed(task, err, dc, label=task.label or "failed")

    # -- outcomes ----------------------------------------------------------------------

    async def _completed(
        self, task: _Task, value: Any, dc: temporalio.converter.DataConverter
    ) -> _Outcome:
        try:
            if isinstance(value, _EncodedResult):  # converted in the child: codec only
                result = Payloads.FromString(value.data)
                await encode_payloads(dc, result)
            else:
                result = Payloads(payloads=await dc.encode([value]))
        except Exception as err:
            error = temporalio.exceptions.ApplicationError(
                f"The activity's return value could not be converted to a payload: "
                f"{type(err).__name__}: {err}",
                type="ResultConversionError",
            )
            error.__cause__ = err
            return await self._failed(task, error, dc)
        limit = self._settings.blob_size_limit
        size = result.ByteSize()
        if limit and not self._settings.disable_payload_error_limit and size > limit:
            outcome = await self._failed(
                task,
                temporalio.exceptions.ApplicationError(
                    f"The activity's result is {size} bytes, over the server's blob size limit "
                    f"of {limit} bytes. Return a smaller result (or store the data elsewhere and "
                    "return a reference).",
                    type="PayloadTooLarge",
                ),
                dc,
            )
            outcome.cause = ActivityTaskFailedCause.ACTIVITY_TASK_FAILED_CAUSE_PAYLOADS_TOO_LARGE
            return outcome
        return _Outcome("completed", result=result, label="completed")

    async def _failed(
        self,
        task: _Task,
        error: BaseException,
        dc: temporalio.converter.DataConverter | None = None,
        label: str = "failed",
    ) -> _Outcome:
        failure = Failure()
        try:
            await (dc or self._dc).encode_failure(error, failure)
        except Exception as inner:
            failure.Clear()
            failure.message = f"Failed building exception result: {inner}"
            failure.application_failure_info.SetInParent()
        return _Outcome("failed", failure=failure, label=label)

    async def _report(self, task: _Task, outcome: _Outcome) -> None:
        self.stats[(task.activity_type, outcome.label or outcome.kind)] += 1
        last = task.last_heartbeat
        encoded_last: Payloads | None = None
        if last is not None and outcome.kind in ("failed", "cancelled"):
            encoded_last = Payloads()
            encoded_last.CopyFrom(last)
            await encode_payloads(self._dc, encoded_last)
        # Evict the heartbeat state: flush the newest details only for a normal
        # cancellation (Canceled cannot carry them); completion drops them.
        await self.heartbeats.evict(
            task.token, flush=encoded_last if outcome.kind == "cancelled" else None
        )
        if outcome.kind == "none":
            return
        if self._metrics is not None:
            self._metrics.task_reported(
                task.activity_type,
                task.workflow_type,
                outcome.kind,
                timedelta(seconds=time.monotonic() - task.received),
                cause=outcome.cause,
                benign=_is_benign(outcome.failure),
            )
        service = self._service
        if outcome.kind == "completed":
            name = "RespondActivityTaskCompleted"
            request: Any = RespondActivityTaskCompletedRequest(
                namespace=service.namespace,
                task_token=task.token,
                identity=service.identity,
                result=outcome.result,
            )
        elif outcome.kind == "cancelled":
            name = "RespondActivityTaskCanceled"
            assert outcome.failure is not None
            request = RespondActivityTaskCanceledRequest(
                namespace=service.namespace,
                task_token=task.token,
                identity=service.identity,
                details=outcome.failure.canceled_failure_info.details,
            )
        else:
            name = "RespondActivityTaskFailed"
            request = RespondActivityTaskFailedRequest(
                namespace=service.namespace,
                task_token=task.token,
                identity=service.identity,
                failure=outcome.failure,
                cause=outcome.cause or _UNHANDLED,
            )
            if encoded_last is not None:
                request.last_heartbeat_details.CopyFrom(encoded_last)
        try:
            response = await service.call(name, request, give_up_at=task.give_up_at)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                logger.debug(
                    "%s for %s: already resolved or timed out",
                    name,
                    task.activity_type,
                    extra=_log_context(task),
                )
                return
            logger.error(
                "%s for %s failed: %s",
                name,
                task.activity_type,
                describe_rpc_error(err),
                extra=_log_context(task),
            )
            return
        if name == "RespondActivityTaskFailed" and response.failures:
            logger.warning("The server rejected parts of a failure report: %s", response.failures)
        if name == "RespondActivityTaskCompleted" and self._metrics is not None:
            scheduled = task.info.scheduled_time if task.info is not None else None
            if scheduled is not None:
                self._metrics.task_succeeded(task.activity_type, task.workflow_type, scheduled)
