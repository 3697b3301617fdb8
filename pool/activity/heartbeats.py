"""Heartbeats: throttle like sdk-core, send ``RecordActivityTaskHeartbeat``, and
turn the answers into cancellations.

Per task token (activity-protocol.md §3):

* the first heartbeat goes out at once;
* later ones only replace the pending details; at most one RPC is in flight;
* when an RPC returns, wait ``throttle - (now - requested)``, then send the
  pending details, or forget the token when there are none (so the next
  heartbeat again goes out at once);
* ``cancel_requested`` / ``activity_paused`` / ``activity_reset`` -> one cancel,
  priority cancel > reset > pause; ``NOT_FOUND`` -> cancel as not-found and no
  completion RPC later; any other error is logged and the activity runs on.

The clock and the sleep are injected (``time.monotonic`` and ``asyncio.sleep`` by
default), so the throttling is tested without waiting (tests/pool/activity/
test_heartbeats_unit.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import grpc
import temporalio.activity
from temporalio.api.common.v1 import Payloads
from temporalio.api.workflowservice.v1 import RecordActivityTaskHeartbeatRequest

from .service import ActivityService, describe_rpc_error

__all__ = ["HeartbeatManager", "throttle_interval"]

logger = logging.getLogger("pool.heartbeats")


def throttle_interval(
    heartbeat_timeout: timedelta | None, default: timedelta, maximum: timedelta
) -> float:
    """0.8 x heartbeat timeout, or the default when unset; capped by the maximum."""
    if heartbeat_timeout:
        seconds = heartbeat_timeout.total_seconds() * 0.8
    else:
        seconds = default.total_seconds()
    return min(seconds, maximum.total_seconds())


@dataclass(eq=False)
class _Beat:
    token: bytes
    throttle: float
    pending: Payloads | None = None
    sender: asyncio.Task[None] | None = None
    in_rpc: asyncio.Future[None] | None = None


CancelCallback = Callable[[bytes, temporalio.activity.ActivityCancellationDetails], None]


class HeartbeatManager:
    def __init__(
        self,
        service: ActivityService,
        *,
        on_cancel: CancelCallback,
        on_sent: Callable[[bytes], None],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._service = service
        self._on_cancel = on_cancel
        self._on_sent = on_sent
        self._clock = clock
        self._sleep = sleep
        self._beats: dict[bytes, _Beat] = {}
        self.rpcs = 0
        self.errors = 0

    def __repr__(self) -> str:
        return f"<HeartbeatManager [tokens: {len(self._beats)} | rpcs: {self.rpcs}]>"

    def record(self, token: bytes, details: Payloads, throttle: float) -> None:
        """A new heartbeat for ``token``: send now, or keep as the pending one."""
        beat = self._beats.get(token)
        if beat is None:
            beat = self._beats[token] = _Beat(token=token, throttle=throttle)
            beat.pending = details
            beat.sender = asyncio.create_task(self._send_loop(beat), name="heartbeat")
        else:
            beat.pending = details

    async def evict(self, token: bytes, *, flush: Payloads | None = None) -> None:
        """The activity ended: stop throttling; send ``flush`` as one last heartbeat
        (only after a normal cancellation, since Canceled cannot carry details)."""
        beat = self._beats.pop(token, None)
        if beat is not None:
            if beat.in_rpc is not None:
                # Let the RPC in flight finish; cancel only the throttle wait.
                with contextlib.suppress(Exception):
                    await asyncio.shield(beat.in_rpc)
            if beat.sender is not None:
                beat.sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beat.sender
        if flush is not None:
            await self._send(token, flush, report=False)

    async def close(self) -> None:
        for token in list(self._beats):
            await self.evict(token)

    async def _send_loop(self, beat: _Beat) -> None:
        loop = asyncio.get_running_loop()
        while True:
            details, beat.pending = beat.pending, None
            requested = self._clock()
            if details is not None:
                beat.in_rpc = loop.create_future()
                try:
                    await self._send(beat.token, details, report=True)
                finally:
                    beat.in_rpc.set_result(None)
                    beat.in_rpc = None
            wait = beat.throttle - (self._clock() - requested)
            if wait > 0:
                await self._sleep(wait)
            if beat.pending is None:
                if self._beats.get(beat.token) is beat:
                    del self._beats[beat.token]
                return

    async def _send(self, token: bytes, details: Payloads, *, report: bool) -> None:
        request = RecordActivityTaskHeartbeatRequest(
            namespace=self._service.namespace, task_token=token, identity=self._service.identity
        )
        request.details.CopyFrom(details)
        self.rpcs += 1
        try:
            response = await self._service.call("RecordActivityTaskHeartbeat", request)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                if report:
                    self._on_cancel(
                        token, temporalio.activity.ActivityCancellationDetails(not_found=True)
                    )
                return
            self.errors += 1
            logger.warning(
                "Heartbeat failed, the activity keeps running: %s", describe_rpc_error(err)
            )
            return
        except Exception as err:  # a codec or transport bug must not kill the loop
            self.errors += 1
            logger.warning(
                "Heartbeat failed, the activity keeps running: %s", describe_rpc_error(err)
            )
            return
        if not report:
            return
        self._on_sent(token)
        if response.cancel_requested or response.activity_paused or response.activity_reset:
            self._on_cancel(
                token,
                temporalio.activity.ActivityCancellationDetails(
                    cancel_requested=response.cancel_requested,
                    paused=response.activity_paused,
                    reset=response.activity_reset,
                ),
            )
