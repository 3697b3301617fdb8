"""An ended task's outcome, built and sent: the dispatcher's only Respond* step.

value ─▶ completed(): payloads (codec applied; without a codec a child's bytes as
         they came), or the failure for a result that does not convert or is over
         the blob size limit, or the server's answer to the child that sent it
Verdict (outcome.decide) ─▶ from_verdict(): stock's log line, then the failure
         built with the task's converter
Outcome ─▶ Reporter.report(): stats, heartbeat state evicted (flushed after a
         normal cancellation), metrics, Respond{Completed,Failed,Canceled} or nothing
         (nothing either when a child sent the completion: its answer is counted)
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import grpc
import temporalio.activity
import temporalio.converter
import temporalio.exceptions
from temporalio.api.common.v1 import Payloads
from temporalio.api.enums.v1 import ActivityTaskFailedCause
from temporalio.api.failure.v1 import Failure
from temporalio.api.workflowservice.v1 import (
    RespondActivityTaskCanceledRequest,
    RespondActivityTaskCompletedRequest,
    RespondActivityTaskFailedRequest,
)

import runner.context
import runner.failures
from pool.activity.heartbeats import HeartbeatManager
from pool.activity.service import ActivityService, describe_rpc_error
from pool.activity.wire import Spliced
from pool.observe.sdk_metrics import ActivityMetrics
from runner.report import Reported

from .child_executor import ChildReported, EncodedResult
from .codec import encode_payloads
from .outcome import LogLine, Report, Verdict, is_benign, oversize_error, result_conversion_error
from .task import Task

__all__ = ["Outcome", "Reporter", "build_failure", "completed", "from_verdict", "log_context"]

logger = logging.getLogger("pool.dispatcher")

# Core's cause for a failure the activity raised (nothing more specific applies).
_UNHANDLED = ActivityTaskFailedCause.ACTIVITY_TASK_FAILED_CAUSE_ACTIVITY_WORKER_UNHANDLED_FAILURE
_COMPLETED = "RespondActivityTaskCompleted"


@dataclass
class Outcome:
    report: Report
    label: str  # for stats: completed / failed / cancelled / crashed / killed / ...
    result: Payloads | None = None
    # The result as a child serialised it, sent without parsing it (no codec applies).
    encoded_result: bytes | memoryview | None = None
    result_size: int | None = None  # bytes of the result, when known
    # The child sent the completion itself: how the server answered it.
    reported: Reported | None = None
    failure: Failure | None = None
    cause: ActivityTaskFailedCause.ValueType = (
        ActivityTaskFailedCause.ACTIVITY_TASK_FAILED_CAUSE_UNSPECIFIED
    )


def log_context(task: Task) -> dict[str, Any]:
    """``extra`` for log records about a task: the keys temporalio's activity logger uses,
    plus the child pid when a child runs it."""
    if task.info is not None:
        fields = runner.context.log_fields(task.info)
    else:
        fields = {"activity_type": task.activity_type}
    return {"temporal_activity": fields, "child_pid": task.pid}


async def build_failure(
    dc: temporalio.converter.DataConverter, error: BaseException, label: str = "failed"
) -> Outcome:
    """A failed outcome: ``error`` as a Failure, or what went wrong building it."""
    failure = Failure()
    try:
        await dc.encode_failure(error, failure)
    except Exception as inner:
        runner.failures.replace_with_fallback(failure, inner)
    return Outcome(Report.FAILED, label, failure=failure)


async def completed(
    dc: temporalio.converter.DataConverter,
    value: Any,
    blob_size_limit: int | None,
    disable_payload_error_limit: bool,
) -> Outcome:
    """The activity's return value as result payloads, or the failure reporting why not."""
    if isinstance(value, ChildReported):  # sent, and only ever with nothing to apply
        return Outcome(Report.COMPLETED, "completed", reported=value.reported)
    encoded: bytes | memoryview | None = None
    result: Payloads | None = None
    try:
        if isinstance(value, EncodedResult) and dc.payload_codec is None:
            encoded = value.data  # converted in the child, and nothing left to apply
            size = len(encoded)
        elif isinstance(value, EncodedResult):  # converted in the child: codec only
            # protobuf parses any bytes-like object (its stubs say bytes).
            result = Payloads.FromString(cast(bytes, value.data))
            await encode_payloads(dc, result)
            size = result.ByteSize()
        else:
            result = Payloads()
            result.payloads.extend(await dc.encode([value]))
            size = result.ByteSize()
    except Exception as err:
        return await build_failure(dc, result_conversion_error(err))
    too_large = oversize_error(size, blob_size_limit, disable_payload_error_limit)
    if too_large is not None:
        outcome = await build_failure(dc, too_large)
        outcome.cause = ActivityTaskFailedCause.ACTIVITY_TASK_FAILED_CAUSE_PAYLOADS_TOO_LARGE
        return outcome
    return Outcome(
        Report.COMPLETED, "completed", result=result, encoded_result=encoded, result_size=size
    )


