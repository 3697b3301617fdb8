"""The Dispatcher against fakes (pool.testing.fakes): no server, no child process.

One polled task in, exactly one outcome out: what is reported for a completed, a
raising, a cancelled (before and while running), a shut-down and a timed-out task,
how the result is encoded, and that the slot and the child reservation always come
back. The same paths against the real server and children are in the integration
tests (test_worker.py, test_misbehaving.py, test_heartbeats.py, test_payload_path.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import grpc
import pytest
import temporalio.activity
import temporalio.converter
import temporalio.exceptions
import temporalio.worker
from temporalio.api.common.v1 import Payloads
from temporalio.api.enums.v1 import ActivityTaskFailedCause
from temporalio.api.workflowservice.v1 import PollActivityTaskQueueResponse

from pool._errors import ChildProcessDied
from pool.activity.dispatch import Dispatcher, DispatchSettings, State
from pool.activity.wire import Spliced
from pool.testing.fakes import (
    FakeActivityService,
    FakeProcessPool,
    FakeSharedState,
    encoded_failure,
)
from runner import RunTask, TaskDone
from runner.report import Reported
from tests.pool._codec import ReversingCodec

pytestmark = pytest.mark.unit

Details = temporalio.activity.ActivityCancellationDetails
DEFAULT = temporalio.converter.DataConverter.default
_tokens = itertools.count(1)


_events: dict[str, asyncio.Event] = {}  # what each waits() call waits for, by name
_waited: list[str] = []  # the waits() calls that started


@temporalio.activity.defn
def crunch(n: int) -> int:
    return n * 2


@temporalio.activity.defn
async def waits(event_name: str) -> str:
    _waited.append(event_name)
    await _events[event_name].wait()
    return event_name


def _settings(blob_size_limit: int | None = None) -> DispatchSettings:
    return DispatchSettings(
        task_queue="tq",
        default_heartbeat_throttle=timedelta(seconds=30),
        max_heartbeat_throttle=timedelta(seconds=60),
        local_timeout_buffer=0.0,
        blob_size_limit=blob_size_limit,
        disable_payload_error_limit=False,
    )


class Harness:
    """A Dispatcher wired to fakes, and what it released."""

    def __init__(
        self,
        pool: FakeProcessPool | None = None,
        *,
        threads: concurrent.futures.ThreadPoolExecutor | None = None,
        dc: temporalio.converter.DataConverter = DEFAULT,
        blob_size_limit: int | None = None,
        type_limits: dict[str, int] | None = None,
        children_convert: Sequence[str] = (),
        child_reports: int | None = None,
        interceptors: Sequence[temporalio.worker.Interceptor] = (),
    ) -> None:
        self.service = FakeActivityService()
        self.pool = pool if pool is not None else FakeProcessPool()
        self.shared = FakeSharedState()
        self.released: list[bytes] = []
        self.inputs: list[memoryview | None] = []  # what start() handed over
        defns = [temporalio.activity._Definition.must_from_callable(f) for f in (crunch, waits)]
        self.dispatcher = Dispatcher(
            service=self.service,  # type: ignore[arg-type]
            settings=_settings(blob_size_limit),
            activities={d.name: d for d in defns},
            dynamic=None,
            data_converter=dc,
            client=None,  # type: ignore[arg-type]
            pool=self.pool,
            thread_executor=threads,
            shared_state=self.shared,
            release_slot=self.released.append,
            metric_meter=None,
            type_limits=type_limits,
            children_convert=children_convert,
            child_reports=child_reports,
            interceptors=interceptors,
        )

    def start(
        self,
        activity: str,
        *args: Any,
        reserved: bool = False,
        as_sent: bool = False,
        **timeouts: float,
    ) -> bytes:
        """Poll response ``activity(*args)``; ``as_sent``: with its input's bytes as
        the poller hands them over (service.Polled)."""
        resp = PollActivityTaskQueueResponse(
            task_token=b"token-%d" % next(_tokens),
            activity_id="a1",
            attempt=1,
        )
        resp.activity_type.name = activity
        resp.workflow_type.name = "Wf"
        resp.workflow_execution.workflow_id = "wf-1"
        resp.workflow_execution.run_id = "run-1"
        resp.input.payloads.extend(DEFAULT.payload_converter.to_payloads(args))
        for name, seconds in timeouts.items():
            getattr(resp, name).FromTimedelta(timedelta(seconds=seconds))
        input_bytes = memoryview(resp.input.SerializeToString()) if as_sent else None
        self.inputs.append(input_bytes)
        self.dispatcher.start(resp, input_bytes, self.pool.promise() if reserved else None)
        return resp.task_token

    async def idle(self) -> None:
        assert await self.dispatcher.wait_idle(timeout=10), "a task was never reported"

    def only_report(self) -> tuple[str, Any]:
        reports = [(n, r) for n, r in self.service.calls if n.startswith("Respond")]
        assert len(reports) == 1, reports
        return reports[0]


def _value(payloads: Payloads) -> Any:
    [value] = DEFAULT.payload_converter.from_payloads(list(payloads.payloads))
    return value


def _child(run: Callable[[RunTask], Any]) -> Callable[[RunTask], TaskDone]:
    """A fake child that runs the activity on the task's args and answers as a child does."""

    def respond(task: RunTask) -> TaskDone:
        try:
            value = run(task)
        except temporalio.exceptions.FailureError as err:
            return TaskDone(task_id=task.task_id, outcome="failed", failure=encoded_failure(err))
        return TaskDone(task_id=task.task_id, outcome="completed", value=value)

    return respond


