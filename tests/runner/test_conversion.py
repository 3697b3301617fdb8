"""The child's payload conversion and failure building (runner._conversion), no process."""

from __future__ import annotations

import pytest
import temporalio.converter
import temporalio.exceptions
from temporalio.api.failure.v1 import Failure

from runner import TaskDone
from runner._conversion import (
    argument_transfer_error,
    failure_bytes,
    unpicklable_result,
)
from tests.converters import BROKEN_FAILURES

pytestmark = pytest.mark.unit

DC = temporalio.converter.DataConverter.default


def test_failure_is_built_in_the_child_with_a_stack_trace() -> None:
    try:
        raise ValueError("nope")
    except ValueError as err:
        data = failure_bytes(DC, err)
    failure = Failure.FromString(data)
    assert failure.message == "nope"
    assert failure.application_failure_info.type == "ValueError"
    assert "test_failure_is_built_in_the_child" in failure.stack_trace


def test_a_failure_converter_that_raises_still_gives_a_failure_with_the_traceback() -> None:
    dc = BROKEN_FAILURES
    try:
        raise KeyError("lost")
    except KeyError as err:
        data = failure_bytes(dc, err)
    failure = Failure.FromString(data)
    assert failure.message == "Failed building exception result: converter bug"
    assert "KeyError" in failure.stack_trace
    assert failure.HasField("application_failure_info")


def test_an_argument_transfer_error_names_the_fix() -> None:
    err = argument_transfer_error(AttributeError("no attribute 'Local'"))
    assert err.type == "ArgumentTransferError"
    assert "importable from a module" in str(err)


def test_an_unpicklable_result_fails_the_task_and_keeps_what_was_measured() -> None:
    done = TaskDone(
        task_id=4, outcome="completed", value=object(), last_heartbeat=b"hb", cpu_seconds=1.5
    )
    failed = unpicklable_result(DC, done, TypeError("cannot pickle"))
    assert (failed.task_id, failed.outcome, failed.value) == (4, "failed", None)
    assert (failed.last_heartbeat, failed.cpu_seconds) == (b"hb", 1.5)
    failure = Failure.FromString(failed.failure or b"")
    assert failure.application_failure_info.type == "ResultTransferError"
    assert "return value could not be pickled" in failure.message