async def from_verdict(
    task: Task, verdict: Verdict, dc: temporalio.converter.DataConverter
) -> Outcome:
    """Stock's log line for the verdict, then its failure built with ``dc``."""
    _log(task, verdict)
    if verdict.report is Report.NOTHING:
        return Outcome(Report.NOTHING, verdict.label)
    assert verdict.error is not None
    if verdict.report is Report.FAILED:
        return await build_failure(dc, verdict.error, verdict.label)
    failure = Failure()
    await dc.encode_failure(verdict.error, failure)
    if not failure.HasField("canceled_failure_info"):
        failure.Clear()
        await dc.encode_failure(temporalio.exceptions.CancelledError("Cancelled"), failure)
    return Outcome(Report.CANCELLED, verdict.label, failure=failure)


def _log(task: Task, verdict: Verdict) -> None:
    log = temporalio.activity.logger
    error = verdict.error
    if verdict.log is LogLine.HEARTBEAT_FAILED:
        log.warning(
            f"Completing as failure during heartbeat with error of type {type(error)}: {error}"
        )
    elif verdict.log in (LogLine.PAUSED, LogLine.RESET):
        cause = "pause" if verdict.log is LogLine.PAUSED else "reset"
        log.warning(
            f"Completing as failure due to unhandled cancel error produced by activity {cause}"
        )
    elif verdict.log is LogLine.CANCELLED:
        log.debug("Completing as cancelled")
    elif verdict.log is LogLine.COMPLETE_ASYNC:
        log.debug("Completing asynchronously")
    elif verdict.log is LogLine.ACTIVITY_FAILED:
        benign = (
            isinstance(error, temporalio.exceptions.ApplicationError)
            and error.category == temporalio.exceptions.ApplicationErrorCategory.BENIGN
        )
        log.log(
            logging.DEBUG if benign else logging.WARNING,
            "Completing activity as failed",
            exc_info=error,
            extra={"__temporal_error_identifier": "ActivityFailure", **log_context(task)},
        )


def request_for(
    outcome: Outcome, token: bytes, service: ActivityService, last: Payloads | None
) -> tuple[str, Any]:
    """The Respond* RPC's name and request for an outcome that is reported."""
    common: dict[str, Any] = {
        "namespace": service.namespace,
        "task_token": token,
        "identity": service.identity,
    }
    if outcome.report is Report.COMPLETED:
        completed = RespondActivityTaskCompletedRequest(**common)
        if outcome.encoded_result is not None:
            return "RespondActivityTaskCompleted", Spliced(
                completed, "result", outcome.encoded_result
            )
        if outcome.result is not None:
            # CopyFrom: a message given to the constructor (result=) is copied field by
            # field, ~1.4 ms per MiB on the parent's core against ~0.05 ms.
            completed.result.CopyFrom(outcome.result)
        return "RespondActivityTaskCompleted", completed
    assert outcome.failure is not None
    if outcome.report is Report.CANCELLED:
        cancelled = RespondActivityTaskCanceledRequest(**common)
        cancelled.details.CopyFrom(outcome.failure.canceled_failure_info.details)
        return "RespondActivityTaskCanceled", cancelled
    request = RespondActivityTaskFailedRequest(**common, cause=outcome.cause or _UNHANDLED)
    request.failure.CopyFrom(outcome.failure)
    if last is not None:
        request.last_heartbeat_details.CopyFrom(last)
    return "RespondActivityTaskFailed", request