async def test_a_completed_task_reports_its_result_and_releases_its_slot():
    h = Harness(FakeProcessPool(_child(lambda task: crunch(*task.args))))
    token = h.start("crunch", 21)
    await h.idle()
    name, request = h.only_report()
    assert name == "RespondActivityTaskCompleted"
    assert request.task_token == token and request.namespace == "default"
    assert _value(request.result) == 42
    assert h.released == [token]
    assert h.dispatcher.stats[("crunch", "completed")] == 1
    assert h.dispatcher.outstanding == 0


async def test_the_child_gets_the_info_and_the_arguments():
    h = Harness(FakeProcessPool(_child(lambda task: crunch(*task.args))))
    h.start("crunch", 5, start_to_close_timeout=30)
    await h.idle()
    [task] = h.pool.ran
    assert task.args == (5,) and task.activity_type == "crunch"
    assert task.info.workflow_id == "wf-1" and task.info.task_queue == "tq"
    assert task.info.start_to_close_timeout == timedelta(seconds=30)


async def test_a_raising_activity_reports_its_failure():
    def boom(task: RunTask) -> Any:
        raise temporalio.exceptions.ApplicationError("boom", type="Boom")

    h = Harness(FakeProcessPool(_child(boom)))
    h.start("crunch", 1)
    await h.idle()
    name, request = h.only_report()
    assert name == "RespondActivityTaskFailed"
    assert request.failure.message == "boom"
    assert request.failure.application_failure_info.type == "Boom"
    assert request.cause == (
        ActivityTaskFailedCause.ACTIVITY_TASK_FAILED_CAUSE_ACTIVITY_WORKER_UNHANDLED_FAILURE
    )


async def test_a_child_that_died_fails_the_task_retryably_counted_as_crashed():
    def dies(task: RunTask) -> TaskDone:
        raise ChildProcessDied(pid=4242, exitcode=-9, activity_type="crunch")

    h = Harness(FakeProcessPool(dies))
    h.start("crunch", 1)
    await h.idle()
    name, request = h.only_report()
    assert name == "RespondActivityTaskFailed"
    info = request.failure.application_failure_info
    assert info.type == "ChildProcessDied" and not info.non_retryable
    assert h.dispatcher.stats[("crunch", "crashed")] == 1


async def test_an_unregistered_activity_fails_with_not_found_and_gives_its_child_back():
    h = Harness()
    h.start("missing", reserved=True)
    await h.idle()
    name, request = h.only_report()
    assert name == "RespondActivityTaskFailed"
    assert request.failure.application_failure_info.type == "NotFoundError"
    assert "crunch, waits" in request.failure.message
    assert h.pool.reservations_released == 1 and h.pool.ran == []


async def test_the_reservation_goes_to_the_child_or_back_to_the_pool():
    h = Harness(FakeProcessPool(_child(lambda task: 0)))
    h.start("crunch", 1, reserved=True)  # a child activity: run() consumes it
    _events["r"] = asyncio.Event()
    _events["r"].set()
    h.start("waits", "r", reserved=True)  # an async one: given back
    await h.idle()
    assert [r is not None for r in h.pool.reservations] == [True]
    assert (h.pool.reservations_used, h.pool.reservations_released) == (1, 1)


