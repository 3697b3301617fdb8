"""One task in the child without a process: runner._task's decisions and TaskRun."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest
import temporalio.activity
import temporalio.api.common.v1
import temporalio.converter
import temporalio.exceptions
from temporalio.api.failure.v1 import Failure
from temporalio.testing import ActivityEnvironment

from runner import ActivitySpec, RunTask, task_from_wire, task_to_wire
from runner._shipper import Shipper
from runner._task import TaskRun, error_outcome, take_early_cancel
from runner.context import narrows_per_task, serialization_context

pytestmark = pytest.mark.unit

DC = temporalio.converter.DataConverter.default


@dataclasses.dataclass
class Point:
    x: int
    y: int


def _encoded(*values: Any) -> bytes:
    payloads = DC.payload_converter.to_payloads(list(values))
    return temporalio.api.common.v1.Payloads(payloads=payloads).SerializeToString()


def _decoded(data: bytes) -> list[Any]:
    return DC.payload_converter.from_payloads(
        list(temporalio.api.common.v1.Payloads.FromString(data).payloads)
    )


def _run(fn: Any, *args: Any, arg_types: list[Any] | None = None, **task: Any) -> TaskRun:
    info = dataclasses.replace(ActivityEnvironment.default_info(), activity_type="act")
    packed = task_from_wire(
        task_to_wire(
            RunTask(
                task_id=7,
                activity_type="act",
                args=args,
                info=info,
                heartbeat_interval=30.0,
                **task,
            )
        )
    )
    spec = ActivitySpec(fn=fn, no_thread_cancel_exception=False, arg_types=arg_types)
    return TaskRun(packed, spec, DC, False, Shipper(None, lambda beats, err: None))


def test_a_cancelled_error_is_a_cancellation_only_when_one_was_asked_for() -> None:
    cancelled = temporalio.exceptions.CancelledError("Cancelled")
    assert error_outcome(cancelled, cancel_requested=True) == "cancelled"
    assert error_outcome(cancelled, cancel_requested=False) == "failed"
    assert error_outcome(ValueError("no"), cancel_requested=True) == "failed"


def test_an_early_cancel_is_taken_for_its_task_and_older_ones_are_dropped() -> None:
    mine, kept = take_early_cancel({3: "old", 7: "mine", 9: "later"}, 7)
    assert mine == "mine"
    assert kept == {9: "later"}
    assert take_early_cancel({9: "later"}, 7) == (None, {9: "later"})


def test_the_info_is_unpacked_once_and_only_when_asked() -> None:
    run = _run(lambda: None)
    assert run._unpacked == {}
    first = run.info()
    assert run.info() is first
    assert first.activity_type == "act"


def test_encoded_arguments_are_decoded_with_the_activity_type_hints() -> None:
    seen: list[Any] = []
    run = _run(seen.append, encoded_args=_encoded({"x": 1, "y": 2}), arg_types=[Point])
    run.call()
    assert seen == [Point(1, 2)]


def test_type_hints_of_another_arity_are_ignored_not_misapplied() -> None:
    seen: list[Any] = []
    run = _run(lambda *a: seen.extend(a), encoded_args=_encoded({"x": 1}, 2), arg_types=[Point])
    run.call()
    assert seen == [{"x": 1}, 2]


def test_arguments_that_do_not_decode_fail_with_the_parents_message() -> None:
    run = _run(lambda p: p, encoded_args=_encoded("text"), arg_types=[Point])
    with pytest.raises(temporalio.exceptions.ApplicationError, match="Failed decoding arguments"):
        run.call()


def test_earlier_heartbeat_details_decoded_in_the_child_reach_the_info() -> None:
    run = _run(lambda: None, encoded_heartbeat=_encoded("step", 3))
    assert run.info().heartbeat_details == []  # asked before call(): no details yet
    run.call()
    assert list(run.info().heartbeat_details) == ["step", 3]


def test_a_result_is_encoded_in_the_child_when_the_parent_asks() -> None:
    run = _run(lambda: None, encode_result=True)
    done = run.done("completed", {"answer": 42}, None, 0.5)
    assert done.outcome == "completed"
    assert done.value is None
    assert done.result is not None and _decoded(done.result) == [{"answer": 42}]
    assert done.cpu_seconds == 0.5


def test_a_result_the_converter_refuses_fails_the_task_and_says_why() -> None:
    run = _run(lambda: None, encode_result=True)
    done = run.done("completed", object(), None, 0.0)
    assert done.outcome == "failed"
    assert done.result is None
    failure = Failure.FromString(done.failure or b"")
    assert failure.application_failure_info.type == "ResultConversionError"
    assert "could not be converted to a payload" in failure.message


def test_a_plain_result_is_left_for_the_parent_when_it_does_not_ask() -> None:
    done = _run(lambda: None).done("completed", {"a": 1}, None, 0.0)
    assert (done.value, done.result) == ({"a": 1}, None)


def test_the_last_heartbeat_rides_on_the_outcome() -> None:
    run = _run(lambda: None)
    run.beats.latest = ("at", 5)
    done = run.done("failed", None, b"x", 0.0)
    assert done.last_heartbeat is not None and _decoded(done.last_heartbeat) == ["at", 5]
    assert done.heartbeat_error is None


def test_heartbeat_details_that_do_not_convert_become_a_heartbeat_error() -> None:
    run = _run(lambda: None)
    run.beats.latest = (threading.Lock(),)
    done = run.done("completed", None, None, 0.0)
    assert done.last_heartbeat is None
    failure = Failure.FromString(done.heartbeat_error or b"")
    assert failure.application_failure_info.type == "HeartbeatConversionError"


_NARROWED: list[Any] = []


class _Contextual(
    temporalio.converter.DefaultPayloadConverter, temporalio.converter.WithSerializationContext
):
    def __init__(self, context: Any = None) -> None:
        super().__init__()
        self.context = context

    def with_context(self, context: Any) -> _Contextual:
        _NARROWED.append(context)
        return _Contextual(context)


def test_only_a_converter_that_uses_the_context_is_narrowed_per_task() -> None:
    assert not narrows_per_task(DC)
    contextual = dataclasses.replace(DC, payload_converter_class=_Contextual)
    assert narrows_per_task(contextual)


def test_a_contextual_converter_sees_the_tasks_activity() -> None:
    contextual = dataclasses.replace(DC, payload_converter_class=_Contextual)
    _NARROWED.clear()
    info = dataclasses.replace(ActivityEnvironment.default_info(), activity_type="act")
    packed = task_from_wire(
        task_to_wire(
            RunTask(task_id=1, activity_type="act", args=(), info=info, heartbeat_interval=1.0)
        )
    )
    spec = ActivitySpec(fn=lambda: None, no_thread_cancel_exception=False)
    run = TaskRun(packed, spec, contextual, True, Shipper(None, lambda beats, err: None))
    assert run.converter is not contextual
    context = _NARROWED[-1]
    assert context == serialization_context(info)
    assert context.activity_type == "act" and context.activity_id == info.activity_id


def test_the_serialization_context_carries_the_activitys_fields() -> None:
    info: temporalio.activity.Info = dataclasses.replace(
        ActivityEnvironment.default_info(), is_local=True, workflow_type="Flow"
    )
    context = serialization_context(info)
    assert (context.namespace, context.activity_task_queue) == (info.namespace, info.task_queue)
    assert (context.workflow_id, context.workflow_type, context.is_local) == (
        info.workflow_id,
        "Flow",
        True,
    )