class Reporter:
    """Counts, evicts the heartbeat state and sends one task's outcome."""

    def __init__(
        self,
        service: ActivityService,
        dc: temporalio.converter.DataConverter,
        heartbeats: HeartbeatManager,
        metrics: ActivityMetrics | None,
        stats: collections.Counter[tuple[str, str]],
    ) -> None:
        self._service = service
        self._dc = dc
        self._heartbeats = heartbeats
        self._metrics = metrics
        self._stats = stats
        self.sent_by_children = 0  # completions a child sent to the server itself

    async def report(self, task: Task, outcome: Outcome) -> None:
        self._stats[(task.activity_type, outcome.label or outcome.report.value)] += 1
        encoded_last: Payloads | None = None
        if task.last_heartbeat is not None and outcome.report in (
            Report.FAILED,
            Report.CANCELLED,
        ):
            encoded_last = Payloads()
            encoded_last.CopyFrom(task.last_heartbeat)
            await encode_payloads(self._dc, encoded_last)
        # Evict the heartbeat state: flush the newest details only for a normal
        # cancellation (Canceled cannot carry them); completion drops them.
        flush = encoded_last if outcome.report is Report.CANCELLED else None
        await self._heartbeats.evict(task.token, flush=flush)
        if outcome.report is Report.NOTHING:
            return
        if self._metrics is not None:
            self._metrics.task_reported(
                task.activity_type,
                task.workflow_type,
                outcome.report.value,
                timedelta(seconds=time.monotonic() - task.received),
                cause=outcome.cause,
                benign=is_benign(outcome.failure),
            )
        if outcome.reported is not None:
            self._reported_by_child(task, outcome.reported)
            return
        name, request = request_for(outcome, task.token, self._service, encoded_last)
        response = await self._send(task, name, request, outcome.result_size)
        if response is None:
            return
        if name == "RespondActivityTaskFailed" and response.failures:
            logger.warning("The server rejected parts of a failure report: %s", response.failures)
        if name == _COMPLETED:
            self._succeeded(task)

    def _reported_by_child(self, task: Task, reported: Reported) -> None:
        """A child sent the completion: count its call as ours, and its end as ours."""
        self.sent_by_children += 1
        code = grpc.StatusCode[reported.code]
        self._service.call_ended(_COMPLETED, code, reported.seconds)
        if code is grpc.StatusCode.NOT_FOUND:
            self._not_found(task, _COMPLETED)
        else:
            self._succeeded(task)

    def _succeeded(self, task: Task) -> None:
        scheduled = task.info.scheduled_time if task.info is not None else None
        if self._metrics is not None and scheduled is not None:
            self._metrics.task_succeeded(task.activity_type, task.workflow_type, scheduled)

    def _not_found(self, task: Task, name: str) -> None:
        logger.debug(
            "%s for %s: already resolved or timed out",
            name,
            task.activity_type,
            extra=log_context(task),
        )

    async def _send(self, task: Task, name: str, request: Any, size: int | None) -> Any:
        """The RPC's response, or None when it failed (logged: NOT_FOUND at DEBUG)."""
        try:
            return await self._service.call(name, request, give_up_at=task.give_up_at, size=size)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                self._not_found(task, name)
                return None
            logger.error(
                "%s for %s failed: %s",
                name,
                task.activity_type,
                describe_rpc_error(err),
                extra=log_context(task),
            )
            return None
