"""The dispatcher: one polled task in, exactly one outcome out.

    poll response ─▶ Task (DECODING) ─▶ decode.py: args, info, headers ─▶ deadlines armed
    ─▶ WAITING for its activity type's slot ─▶ RUNNING: the interceptor chain (a task on
       this loop), its innermost step by the task's executor
        sync, process pool  ─▶ child_executor.py ─▶ child ─▶ TaskDone / death / kill
        sync, thread pool   ─▶ thread_executor.py (CancelledError raised in the thread)
        async               ─▶ loop_executor.py, awaited in the chain's task
    ─▶ value or error ─▶ outcome.decide() ─▶ REPORTING: report.py builds and sends
       RespondActivityTask{Completed,Failed,Canceled} (or nothing) ─▶ DONE

Cancellation from every source (heartbeat answers, local deadlines, worker
shutdown) enters through :meth:`Dispatcher.cancel`; the first reason wins, the task's
executor delivers it, and it decides how the outcome is reported (outcome.py).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import temporalio.activity
import temporalio.client
import temporalio.common
import temporalio.converter
import temporalio.worker
from temporalio.api.common.v1 import Payload
from temporalio.api.workflowservice.v1 import PollActivityTaskQueueResponse

import runner.context
from pool._changes import Changes
from pool._interceptors import Innermost, Outbound, build_chain
from pool.activity.heartbeats import HeartbeatManager, throttle_interval
from pool.activity.service import ActivityService
from pool.activity.slots import Slots
from pool.observe.sdk_metrics import ActivityMetrics
from pool.supervisor.scheduler import Reservation

from . import decode
from .child_executor import ChildExecutor, ChildPool
from .deadlines import Deadlines
from .details import HeartbeatDetails
from .loop_executor import LoopExecutor
from .outcome import decide, internal_error, not_registered
from .report import Outcome, Reporter, build_failure, completed, from_verdict, log_context
from .task import Details, Executor, RunningTask, State, Task
from .thread_executor import ThreadExecutor

__all__ = ["DispatchSettings", "Dispatcher"]

logger = logging.getLogger("pool.dispatcher")


@dataclass(frozen=True)
class DispatchSettings:
    task_queue: str
    default_heartbeat_throttle: timedelta
    max_heartbeat_throttle: timedelta
    local_timeout_buffer: float
    blob_size_limit: int | None
    disable_payload_error_limit: bool


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
        pool: ChildPool | None,
        thread_executor: concurrent.futures.ThreadPoolExecutor | None,
        shared_state: Any,
        release_slot: Callable[[bytes], None],
        metric_meter: temporalio.common.MetricMeter | None,
        type_limits: Mapping[str, int] | None = None,
        interceptors: Sequence[temporalio.worker.Interceptor] = (),
        decode_headers: bool = False,
        metrics: ActivityMetrics | None = None,
        children_convert: Collection[str] = (),
        child_reports: int | None = None,
    ) -> None:
        self._service = service
        self._settings = settings
        self._activities = dict(activities)
        self._dynamic = dynamic
        self._dc = data_converter
        self.client = client
        self._pool = pool
        self._release_slot = release_slot
        self._metric_meter = metric_meter
        self._interceptors = list(interceptors)
        # Activity types whose payloads the children convert (the parent applies only
        # the codec); the service generation the children's report settings are for.
        self._children_convert = frozenset(children_convert)
        self._child_reports = child_reports  # None: children send no results
        self._decode_headers = decode_headers
        # Per-activity-type concurrency limits: a semaphore per limited type.
        self._type_slots = {name: Slots(limit) for name, limit in (type_limits or {}).items()}
        self._ids = itertools.count(1)
        self._deadlines = Deadlines(settings.local_timeout_buffer, self.cancel)
        self._tasks: dict[bytes, Task] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._idle = Changes()  # woken when the last task handler ends
        self._shutdown_thread_event = threading.Event()
        self._shutdown_async_event = asyncio.Event()
        self._shutdown_cancelling = False
        self.heartbeats = HeartbeatManager(
            service, on_cancel=self._on_heartbeat_cancel, on_sent=self._on_heartbeat_sent
        )
        self._details = HeartbeatDetails(data_converter, self.heartbeats, self._tasks, self.cancel)
        # (activity type, outcome label) -> count; labels: completed, failed,
        # cancelled, killed, crashed, timed_out, not_found, complete_async.
        self.stats: collections.Counter[tuple[str, str]] = collections.Counter()
        self.started: collections.Counter[str] = collections.Counter()
        self._reporter = Reporter(service, data_converter, self.heartbeats, metrics, self.stats)
        # Called with (activity type, seconds); the metrics module sets these.
        self.on_schedule_to_start: Callable[[str, float], None] | None = None
        self.on_run_time: Callable[[str, float], None] | None = None
        self._executors = self._make_executors(pool, thread_executor, shared_state)

    def _make_executors(
        self,
        pool: ChildPool | None,
        threads: concurrent.futures.ThreadPoolExecutor | None,
        shared_state: Any,
    ) -> tuple[Executor, Executor | None]:
        """(the async one, the sync one: a thread pool's, or the children's, or None)."""
        sync: Executor | None = None
        if threads is not None:
            sync = ThreadExecutor(
                threads,
                worker_shutdown=self._shutdown_thread_event,
                metric_meter=self._metric_meter,
            )
        elif pool is not None:
            sync = ChildExecutor(
                pool,
                shared_state,
                on_heartbeat=self.child_heartbeat,
                on_last_details=self._details.final,
                metric_meter=self._metric_meter,
            )
        return LoopExecutor(), sync

    # -- read-only state ----------------------------------------------------------------

    @property
    def outstanding(self) -> int:
        return len(self._running)

    @property
    def sent_by_children(self) -> int:
        """Completions that children sent to the server themselves."""
        return self._reporter.sent_by_children

    def running(self) -> list[RunningTask]:
        """Every task in flight: its token, activity type, child pid and state."""
        return [t.as_running() for t in self._tasks.values()]

    def __repr__(self) -> str:
        kinds = collections.Counter(t.kind for t in self._tasks.values())
        inner = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none"
        return f"<Dispatcher [Tasks: {len(self._tasks)} running ({inner})]>"

    # -- entry points -------------------------------------------------------------------

    def start(
        self,
        resp: PollActivityTaskQueueResponse,
        input_bytes: bytes | memoryview | None,
        reservation: Reservation | None,
    ) -> None:
        """Take ownership of a polled task (and of its slot and child reservation).
        ``input_bytes``: ``resp.input`` as the server serialised it, if known (a child
        that converts gets them as they are)."""
        handle = asyncio.create_task(
            self._handle(resp, input_bytes, reservation), name="activity-task"
        )
        self._running.add(handle)
        handle.add_done_callback(self._task_finished)

    def _task_finished(self, handle: asyncio.Task[None]) -> None:
        self._running.discard(handle)
        if not handle.cancelled() and handle.exception() is not None:
            logger.error("Activity task handler failed", exc_info=handle.exception())
        if not self._running:
            self._idle.notify()

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every accepted task has been reported. False on timeout."""
        return await self._idle.until(lambda: not self._running, timeout)

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
        if task is None or not task.request_cancel(details, reason):
            return
        logger.debug("Cancelling %s (%s)", task.activity_type, reason, extra=log_context(task))
        if task.executor is not None:
            task.executor.deliver_cancel(task)

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
        if task is not None:
            self._deadlines.heartbeat_sent(task)

    def child_heartbeat(self, token: bytes, data: bytes) -> None:
        """Details a child shipped through the shared state manager (already payloads)."""
        self._details.from_child(token, data)

    def parent_heartbeat(self, task: Task, details: tuple[Any, ...]) -> None:
        """The end of the outbound chain: ``activity.heartbeat()`` in this process, or a
        child's details that passed through an interceptor."""
        self._details.from_parent(task, details)

    # -- one task ----------------------------------------------------------------------

    async def _handle(
        self,
        resp: PollActivityTaskQueueResponse,
        input_bytes: bytes | memoryview | None,
        reservation: Reservation | None,
    ) -> None:
        task = Task(
            id=next(self._ids),
            token=resp.task_token,
            activity_type=resp.activity_type.name,
            received=time.monotonic(),
            workflow_type=resp.workflow_type.name,
            input_bytes=input_bytes,
        )
        self._tasks[task.token] = task
        limit = decode.duration(resp, "start_to_close_timeout") or decode.duration(
            resp, "schedule_to_close_timeout"
        )
        if limit is not None:
            task.give_up_at = task.received + limit.total_seconds()
        try:
            try:
                outcome = await self._execute(task, resp, reservation)
            except Exception as err:  # our own bug: still report the task
                logger.exception(
                    "Internal error running %s", task.activity_type, extra=log_context(task)
                )
                outcome = await build_failure(self._dc, internal_error(err))
            task.state = State.REPORTING
            await self._reporter.report(task, outcome)
        finally:
            task.state = State.DONE
            for timer in task.timers.values():
                timer.cancel()
            self._tasks.pop(task.token, None)
            self._release_slot(task.token)

    async def _execute(
        self, task: Task, resp: PollActivityTaskQueueResponse, reservation: Reservation | None
    ) -> Outcome:
        """Decode, wait for the type's slot, run; the child reservation is released on
        every path that does not hand it to the pool (releasing a used one does nothing)."""
        defn = self._activities.get(task.activity_type, self._dynamic)
        if defn is not None:
            task.executor = self._executors[0] if defn.is_async else self._executors[1]
        if reservation is not None and (task.executor is None or not task.executor.takes_child):
            reservation.release()
            reservation = None
        task.reservation = reservation
        try:
            if defn is None:
                error = not_registered(
                    task.activity_type, resp.workflow_execution.workflow_id, list(self._activities)
                )
                return await from_verdict(task, decide(error), self._dc)
            return await self._decode_and_run(task, resp, defn)
        finally:
            if reservation is not None:
                reservation.release()

    async def _decode_and_run(
        self,
        task: Task,
        resp: PollActivityTaskQueueResponse,
        defn: temporalio.activity._Definition,
    ) -> Outcome:
        namespace, task_queue = self._service.namespace, self._settings.task_queue
        dc = decode.task_converter(self._dc, resp, namespace, task_queue)
        assert task.executor is not None
        child_converts = task.executor.takes_child and defn.name in self._children_convert
        child_encodes = child_converts and not self._interceptors
        try:
            args = await decode.decode_args(resp, defn, dc, child_converts, task.input_bytes)
            task.input_bytes = None  # EncodedArgs has them now, if it needs them
            details, task.encoded_heartbeat = await decode.decode_heartbeat(resp, dc, child_encodes)
        except temporalio.exceptions.ApplicationError as error:
            return await from_verdict(task, decide(error), dc)
        task.encode_result = child_encodes
        task.child_reports = (
            child_encodes
            and dc.payload_codec is None
            and self._child_reports is not None
            and self._child_reports == self._service.generation
        )
        info = decode.build_info(resp, namespace, task_queue, details)
        task.info = info
        if self.on_schedule_to_start is not None:
            waited = info.started_time - info.current_attempt_scheduled_time
            self.on_schedule_to_start(task.activity_type, waited.total_seconds())
        task.throttle = throttle_interval(
            info.heartbeat_timeout,
            self._settings.default_heartbeat_throttle,
            self._settings.max_heartbeat_throttle,
        )
        self._deadlines.arm_for(task, info)
        type_slots = self._type_slots.get(task.activity_type)
        if type_slots is not None:
            # From here on this task holds one of its type's slots (released below).
            await self._wait_for_type_slot(task, type_slots)
        try:
            return await self._run(task, resp, defn, dc, args)
        finally:
            if type_slots is not None:
                type_slots.release()

    async def _run(
        self,
        task: Task,
        resp: PollActivityTaskQueueResponse,
        defn: temporalio.activity._Definition,
        dc: temporalio.converter.DataConverter,
        args: Sequence[Any],
    ) -> Outcome:
        if self._shutdown_cancelling:
            task.request_cancel(Details(worker_shutdown=True), "the worker is shutting down")
        started = time.monotonic()
        self.started[task.activity_type] += 1
        headers = await decode.decode_headers(resp, dc, self._decode_headers)
        try:
            return await self._run_chain(task, defn, args, headers, dc)
        finally:
            if self.on_run_time is not None:
                self.on_run_time(task.activity_type, time.monotonic() - started)

    async def _wait_for_type_slot(self, task: Task, type_slots: Slots) -> None:
        """Take a slot of the task's activity type.

        A task of a type at its limit waits here (its start-to-close clock runs), and
        gives its child back meanwhile so other activity types keep every core busy.
        Once it may run, it takes the next idle child ahead of the pollers' promises.
        """
        if type_slots.used < type_slots.size:
            await type_slots.acquire()
            return
        task.state = State.WAITING
        if task.reservation is not None:
            task.reservation.release()
        logger.debug(
            "%s waits: its activity_type_limits is reached",
            task.activity_type,
            extra=log_context(task),
        )
        await type_slots.acquire()

    async def _run_chain(
        self,
        task: Task,
        defn: temporalio.activity._Definition,
        args: Sequence[Any],
        headers: Mapping[str, Payload],
        dc: temporalio.converter.DataConverter,
    ) -> Outcome:
        """Run the interceptor chain (its innermost step runs the activity) in a task
        of its own, with the activity context set, then turn its end into an outcome."""
        assert task.info is not None and task.executor is not None
        executor = task.executor
        chain = self._enter_chain(task, defn, dc)
        outbound = Outbound(task.info, lambda *details: self.parent_heartbeat(task, details))
        activity_input = temporalio.worker.ExecuteActivityInput(
            fn=defn.fn, args=args, executor=executor.threads, headers=headers
        )

        async def run() -> Any:
            temporalio.activity.logger.debug("Starting activity")
            chain.init(outbound)
            return await chain.execute_activity(activity_input)

        task.chain = asyncio.create_task(run(), name=f"activity:{task.activity_type}")
        task.start_running()
        if task.cancel_requested:  # it came first: the async chain is cancelled at once
            executor.deliver_cancel(task)
        try:
            try:
                value = await asyncio.shield(task.chain)
            except asyncio.CancelledError:
                if not task.chain.cancelled():
                    raise  # we ourselves were cancelled
                raise temporalio.exceptions.CancelledError("Cancelled") from None
        except BaseException as err:
            verdict = decide(
                err,
                cancel=task.cancel,
                child_end=task.child_end,
                heartbeat_error=task.heartbeat_error,
            )
            return await from_verdict(task, verdict, dc)
        settings = self._settings
        return await completed(
            dc, value, settings.blob_size_limit, settings.disable_payload_error_limit
        )

    def _enter_chain(
        self,
        task: Task,
        defn: temporalio.activity._Definition,
        dc: temporalio.converter.DataConverter,
    ) -> temporalio.worker.ActivityInboundInterceptor:
        """Set the activity context (with the task's cancel targets) and build the chain."""
        assert task.info is not None and task.executor is not None
        executor = task.executor
        targets = task.targets = executor.targets(defn)
        if task.cancel is not None:
            targets.set(task.cancel)
        raiser = targets.thread_raiser
        # The context lives in this handler task: the chain's task copies it, and the
        # outcome's log lines carry the activity's fields, as stock's do.
        runner.context.enter_activity_context(
            info=task.info,
            heartbeat=lambda *details: self.parent_heartbeat(task, details),
            cancelled_event=targets.thread_cancelled,
            worker_shutdown_event=self._shutdown_thread_event,
            shield=raiser.shielded if raiser else None,
            payload_converter=dc.payload_converter,
            cancellation_details=targets.holder,
            async_cancelled_event=targets.async_cancelled,
            async_worker_shutdown_event=self._shutdown_async_event,
            metric_meter=self._metric_meter,
            client=self.client if isinstance(executor, LoopExecutor) else None,
        )
        task.context = runner.context.current_context()
        task.innermost = Innermost(lambda input: executor.run(task, input, dc))
        return build_chain(self._interceptors, task.innermost)
