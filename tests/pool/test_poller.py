"""The poller's own rules with a stand-in for the gRPC service (pure logic; the real
server is exercised by every worker test)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from temporalio.api.workflowservice.v1 import PollActivityTaskQueueResponse

import pool
from pool.activity.poller import Poller, PollSettings
from pool.activity.service import Polled
from pool.activity.slots import Slots
from tests.helpers import async_assert_eventually, workflow_id
from tests.pool import _activities as A


class _Call:
    """A grpc.aio-like call: awaitable, cancel() works only before it completes. It
    answers what the service's poll answers: the response, as ``Polled``."""

    def __init__(self) -> None:
        self.future: asyncio.Future[PollActivityTaskQueueResponse] = (
            asyncio.get_running_loop().create_future()
        )

    def __await__(self):
        response = yield from self.future.__await__()
        return Polled(response, None)

    def cancel(self) -> bool:
        return self.future.cancel()


class _Service:
    namespace = "default"
    identity = "test"

    def __init__(self) -> None:
        self.calls: list[_Call] = []

    def call_once(self, name: str, request: object, timeout: float) -> _Call:
        call = _Call()
        self.calls.append(call)
        return call


def _poller(service: _Service, dispatched: list, slots: Slots) -> Poller:
    return Poller(
        service=service,  # type: ignore[arg-type]
        settings=PollSettings(
            task_queue="q",
            pollers=1,
            max_task_queue_activities_per_second=None,
            build_id=None,
            use_worker_versioning=False,
        ),
        slots=slots,
        limiter=None,
        pool=None,
        dispatch=lambda response, input_bytes, reserved: dispatched.append(response),
    )


@pytest.mark.unit
async def test_a_task_answered_while_stopping_is_dispatched_not_dropped():
    service, dispatched, slots = _Service(), [], Slots(1)
    poller = _poller(service, dispatched, slots)
    run = asyncio.create_task(poller.run())
    await async_assert_eventually(lambda: len(service.calls) == 1)
    # The server answers with a task, and the worker stops before the loop resumes.
    service.calls[0].future.set_result(PollActivityTaskQueueResponse(task_token=b"t1"))
    poller.stop()
    with contextlib.suppress(asyncio.CancelledError):
        await run
    assert [r.task_token for r in dispatched] == [b"t1"]
    assert slots.used == 1  # the slot went with the task to the dispatcher


@pytest.mark.unit
async def test_stop_cancels_a_pending_poll_and_returns_its_slot():
    service, dispatched, slots = _Service(), [], Slots(1)
    poller = _poller(service, dispatched, slots)
    run = asyncio.create_task(poller.run())
    await async_assert_eventually(lambda: len(service.calls) == 1)
    poller.stop()
    with contextlib.suppress(asyncio.CancelledError):
        await run
    assert service.calls[0].future.cancelled()
    assert dispatched == [] and slots.used == 0


@pytest.mark.unit
async def test_empty_polls_poll_again_and_only_with_a_free_slot():
    service, dispatched, slots = _Service(), [], Slots(1)
    poller = _poller(service, dispatched, slots)
    run = asyncio.create_task(poller.run())
    await async_assert_eventually(lambda: len(service.calls) == 1)
    service.calls[0].future.set_result(PollActivityTaskQueueResponse())  # long poll expired
    await async_assert_eventually(lambda: len(service.calls) == 2)
    service.calls[1].future.set_result(PollActivityTaskQueueResponse(task_token=b"t"))
    await async_assert_eventually(lambda: len(dispatched) == 1)
    # The only slot is now the task's: no third poll until it is released.
    assert len(service.calls) == 2 and slots.used == 1
    slots.release()
    await async_assert_eventually(lambda: len(service.calls) == 3)
    poller.stop()
    with contextlib.suppress(asyncio.CancelledError):
        await run


@pytest.mark.unit
async def test_poller_scaler_moves_its_target_between_the_bounds() -> None:
    from pool.activity.poller import PollerScaler

    scaler = PollerScaler(minimum=1, maximum=3, initial=2)
    await scaler.acquire()
    await scaler.acquire()
    third = asyncio.ensure_future(scaler.acquire())
    await asyncio.sleep(0)  # let it wait: the target is 2
    assert not third.done() and scaler.in_flight == 2
    await scaler.release(True)  # a task: one more may poll (target 3)
    await asyncio.wait_for(third, 1)
    assert (scaler.target, scaler.in_flight) == (3, 2)
    await scaler.release(False)  # empty polls: one fewer each, not below 1
    await scaler.release(False)
    assert (scaler.target, scaler.in_flight) == (1, 0)
    await scaler.acquire()
    await scaler.release(False)
    assert scaler.target == 1
    await scaler.acquire()
    await scaler.release(None)  # a failed poll changes nothing
    assert scaler.target == 1
    await scaler.acquire()
    await scaler.release(True, suggestion=5)  # the server's suggestion, capped
    assert (scaler.target, scaler.in_flight) == (3, 0)


async def test_autoscaling_behavior_starts_with_its_initial_pollers(client, task_queue) -> None:
    from temporalio.worker import PollerBehaviorAutoscaling

    async with pool.Worker(
        client,
        task_queue=task_queue,
        activities=[A.async_double],
        workflows=[A.RunOne],
        activity_task_poller_behavior=PollerBehaviorAutoscaling(initial=2),
    ) as worker:
        poller = worker._sides.activity.poller
        await async_assert_eventually(lambda: poller.polling == 2)
        result = await client.execute_workflow(
            A.RunOne.run, args=["async_double", [4]], id=workflow_id(), task_queue=task_queue
        )
        assert result[0] == 8
