"""What an ended activity is reported as: every branch of outcome.decide, pure."""

from __future__ import annotations

import asyncio

import pytest
import temporalio.activity
import temporalio.exceptions
from temporalio.api.enums.v1 import ApplicationErrorCategory
from temporalio.api.failure.v1 import Failure

import runner.context
from pool.activity.dispatch.outcome import (
    LogLine,
    Report,
    cancel_outcome,
    decide,
    is_benign,
    not_registered,
    oversize_error,
)

pytestmark = pytest.mark.unit

Details = temporalio.activity.ActivityCancellationDetails
Cancelled = temporalio.exceptions.CancelledError
AppError = temporalio.exceptions.ApplicationError


def test_a_returned_value_is_completed():
    verdict = decide(None)
    assert (verdict.report, verdict.label, verdict.error) == (Report.COMPLETED, "completed", None)


def test_complete_async_reports_nothing_even_after_a_heartbeat_error():
    verdict = decide(runner.context.CompleteAsyncError(), heartbeat_error=ValueError("x"))
    assert (verdict.report, verdict.label, verdict.log) == (
        Report.NOTHING,
        "complete_async",
        LogLine.COMPLETE_ASYNC,
    )


def test_a_heartbeat_that_did_not_convert_fails_the_activity_with_its_error():
    bad = TypeError("not serialisable")
    verdict = decide(Cancelled("Cancelled"), cancel=Details(), heartbeat_error=bad)
    assert (verdict.report, verdict.error, verdict.log) == (
        Report.FAILED,
        bad,
        LogLine.HEARTBEAT_FAILED,
    )


def test_an_error_without_a_cancel_is_the_activity_failing():
    error = AppError("boom")
    verdict = decide(error)
    assert (verdict.report, verdict.label, verdict.error, verdict.log) == (
        Report.FAILED,
        "failed",
        error,
        LogLine.ACTIVITY_FAILED,
    )


def test_a_crashed_child_without_a_cancel_is_counted_as_crashed():
    verdict = decide(AppError("died", type="ChildProcessDied"), child_end="crashed")
    assert (verdict.report, verdict.label) == (Report.FAILED, "crashed")


def test_an_error_other_than_cancelled_after_a_cancel_is_still_a_failure():
    # The activity caught the cancel and raised something else: stock fails it.
    error = AppError("cleanup failed")
    verdict = decide(error, cancel=Details(cancel_requested=True))
    assert (verdict.report, verdict.error) == (Report.FAILED, error)


@pytest.mark.parametrize("error", [Cancelled("Cancelled"), asyncio.CancelledError()])
def test_a_requested_cancel_is_reported_cancelled_with_a_cancelled_error(error):
    verdict = decide(error, cancel=Details(cancel_requested=True))
    assert (verdict.report, verdict.label, verdict.log) == (
        Report.CANCELLED,
        "cancelled",
        LogLine.CANCELLED,
    )
    assert isinstance(verdict.error, Cancelled)


def test_a_child_killed_for_a_cancel_is_cancelled_but_counted_as_killed():
    verdict = decide(AppError("killed"), cancel=Details(cancel_requested=True), child_end="killed")
    assert (verdict.report, verdict.label) == (Report.CANCELLED, "killed")
    assert isinstance(verdict.error, Cancelled)


@pytest.mark.parametrize(
    ("details", "label"),
    [
        (Details(not_found=True, timed_out=True), "timed_out"),
        (Details(not_found=True), "not_found"),
    ],
)
def test_an_attempt_the_server_gave_up_on_reports_nothing(details, label):
    verdict = decide(Cancelled("Cancelled"), cancel=details)
    assert (verdict.report, verdict.label, verdict.error) == (Report.NOTHING, label, None)


@pytest.mark.parametrize(
    ("details", "error_type", "log"),
    [
        (Details(paused=True), "ActivityPause", LogLine.PAUSED),
        (Details(reset=True), "ActivityReset", LogLine.RESET),
        (Details(worker_shutdown=True), "WorkerShutdown", LogLine.NONE),
    ],
)
def test_pause_reset_and_shutdown_are_reported_as_failures(details, error_type, log):
    verdict = decide(Cancelled("Cancelled"), cancel=details)
    assert (verdict.report, verdict.label, verdict.log) == (Report.FAILED, "cancelled", log)
    assert isinstance(verdict.error, AppError) and verdict.error.type == error_type


def test_a_shutdown_failure_stays_retryable():
    _, error = cancel_outcome(Details(worker_shutdown=True))
    assert isinstance(error, AppError) and not error.non_retryable


def test_a_cancel_with_no_reason_set_fails_as_cancelled():
    report, error = cancel_outcome(Details())
    assert report is Report.FAILED and str(error) == "Activity was cancelled"


def test_the_blob_size_limit_applies_only_when_enabled_and_exceeded():
    assert oversize_error(10, None, False) is None
    assert oversize_error(10, 10, False) is None
    assert oversize_error(11, 10, True) is None
    error = oversize_error(11, 10, False)
    assert error is not None and error.type == "PayloadTooLarge" and "11 bytes" in str(error)


def test_not_registered_names_the_registered_activities_sorted():
    error = not_registered("nope", "wf-1", ["b", "a"])
    assert error.type == "NotFoundError"
    assert "nope" in str(error) and "wf-1" in str(error) and "a, b" in str(error)
    assert "(none)" in str(not_registered("nope", "wf-1", []))


def test_benign_is_read_from_the_failure_category():
    benign = Failure()
    benign.application_failure_info.category = (
        ApplicationErrorCategory.APPLICATION_ERROR_CATEGORY_BENIGN
    )
    assert is_benign(benign)
    assert not is_benign(Failure())
    assert not is_benign(None)