async def test_a_task_waiting_for_its_types_limit_gives_its_child_back_meanwhile():
    h = Harness(type_limits={"crunch": 1})  # the fake pool holds each task
    h.start("crunch", 1, reserved=True)
    await asyncio.wait_for(h.pool.started.wait(), 10)
    second = h.start("crunch", 2, reserved=True)

    async def second_waits_for_the_slot() -> None:
        while [t.state for t in h.dispatcher.running() if t.token == second] != [State.WAITING]:
            await asyncio.sleep(0)  # yield to the loop until the task reaches that state

    await asyncio.wait_for(second_waits_for_the_slot(), 10)
    assert (h.pool.reservations_used, h.pool.reservations_released) == (1, 1)
    h.pool.started.clear()
    first = h.pool.ran[0].task_id
    h.pool.finish(first, TaskDone(task_id=first, outcome="completed", value=1))
    await asyncio.wait_for(h.pool.started.wait(), 10)
    # It ran on a reservation already given back: the pool counted nothing twice.
    assert [r is not None and r.held for r in h.pool.reservations] == [False, False]
    assert (h.pool.reservations_used, h.pool.reservations_released) == (1, 1)
    again = h.pool.ran[1].task_id
    h.pool.finish(again, TaskDone(task_id=again, outcome="completed", value=2))
    await h.idle()
    assert sorted(h.service.reports()) == ["RespondActivityTaskCompleted"] * 2


async def test_a_cancel_while_running_reaches_the_child_and_reports_cancelled():
    h = Harness()  # the fake pool holds the task until it is cancelled
    token = h.start("crunch", 1)
    await asyncio.wait_for(h.pool.started.wait(), 10)
    h.dispatcher.cancel(token, Details(cancel_requested=True), "the test asked")
    h.dispatcher.cancel(token, Details(paused=True), "a second reason")  # ignored
    await h.idle()
    assert [reason for _, _, reason in h.pool.cancels] == ["the test asked"]
    name, _ = h.only_report()
    assert name == "RespondActivityTaskCanceled"
    assert h.dispatcher.stats[("crunch", "cancelled")] == 1


async def test_a_child_killed_after_its_cancel_grace_reports_cancelled_counted_killed():
    h = Harness(FakeProcessPool(kill_on_cancel=True))
    token = h.start("crunch", 1)
    await asyncio.wait_for(h.pool.started.wait(), 10)
    h.dispatcher.cancel(token, Details(cancel_requested=True), "the test asked")
    await h.idle()
    assert h.only_report()[0] == "RespondActivityTaskCanceled"
    assert h.dispatcher.stats[("crunch", "killed")] == 1


async def test_a_cancel_before_the_activity_starts_means_it_never_runs():
    _waited.clear()
    _events["first"], _events["second"] = asyncio.Event(), asyncio.Event()
    h = Harness(type_limits={"waits": 1})
    h.start("waits", "first")
    second = h.start("waits", "second")

    async def second_waits_for_the_slot() -> None:
        while [t.state for t in h.dispatcher.running() if t.token == second] != [State.WAITING]:
            await asyncio.sleep(0)  # yield to the loop until the task reaches that state

    await asyncio.wait_for(second_waits_for_the_slot(), 10)
    h.dispatcher.cancel(second, Details(cancel_requested=True), "before it started")
    _events["first"].set()
    await h.idle()
    assert _waited == ["first"]
    assert sorted(h.service.reports()) == [
        "RespondActivityTaskCanceled",
        "RespondActivityTaskCompleted",
    ]


async def test_shutdown_cancels_what_still_runs_as_a_retryable_worker_shutdown_failure():
    h = Harness()
    h.start("crunch", 1)
    await asyncio.wait_for(h.pool.started.wait(), 10)
    h.dispatcher.begin_shutdown()
    assert h.pool.shutdown_broadcast
    assert not await h.dispatcher.wait_idle(timeout=0)
    h.dispatcher.cancel_all_for_shutdown()
    await h.idle()
    name, request = h.only_report()
    assert name == "RespondActivityTaskFailed"
    info = request.failure.application_failure_info
    assert info.type == "WorkerShutdown" and not info.non_retryable


async def test_a_task_past_its_start_to_close_timeout_is_cancelled_and_not_reported():
    h = Harness()
    h.start("crunch", 1, start_to_close_timeout=0.05)
    await h.idle()
    [(_, details, reason)] = h.pool.cancels
    assert details.timed_out and "start-to-close timeout" in reason
    assert h.service.reports() == []
    assert h.dispatcher.stats[("crunch", "timed_out")] == 1


