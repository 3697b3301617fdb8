"""The poller: ``PollActivityTaskQueue`` only while a task could start at once.

Each poll loop first takes a concurrency slot (a permit of a custom supplier is
handed to the task the poll brings: ``Slots``), waits for the local rate limit
(``max_activities_per_second``), and, when sync activities run in the process
pool, reserves a child: an idle one, or a busy one expected to finish within a
poll round trip (``PoolConfig.lookahead``). Only then does it poll, so a task does
not wait after it was accepted while its start-to-close clock runs (sdk-python
#1168). Polls that return a task feed their round trip to the lookahead.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.wrappers_pb2 import DoubleValue
from temporalio.api.common.v1 import WorkerVersionCapabilities
from temporalio.api.enums.v1 import TaskQueueKind
from temporalio.api.taskqueue.v1 import TaskQueue, TaskQueueMetadata
from temporalio.api.workflowservice.v1 import (
    PollActivityTaskQueueRequest,
    PollActivityTaskQueueResponse,
)

from .._errors import PoolError
from ..observe.sdk_metrics import ActivityMetrics
from ..supervisor import ProcessPool, Reservation
from .service import POLL_DEADLINE, ActivityService, Polled, poll_with_retry
from .slots import RateLimiter, Slots

__all__ = ["PollSettings", "Poller", "PollerScaler"]

logger = logging.getLogger("pool.poller")


class PollerScaler:
    """``PollerBehaviorAutoscaling``: how many polls may be in flight, from ``initial``
    within ``minimum``..``maximum``. A poll that brought a task makes room for one more
    (or as many as the server suggests), an empty one for one fewer, as sdk-core's
    scaler does in spirit; slots and idle children still bound every poll."""

    def __init__(self, minimum: int, maximum: int, initial: int) -> None:
        self._minimum = max(1, minimum)
        self._maximum = max(self._minimum, maximum)
        self.target = min(max(initial, self._minimum), self._maximum)
        self.in_flight = 0
        self._changed = asyncio.Condition()

    async def acquire(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < self.target)
            self.in_flight += 1

    async def release(self, got_task: bool | None, suggestion: int = 0) -> None:
        """A poll ended: with a task (True), empty (False) or failed (None)."""
        async with self._changed:
            self.in_flight -= 1
            if got_task is not None:
                delta = suggestion or (1 if got_task else -1)
                self.target = min(max(self.target + delta, self._minimum), self._maximum)
            self._changed.notify_all()


@dataclass(frozen=True)
class PollSettings:
    task_queue: str
    pollers: int
    max_task_queue_activities_per_second: float | None
    build_id: str | None
    use_worker_versioning: bool
    worker_instance_key: str = ""
    # (minimum, maximum, initial) for PollerBehaviorAutoscaling; None: ``pollers`` polls.
    scaling: tuple[int, int, int] | None = None


class Poller:
    def __init__(
        self,
        *,
        service: ActivityService,
        settings: PollSettings,
        slots: Slots,
        limiter: RateLimiter | None,
        pool: ProcessPool | None,
        # (the response, its input's bytes as they came or None, the child promised)
        dispatch: Callable[
            [PollActivityTaskQueueResponse, memoryview | None, Reservation | None], None
        ],
        metrics: ActivityMetrics | None = None,
    ) -> None:
        self._service = service
        self._metrics = metrics
        scaling = settings.scaling
        self._scaler = PollerScaler(*scaling) if scaling is not None else None
        self._settings = settings
        self.worker_instance_key = settings.worker_instance_key or str(uuid.uuid4())
        self._slots = slots
        self._limiter = limiter
        self._pool = pool
        self._dispatch = dispatch
        self._stopping = False
        self._calls: dict[object, asyncio.Task[Any] | None] = {}  # call -> its poll loop
        self._loops: list[asyncio.Task[None]] = []
        self.polls = 0
        self.empty_polls = 0
        # Why the last poll failed; None once a poll answered again (readiness).
        self.poll_failure: str | None = None

    def __repr__(self) -> str:
        return (
            f"<Poller [{len(self._calls)} polls in flight | polls: {self.polls}, "
            f"empty: {self.empty_polls}{', stopping' if self._stopping else ''}]>"
        )

    def _request(self) -> PollActivityTaskQueueRequest:
        s = self._settings
        request = PollActivityTaskQueueRequest(
            namespace=self._service.namespace,
            task_queue=TaskQueue(name=s.task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
            identity=self._service.identity,
            worker_instance_key=self.worker_instance_key,
        )
        if s.max_task_queue_activities_per_second is not None:
            request.task_queue_metadata.CopyFrom(
                TaskQueueMetadata(
                    max_tasks_per_second=DoubleValue(value=s.max_task_queue_activities_per_second)
                )
            )
        if s.build_id:
            request.worker_version_capabilities.CopyFrom(
                WorkerVersionCapabilities(
                    build_id=s.build_id, use_versioning=s.use_worker_versioning
                )
            )
        return request

    async def run(self) -> None:
        """Poll until :meth:`stop`; raises when polling fails for good."""
        self._loops = [
            asyncio.create_task(self._poll_loop(), name=f"activity-poller-{i}")
            for i in range(self._settings.pollers)
        ]
        try:
            await asyncio.gather(*self._loops)
        finally:
            for loop_task in self._loops:
                loop_task.cancel()

    def stop(self) -> None:
        """Stop polling at once: cancel our own long polls (the dev server does
        not release them on ShutdownWorker)."""
        self._stopping = True
        # A loop inside a poll: cancel only its call. If the server already answered
        # with a task, cancel() is a no-op and the loop dispatches that task (it was
        # accepted: it must run or be handed back). Cancelling the loop task instead
        # could drop such an answer on the floor.
        polling = set(self._calls.values())
        for call in list(self._calls):
            call.cancel()  # type: ignore[attr-defined]
        for loop_task in self._loops:
            if loop_task not in polling:
                loop_task.cancel()  # waiting for a slot, a child or the rate limit

    async def _poll_loop(self) -> None:
        request = self._request()
        scaler = self._scaler
        while not self._stopping:
            if scaler is None:
                await self._poll_round(request)
                continue
            await scaler.acquire()
            outcome: list[Any] = [None, 0]  # got a task?, the server's suggested delta
            try:
                await self._poll_round(request, outcome)
            finally:
                await scaler.release(outcome[0], outcome[1])

    async def _poll_round(
        self, request: PollActivityTaskQueueRequest, outcome: list[Any] | None = None
    ) -> None:
        """One slot, one child, one poll; its task dispatched."""
        permit = await self._slots.acquire()
        reservation: Reservation | None = None
        handed_over = False
        try:
            if self._pool is not None:
                try:
                    reservation = await self._pool.reserve()
                except PoolError:
                    if self._stopping:
                        return
                    raise
            # The rate limit's permit is taken last, right before the poll: a loop
            # that waited here for a child must not poll on an old permit.
            if self._limiter is not None:
                await self._limiter.wait()
            if self._stopping:
                return
            polled = await poll_with_retry(
                lambda: self._poll_once(request), on_failure=self._poll_failed
            )
            response = polled.response
            self.poll_failure = None
            self.polls += 1
            if outcome is not None:
                outcome[0] = bool(response.task_token)
                outcome[1] = response.poller_scaling_decision.poll_request_delta_suggestion
            if not response.task_token:
                self.empty_polls += 1
                if self._metrics is not None:
                    self._metrics.poll_no_task()
                return
            if self._metrics is not None:
                self._metrics.task_received(
                    response.activity_type.name,
                    response.workflow_type.name,
                    response.started_time.ToDatetime()
                    - response.current_attempt_scheduled_time.ToDatetime(),
                )
            # Even while stopping: an accepted task is always run and reported.
            # Its slot is used from now on, as in sdk-core (the task is received).
            self._slots.mark_used(permit, response.task_token, response.activity_type.name)
            self._dispatch(response, polled.input, reservation)
            handed_over = True
        except asyncio.CancelledError:
            if self._stopping:
                return
            raise
        finally:
            if not handed_over:
                if reservation is not None:
                    reservation.release()
                self._slots.release_unused(permit)

    @property
    def polling(self) -> int:
        """Polls in flight now (sdk-core's ``num_pollers``)."""
        return len(self._calls)

    def _pollers_changed(self) -> None:
        if self._metrics is not None:
            self._metrics.pollers(len(self._calls))

    def _poll_failed(self, reason: str) -> None:
        self.poll_failure = reason

    async def _poll_once(self, request: PollActivityTaskQueueRequest) -> Polled:
        call = self._service.call_once("PollActivityTaskQueue", request, POLL_DEADLINE)
        self._calls[call] = asyncio.current_task()
        self._pollers_changed()
        loop = asyncio.get_running_loop()
        sent = loop.time()
        try:
            polled: Polled = await call
        finally:
            self._calls.pop(call, None)
            self._pollers_changed()
        if polled.response.task_token and self._pool is not None:
            self._pool.lookahead.observe_poll(loop.time() - sent)
        return polled
