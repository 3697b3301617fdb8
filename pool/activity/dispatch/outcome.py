"""What an ended activity is reported as: a pure decision, no I/O, no clock.

    the chain's end: a value, or the error it raised
    + the first cancel's reason (or None) + how a child ended (killed / crashed / "")
    + a heartbeat that could not be converted (or None)
        ─▶ decide() ─▶ Verdict: completed / failed / cancelled / complete-async /
                       nothing; the error to build the failure from; the stats label;
                       which of stock's log lines goes with it

The dispatcher then builds the failure or the result payloads with the task's data
converter (report.py) and sends the Respond* RPC the verdict names.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

import temporalio.activity
import temporalio.exceptions
from temporalio.api.enums.v1 import ApplicationErrorCategory
from temporalio.api.failure.v1 import Failure

import runner.context

__all__ = [
    "LogLine",
    "Report",
    "Verdict",
    "cancel_outcome",
    "decide",
    "internal_error",
    "is_benign",
    "not_registered",
    "oversize_error",
    "result_conversion_error",
]

Details = temporalio.activity.ActivityCancellationDetails


class Report(enum.Enum):
    """Which Respond* RPC is sent (``NOTHING``: none)."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    NOTHING = "none"


class LogLine(enum.Enum):
    """Stock's log line for each way an activity ends."""

    NONE = "none"
    HEARTBEAT_FAILED = "heartbeat_failed"  # WARNING, a heartbeat could not be converted
    PAUSED = "paused"  # WARNING, unhandled cancel error produced by activity pause
    RESET = "reset"  # WARNING, ... by activity reset
    CANCELLED = "cancelled"  # DEBUG "Completing as cancelled"
    COMPLETE_ASYNC = "complete_async"  # DEBUG "Completing asynchronously"
    ACTIVITY_FAILED = "activity_failed"  # "Completing activity as failed" (DEBUG if benign)


@dataclass(frozen=True)
class Verdict:
    report: Report
    label: str  # the stats label: completed, failed, cancelled, killed, crashed, ...
    error: BaseException | None = None  # the failure to build (failed, cancelled)
    log: LogLine = LogLine.NONE


def cancel_outcome(details: Details) -> tuple[Report, BaseException | None]:
    """How an activity that ended by cancellation is reported, by the reason.

    ``NOTHING``: the server already gave up on the attempt; ``CANCELLED``:
    RespondActivityTaskCanceled; ``FAILED`` with the error: RespondActivityTaskFailed.
    """
    if details.not_found or details.timed_out:
        return Report.NOTHING, None
    if details.cancel_requested:
        return Report.CANCELLED, None
    if details.reset:
        return Report.FAILED, temporalio.exceptions.ApplicationError(
            "Unhandled activity cancel error produced by activity reset", type="ActivityReset"
        )
    if details.paused:
        return Report.FAILED, temporalio.exceptions.ApplicationError(
            "Unhandled activity cancel error produced by activity pause", type="ActivityPause"
        )
    if details.worker_shutdown:
        return Report.FAILED, temporalio.exceptions.ApplicationError(
            "Worker is shutting down and this activity did not complete in time",
            type="WorkerShutdown",
            non_retryable=False,
        )
    return Report.FAILED, temporalio.exceptions.ApplicationError("Activity was cancelled")


def decide(
    error: BaseException | None,
    *,
    cancel: Details | None = None,
    child_end: str = "",
    heartbeat_error: BaseException | None = None,
) -> Verdict:
    """What to report for an activity that returned (``error`` None) or raised ``error``."""
    if error is None:
        return Verdict(Report.COMPLETED, "completed")
    if isinstance(error, runner.context.CompleteAsyncError):
        return Verdict(Report.NOTHING, "complete_async", log=LogLine.COMPLETE_ASYNC)
    if heartbeat_error is not None:
        return Verdict(Report.FAILED, "failed", heartbeat_error, LogLine.HEARTBEAT_FAILED)
    cancelled = isinstance(error, (temporalio.exceptions.CancelledError, asyncio.CancelledError))
    if cancel is not None and (cancelled or child_end):
        return _decide_cancelled(error, cancel, child_end)
    return Verdict(Report.FAILED, child_end or "failed", error, LogLine.ACTIVITY_FAILED)


def _decide_cancelled(error: BaseException, cancel: Details, child_end: str) -> Verdict:
    report, reported = cancel_outcome(cancel)
    if report is Report.NOTHING:
        default = "timed_out" if cancel.timed_out else "not_found"
        return Verdict(Report.NOTHING, child_end or default)
    if report is Report.FAILED:
        log = LogLine.PAUSED if cancel.paused else LogLine.RESET if cancel.reset else LogLine.NONE
        return Verdict(Report.FAILED, child_end or "cancelled", reported, log)
    if not isinstance(error, temporalio.exceptions.CancelledError):
        error = temporalio.exceptions.CancelledError("Cancelled")
    return Verdict(Report.CANCELLED, child_end or "cancelled", error, LogLine.CANCELLED)


def is_benign(failure: Failure | None) -> bool:
    """A failure the activity raised as a benign ApplicationError (core does not count it)."""
    return failure is not None and (
        failure.application_failure_info.category
        == ApplicationErrorCategory.APPLICATION_ERROR_CATEGORY_BENIGN
    )


def oversize_error(
    size: int, limit: int | None, disable_limit: bool
) -> temporalio.exceptions.ApplicationError | None:
    """The failure for a result over the server's blob size limit, or None."""
    if not limit or disable_limit or size <= limit:
        return None
    return temporalio.exceptions.ApplicationError(
        f"The activity's result is {size} bytes, over the server's blob size limit "
        f"of {limit} bytes. Return a smaller result (or store the data elsewhere and "
        "return a reference).",
        type="PayloadTooLarge",
    )


def result_conversion_error(err: Exception) -> temporalio.exceptions.ApplicationError:
    error = temporalio.exceptions.ApplicationError(
        f"The activity's return value could not be converted to a payload: "
        f"{type(err).__name__}: {err}",
        type="ResultConversionError",
    )
    error.__cause__ = err
    return error


def not_registered(
    activity_type: str, workflow_id: str, registered: list[str]
) -> temporalio.exceptions.ApplicationError:
    names = ", ".join(sorted(registered)) or "(none)"
    return temporalio.exceptions.ApplicationError(
        f"Activity function {activity_type} for workflow {workflow_id} is not "
        f"registered on this worker, available activities: {names}",
        type="NotFoundError",
    )


def internal_error(err: Exception) -> temporalio.exceptions.ApplicationError:
    """Our own bug while handling a task: the task is still reported, as this."""
    return temporalio.exceptions.ApplicationError(
        f"Internal worker error: {type(err).__name__}: {err}", type="PoolInternalError"
    )
