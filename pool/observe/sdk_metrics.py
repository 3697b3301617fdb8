"""sdk-core's standard activity-worker metrics, recorded through the runtime's meter.

    Poller      task_received, schedule_to_start_latency, poll_no_task
    Dispatcher  execution_latency, execution_failed, succeed_endtoend_latency
    Poller      num_pollers{poller_type="activity_task"} as polls start and end
    sampler     worker_task_slots_available/used (every second)
    channel     request / request_failure / request_latency and the long_request_*
                family (PollActivityTaskQueue), told of each call by ActivityService

The stock worker's activity side is sdk-core, which emits these; ours is Python, so
this module emits the same series (names, descriptions, kinds, labels and the
"duration" unit, see ``sdk-core/src/telemetry/metrics.rs`` and
``client/src/metrics.rs`` in the installed temporalio) through
``Runtime.metric_meter`` of the client's runtime. They appear wherever the user
pointed telemetry (Prometheus or OpenTelemetry) beside the workflow side's. Names
carry the default ``temporal_`` prefix (a runtime does not expose a custom one).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import grpc
import grpc.aio
import temporalio.common
from temporalio.api.enums.v1 import ActivityTaskFailedCause

__all__ = ["ActivityMetrics", "RequestMetrics"]

PREFIX = "temporal_"
_LONG_POLLS = frozenset({"PollActivityTaskQueue"})
_PAYLOADS_TOO_LARGE = ActivityTaskFailedCause.ACTIVITY_TASK_FAILED_CAUSE_PAYLOADS_TOO_LARGE


class ActivityMetrics:
    """The activity worker's series for one namespace and task queue."""

    def __init__(self, meter: temporalio.common.MetricMeter, namespace: str, task_queue: str):
        base = meter.with_additional_attributes({"namespace": namespace, "task_queue": task_queue})
        self._received = base.create_counter(
            PREFIX + "activity_task_received", "Count of activity task queue poll successes"
        )
        self._failed = base.create_counter(
            PREFIX + "activity_execution_failed", "Count of activity task execution failures"
        )
        self._latency = base.create_histogram_timedelta(
            PREFIX + "activity_execution_latency",
            "Histogram of activity execution latencies",
            "duration",
        )
        self._schedule_to_start = base.create_histogram_timedelta(
            PREFIX + "activity_schedule_to_start_latency",
            "Histogram of activity schedule-to-start latencies",
            "duration",
        )
        self._end_to_end = base.create_histogram_timedelta(
            PREFIX + "activity_succeed_endtoend_latency",
            "Histogram of activity execution latencies for successful activities",
            "duration",
        )
        self._no_task = base.create_counter(
            PREFIX + "activity_poll_no_task",
            "Count of activity task queue poll timeouts (no new task)",
        )
        self._pollers = base.with_additional_attributes(
            {"poller_type": "activity_task"}
        ).create_gauge(PREFIX + "num_pollers", "Current number of active pollers per queue type")
        slots = base.with_additional_attributes({"worker_type": "ActivityWorker"})
        self._slots_available = slots.create_gauge(
            PREFIX + "worker_task_slots_available",
            "Current number of available slots per task type",
        )
        self._slots_used = slots.create_gauge(
            PREFIX + "worker_task_slots_used", "Current number of used slots per task type"
        )

    @staticmethod
    def _task_attributes(activity_type: str, workflow_type: str) -> dict[str, str]:
        return {"activity_type": activity_type, "workflow_type": workflow_type}

    # -- the poller --

    def task_received(self, activity_type: str, workflow_type: str, waited: timedelta) -> None:
        attributes: dict[str, Any] = self._task_attributes(activity_type, workflow_type)
        attributes["eager"] = False  # this worker never takes eager tasks
        self._received.add(1, attributes)
        self._schedule_to_start.record(max(waited, timedelta()))

    def poll_no_task(self) -> None:
        self._no_task.add(1)

    # -- the dispatcher --

    def task_reported(
        self,
        activity_type: str,
        workflow_type: str,
        kind: str,
        ran: timedelta,
        *,
        cause: int = 0,
        benign: bool = False,
    ) -> None:
        """The outcome was handed to the server (``kind``: completed / failed /
        cancelled); core records the execution latency for every outcome."""
        attributes = self._task_attributes(activity_type, workflow_type)
        self._latency.record(ran, attributes)
        if kind == "failed" and not benign:
            reason = "PayloadsTooLarge" if cause == _PAYLOADS_TOO_LARGE else "ActivityError"
            self._failed.add(1, {**attributes, "failure_reason": reason})

    def task_succeeded(self, activity_type: str, workflow_type: str, scheduled: datetime) -> None:
        """RespondActivityTaskCompleted succeeded: end-to-end from the schedule."""
        elapsed = datetime.now(timezone.utc) - scheduled
        self._end_to_end.record(
            max(elapsed, timedelta()), self._task_attributes(activity_type, workflow_type)
        )

    # -- the sampler --

    def pollers(self, polling: int) -> None:
        """Polls in flight changed (recorded as it happens, as sdk-core does)."""
        self._pollers.set(polling)

    def sample(self, slots_used: int, slots_free: int | None) -> None:
        self._slots_used.set(slots_used)
        if slots_free is not None:  # a custom supplier's: not recorded, as in sdk-core
            self._slots_available.set(slots_free)


