"""HeartbeatManager's throttling and answers, on a virtual clock and a scripted service.

record(token, details) ─▶ _send_loop ─▶ FakeService.call (each call queued, each
    answer scripted: a response, an exception, or held until the test releases it)
sleep(wait) ─▶ the virtual clock advances by ``wait`` at once (nothing waits)
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import grpc
import grpc.aio
import pytest
import temporalio.activity
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.workflowservice.v1 import (
    RecordActivityTaskHeartbeatRequest,
    RecordActivityTaskHeartbeatResponse,
)

from pool.activity.heartbeats import HeartbeatManager, throttle_interval
from tests.helpers import async_assert_eventually

pytestmark = pytest.mark.unit

TOKEN = b"token"
_WAIT = 5.0  # bounds every wait on the fake; a real run never gets near it


def _details(text: str) -> Payloads:
    return Payloads(payloads=[Payload(data=text.encode())])


def _text(request: RecordActivityTaskHeartbeatRequest) -> str:
    return request.details.payloads[0].data.decode()


class FakeService:
    """Answers RecordActivityTaskHeartbeat from a script; every call is queued for the test."""

    namespace = "default"
    identity = "test-worker"

    def __init__(self, clock: VirtualClock) -> None:
        self._clock = clock
        # Each call with the throttle waits made before it.
        self.calls: asyncio.Queue[tuple[RecordActivityTaskHeartbeatRequest, list[float]]] = (
            asyncio.Queue()
        )
        self.answers: list[Any] = []  # popped per call; empty: a plain response
        self.hold: asyncio.Event | None = None  # set: calls wait for it
        self.rpc_seconds = 0.0  # virtual time each call takes
        self.sleeps_before: list[float] = []  # of the call next_call() returned last

    async def call(self, name: str, request: Any) -> RecordActivityTaskHeartbeatResponse:
        assert name == "RecordActivityTaskHeartbeat"
        self.calls.put_nowait((request, list(self._clock.sleeps)))
        if self.hold is not None:
            await self.hold.wait()
        self._clock.now += self.rpc_seconds
        answer = self.answers.pop(0) if self.answers else RecordActivityTaskHeartbeatResponse()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def next_call(self) -> RecordActivityTaskHeartbeatRequest:
        request, self.sleeps_before = await asyncio.wait_for(self.calls.get(), _WAIT)
        return request


class VirtualClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class Harness:
    def __init__(self) -> None:
        self.clock = VirtualClock()
        self.service = FakeService(self.clock)
        self.cancels: list[tuple[bytes, temporalio.activity.ActivityCancellationDetails]] = []
        self.sent: list[bytes] = []
        self.manager = HeartbeatManager(
            self.service,  # type: ignore[arg-type]
            on_cancel=lambda token, details: self.cancels.append((token, details)),
            on_sent=self.sent.append,
            clock=self.clock,
            sleep=self.clock.sleep,
        )

    async def close(self) -> None:
        await self.manager.close()


def _rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="said so")


async def test_the_first_heartbeat_goes_out_at_once_and_later_ones_replace_the_pending():
    h = Harness()
    h.service.hold = asyncio.Event()
    h.manager.record(TOKEN, _details("1"), throttle=10.0)
    assert _text(await h.service.next_call()) == "1"
    # While the first RPC is in flight, newer details replace the pending ones.
    h.manager.record(TOKEN, _details("2"), throttle=10.0)
    h.manager.record(TOKEN, _details("3"), throttle=10.0)
    assert h.service.calls.empty(), "a second RPC went out while one was in flight"
    h.service.hold.set()
    assert _text(await h.service.next_call()) == "3"
    assert h.service.sleeps_before == [10.0]  # the throttle, before the second RPC
    assert h.sent == [TOKEN, TOKEN]
    await h.close()
    assert h.service.calls.empty()


async def test_the_time_an_rpc_took_counts_against_the_throttle():
    h = Harness()
    h.service.rpc_seconds = 3.0
    h.service.hold = asyncio.Event()
    h.manager.record(TOKEN, _details("1"), throttle=10.0)
    await h.service.next_call()
    h.manager.record(TOKEN, _details("2"), throttle=10.0)
    h.service.hold.set()
    await h.service.next_call()
    assert h.service.sleeps_before == [7.0]


async def test_with_nothing_pending_the_token_is_forgotten_and_the_next_beat_is_immediate():
    h = Harness()
    h.manager.record(TOKEN, _details("1"), throttle=10.0)
    await h.service.next_call()
    # The loop waits out the throttle, finds nothing pending and forgets the token.
    await async_assert_eventually(lambda: "tokens: 0" in repr(h.manager), timeout=_WAIT)
    assert h.clock.sleeps == [10.0]
    h.manager.record(TOKEN, _details("2"), throttle=10.0)
    assert _text(await h.service.next_call()) == "2"
    assert h.service.sleeps_before == [10.0]  # sent before any new throttle wait
    await h.close()


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (RecordActivityTaskHeartbeatResponse(cancel_requested=True), {"cancel_requested": True}),
        (RecordActivityTaskHeartbeatResponse(activity_paused=True), {"paused": True}),
        (RecordActivityTaskHeartbeatResponse(activity_reset=True), {"reset": True}),
        (
            RecordActivityTaskHeartbeatResponse(cancel_requested=True, activity_paused=True),
            {"cancel_requested": True, "paused": True},
        ),
    ],
    ids=["cancel", "pause", "reset", "cancel-and-pause"],
)
async def test_the_servers_answer_becomes_one_cancellation(response, expected):
    h = Harness()
    h.service.answers = [response]
    h.manager.record(TOKEN, _details("1"), throttle=1.0)
    await h.service.next_call()
    await h.close()
    assert len(h.cancels) == 1
    token, details = h.cancels[0]
    assert token == TOKEN
    assert details == temporalio.activity.ActivityCancellationDetails(**expected)


async def test_not_found_cancels_as_not_found_and_is_not_an_error():
    h = Harness()
    h.service.answers = [_rpc_error(grpc.StatusCode.NOT_FOUND)]
    h.manager.record(TOKEN, _details("1"), throttle=1.0)
    await h.service.next_call()
    await h.close()
    assert h.cancels == [(TOKEN, temporalio.activity.ActivityCancellationDetails(not_found=True))]
    assert (h.manager.rpcs, h.manager.errors) == (1, 0)
    assert h.sent == []


@pytest.mark.parametrize(
    "error", [_rpc_error(grpc.StatusCode.UNAVAILABLE), RuntimeError("a codec bug")]
)
async def test_another_error_is_logged_and_the_activity_runs_on(error, caplog):
    caplog.set_level(logging.WARNING, logger="pool.heartbeats")
    h = Harness()
    h.service.answers = [error]
    h.service.hold = asyncio.Event()
    h.manager.record(TOKEN, _details("1"), throttle=1.0)
    await h.service.next_call()
    h.manager.record(TOKEN, _details("2"), throttle=1.0)
    h.service.hold.set()
    assert _text(await h.service.next_call()) == "2"  # the next heartbeat still goes out
    await h.close()
    assert h.cancels == []
    assert (h.manager.rpcs, h.manager.errors) == (2, 1)
    assert "Heartbeat failed, the activity keeps running" in caplog.text


async def test_evict_with_flush_sends_one_last_heartbeat_that_reports_nothing():
    h = Harness()
    h.manager.record(TOKEN, _details("1"), throttle=10.0)
    await h.service.next_call()
    h.service.answers = [RecordActivityTaskHeartbeatResponse(cancel_requested=True)]
    await h.manager.evict(TOKEN, flush=_details("last"))
    assert _text(await h.service.next_call()) == "last"
    # The flush's answer is not turned into a cancellation or a "sent" callback.
    assert h.cancels == [] and h.sent == [TOKEN]


async def test_evict_lets_the_rpc_in_flight_finish():
    h = Harness()
    h.service.hold = asyncio.Event()
    h.manager.record(TOKEN, _details("1"), throttle=10.0)
    await h.service.next_call()
    evicting = asyncio.create_task(h.manager.evict(TOKEN))
    await asyncio.sleep(0)
    assert not evicting.done()  # waits for the RPC, does not cancel it
    h.service.hold.set()
    await asyncio.wait_for(evicting, _WAIT)
    assert h.sent == [TOKEN]


@pytest.mark.parametrize(
    ("timeout", "expected"), [(None, 30.0), (10.0, 8.0), (1000.0, 60.0)], ids=str
)
def test_throttle_interval_is_four_fifths_of_the_timeout_within_the_bounds(timeout, expected):
    heartbeat_timeout = timedelta(seconds=timeout) if timeout else None
    interval = throttle_interval(heartbeat_timeout, timedelta(seconds=30), timedelta(seconds=60))
    assert interval == pytest.approx(expected)