async def test_a_result_the_child_encoded_goes_out_as_its_bytes_without_a_codec():
    result = Payloads(payloads=DEFAULT.payload_converter.to_payloads(["r" * 70_000]))
    # As a large result arrives from a real child: a view of the frame it came in.
    encoded = memoryview(bytearray(result.SerializeToString())).toreadonly()

    def encodes(task: RunTask) -> TaskDone:
        return TaskDone(task_id=task.task_id, outcome="completed", result=encoded)

    h = Harness(FakeProcessPool(encodes), children_convert=["crunch"])
    token = h.start("crunch", 4)
    await h.idle()
    [sent] = h.service.sent
    assert isinstance(sent, Spliced) and sent.data is encoded  # never parsed here
    name, request = h.only_report()
    assert name == "RespondActivityTaskCompleted" and request.task_token == token
    assert request.result == result and request.identity == h.service.identity


@pytest.mark.parametrize("codec", [None, ReversingCodec()], ids=["no-codec", "codec"])
async def test_a_child_gets_the_arguments_bytes_as_the_poll_brought_them(codec):
    got: list[Any] = []

    def encodes(task: RunTask) -> TaskDone:
        got.append(task.encoded_args)
        return TaskDone(task_id=task.task_id, outcome="completed", value=1)

    dc = temporalio.converter.DataConverter(payload_codec=codec)
    h = Harness(FakeProcessPool(encodes), dc=dc, children_convert=["crunch"])
    h.start("crunch", 4, as_sent=True)
    await h.idle()
    [encoded] = got
    if codec is None:
        assert encoded is h.inputs[0]  # not serialised again
    else:  # the codec made new payloads: those are what the child decodes
        assert encoded is not h.inputs[0]
        assert Payloads.FromString(bytes(encoded)).payloads[0].metadata["encoding"] == b"json/plain"


def _reports(code: str | None) -> Callable[[RunTask], TaskDone]:
    """A child that sends its result itself when allowed (the server answering
    ``code``; None: it could not send), else hands it back."""

    def respond(task: RunTask) -> TaskDone:
        result = Payloads(payloads=DEFAULT.payload_converter.to_payloads([7])).SerializeToString()
        if task.report and code is not None:
            return TaskDone(task.task_id, "completed", reported=Reported(code, 0.25))
        return TaskDone(task.task_id, "completed", result=result if task.encode_result else None)

    return respond


@pytest.mark.parametrize("code", ["OK", "NOT_FOUND"])
async def test_a_result_the_child_sent_itself_is_not_sent_again_and_its_call_is_counted(code):
    h = Harness(FakeProcessPool(_reports(code)), children_convert=["crunch"], child_reports=0)
    h.start("crunch", 4)
    await h.idle()
    assert [task.report for task in h.pool.ran] == [True]
    assert h.service.reports() == []  # the server has it from the child
    assert h.service.ended_calls == [("RespondActivityTaskCompleted", grpc.StatusCode[code], 0.25)]
    assert h.dispatcher.sent_by_children == 1
    assert h.dispatcher.stats[("crunch", "completed")] == 1
    assert len(h.released) == 1


async def test_a_result_the_child_could_not_send_is_sent_by_the_parent():
    h = Harness(FakeProcessPool(_reports(None)), children_convert=["crunch"], child_reports=0)
    h.start("crunch", 4)
    await h.idle()
    name, request = h.only_report()
    assert name == "RespondActivityTaskCompleted" and _value(request.result) == 7
    assert h.dispatcher.sent_by_children == 0 and h.service.ended_calls == []


class _PassesThrough(temporalio.worker.Interceptor):
    pass  # the base class's intercept_activity: the chain has one more step


@pytest.mark.parametrize(
    "case", ["off", "codec", "client-replaced", "interceptor", "parent-converts"]
)
async def test_a_child_is_let_send_only_what_nothing_in_the_parent_must_see(case):
    codec = ReversingCodec() if case == "codec" else None
    h = Harness(
        FakeProcessPool(_reports("OK")),
        dc=temporalio.converter.DataConverter(payload_codec=codec),
        children_convert=[] if case == "parent-converts" else ["crunch"],
        child_reports=None if case == "off" else 0,
        interceptors=[_PassesThrough()] if case == "interceptor" else [],
    )
    if case == "client-replaced":
        h.service.generation = 1  # the children's settings are for the old client
    h.start("crunch", 4)
    await h.idle()
    assert [task.report for task in h.pool.ran] == [False]
    assert h.service.reports() == ["RespondActivityTaskCompleted"]
    assert h.dispatcher.sent_by_children == 0