class RequestMetrics:
    """client/src/metrics.rs for our channel: every RPC counted by operation. An
    ``ActivityService`` call observer (``on_call``)."""

    def __init__(self, meter: temporalio.common.MetricMeter, namespace: str) -> None:
        base = meter.with_additional_attributes({"namespace": namespace})
        self._recording: set[asyncio.Future[None]] = set()
        self._request = base.create_counter(
            PREFIX + "request", "Count of client request successes by rpc name"
        )
        self._failed = base.create_counter(
            PREFIX + "request_failure", "Count of client request failures by rpc name"
        )
        self._long = base.create_counter(
            PREFIX + "long_request", "Count of long-poll request successes by rpc name"
        )
        self._long_failed = base.create_counter(
            PREFIX + "long_request_failure", "Count of long-poll request failures by rpc name"
        )
        self._latency = base.create_histogram_timedelta(
            PREFIX + "request_latency", "Histogram of client request latencies", "duration"
        )
        self._long_latency = base.create_histogram_timedelta(
            PREFIX + "long_request_latency",
            "Histogram of client long-poll request latencies",
            "duration",
        )

    def __call__(self, name: str, request: Any, call: Any) -> None:
        attributes = {"operation": name}
        task_queue = getattr(getattr(request, "task_queue", None), "name", "")
        if task_queue:
            attributes["task_queue"] = task_queue
        started = time.monotonic()

        def done(finished: Any) -> None:
            if finished.cancelled():
                return  # our own cancellation (shutdown): neither a success nor a failure
            # grpc.aio gives the status through a coroutine; the call has ended, so it
            # answers at once.
            recording = asyncio.ensure_future(self._record(name, attributes, started, finished))
            self._recording.add(recording)
            recording.add_done_callback(self._recording.discard)

        call.add_done_callback(done)

    async def _record(
        self, name: str, attributes: dict[str, str], started: float, call: Any
    ) -> None:
        elapsed = timedelta(seconds=time.monotonic() - started)
        self._count(name, attributes, await call.code(), elapsed)

    def ended(self, name: str, code: grpc.StatusCode, seconds: float) -> None:
        """A call a child made for this worker (runner.report), counted as ours are."""
        self._count(name, {"operation": name}, code, timedelta(seconds=seconds))

    def _count(
        self, name: str, attributes: dict[str, str], code: grpc.StatusCode, elapsed: timedelta
    ) -> None:
        long = name in _LONG_POLLS
        if code == grpc.StatusCode.OK:
            (self._long if long else self._request).add(1, attributes)
        elif code != grpc.StatusCode.CANCELLED:
            (self._long_failed if long else self._failed).add(
                1, {**attributes, "status_code": code.name}
            )
        (self._long_latency if long else self._latency).record(elapsed, attributes)