async def test_a_result_the_child_encoded_gets_the_codec_in_the_parent():
    dc = temporalio.converter.DataConverter(payload_codec=ReversingCodec())

    def encodes(task: RunTask) -> TaskDone:
        assert task.encode_result and task.encoded_args is not None
        [arg] = DEFAULT.payload_converter.from_payloads(
            list(Payloads.FromString(task.encoded_args).payloads), [int]
        )
        result = Payloads(payloads=DEFAULT.payload_converter.to_payloads([crunch(arg)]))
        return TaskDone(
            task_id=task.task_id, outcome="completed", result=result.SerializeToString()
        )

    h = Harness(FakeProcessPool(encodes), dc=dc, children_convert=["crunch"])
    h.start("crunch", 4)
    await h.idle()
    name, request = h.only_report()
    assert name == "RespondActivityTaskCompleted"
    [payload] = request.result.payloads
    assert payload.metadata["encoding"] == b"binary/reversed"
    assert _value(Payloads(payloads=await ReversingCodec().decode([payload]))) == 8


async def test_a_result_that_does_not_convert_fails_the_task_naming_the_problem():
    h = Harness(FakeProcessPool(_child(lambda task: object())))
    h.start("crunch", 1)
    await h.idle()
    name, request = h.only_report()
    assert name == "RespondActivityTaskFailed"
    assert request.failure.application_failure_info.type == "ResultConversionError"
    assert "could not be converted to a payload" in request.failure.message


async def test_a_result_over_the_blob_size_limit_fails_with_payloads_too_large():
    h = Harness(FakeProcessPool(_child(lambda task: "x" * 2000)), blob_size_limit=1000)
    h.start("crunch", 1)
    await h.idle()
    name, request = h.only_report()
    assert name == "RespondActivityTaskFailed"
    assert request.cause == ActivityTaskFailedCause.ACTIVITY_TASK_FAILED_CAUSE_PAYLOADS_TOO_LARGE
    assert request.failure.application_failure_info.type == "PayloadTooLarge"


async def test_a_child_heartbeat_is_recorded_and_its_newest_details_go_with_the_failure():
    h = Harness()
    token = h.start("crunch", 1)
    await asyncio.wait_for(h.pool.started.wait(), 10)
    details = Payloads(payloads=DEFAULT.payload_converter.to_payloads(["step 3"]))
    h.shared.heartbeaters[token](details.SerializeToString())  # the child's shipper
    [task] = h.pool.ran

    async def recorded() -> None:
        while not h.service.requests("RecordActivityTaskHeartbeat"):
            await asyncio.sleep(0)  # yield to the loop until the heartbeat RPC is made

    await asyncio.wait_for(recorded(), 10)
    failure = encoded_failure(temporalio.exceptions.ApplicationError("late"))
    h.pool.finish(task.task_id, TaskDone(task_id=task.task_id, outcome="failed", failure=failure))
    await h.idle()
    [heartbeat] = h.service.requests("RecordActivityTaskHeartbeat")
    assert _value(heartbeat.details) == "step 3"
    name, request = h.only_report()
    assert name == "RespondActivityTaskFailed"
    assert _value(request.last_heartbeat_details) == "step 3"
    assert h.shared.unregistered == [token]


async def test_an_async_activity_runs_on_the_loop_and_completes():
    _events["now"] = asyncio.Event()
    _events["now"].set()
    h = Harness()
    h.start("waits", "now")
    await h.idle()
    name, request = h.only_report()
    assert name == "RespondActivityTaskCompleted" and _value(request.result) == "now"
    assert h.pool.ran == []


async def test_a_sync_activity_runs_in_the_thread_pool_when_one_is_given():
    with concurrent.futures.ThreadPoolExecutor(1) as threads:
        h = Harness(threads=threads)
        h.start("crunch", 3)
        await h.idle()
    name, request = h.only_report()
    assert name == "RespondActivityTaskCompleted" and _value(request.result) == 6
    assert h.pool.ran == []


async def test_a_report_the_server_refuses_still_releases_the_slot():
    h = Harness(FakeProcessPool(_child(lambda task: 1)))
    h.service.errors["RespondActivityTaskCompleted"] = grpc.aio.AioRpcError(
        grpc.StatusCode.NOT_FOUND, None, None, details="gone"
    )
    token = h.start("crunch", 1)
    await h.idle()
    assert h.service.reports() == ["RespondActivityTaskCompleted"]
    assert h.released == [token]
    assert h.dispatcher.stats[("crunch", "completed")] == 1
