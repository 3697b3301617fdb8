"""One polled task as the dispatcher tracks it, with its lifecycle as an explicit state.

    DECODING ─▶ WAITING (its activity type's slot) ─▶ RUNNING ─▶ REPORTING ─▶ DONE
                       └─ a cancel, the first reason wins ─▶ CANCELLING ─┘

A cancel may arrive in any state: it is recorded (``cancel``, ``cancel_reason``) and
delivered by the task's executor once there is something to deliver it to. DECODING
tasks that fail (an unknown activity type, arguments that do not decode) go straight
to REPORTING.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import threading
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import temporalio.activity
import temporalio.converter
import temporalio.worker
from temporalio.api.common.v1 import Payloads

import runner.context
from pool._interceptors import Innermost
from pool.activity.threads import ThreadCancelRaiser
from pool.supervisor.scheduler import Reservation

__all__ = ["CancelTargets", "Details", "Executor", "RunningTask", "State", "Task"]

Details = temporalio.activity.ActivityCancellationDetails


class State(enum.Enum):
    DECODING = "decoding"  # arguments, info, deadlines
    WAITING = "waiting"  # for a slot of its activity type
    RUNNING = "running"  # the interceptor chain and the activity
    CANCELLING = "cancelling"  # running, a cancel delivered
    REPORTING = "reporting"  # the outcome is built and sent
    DONE = "done"


class RunningTask(NamedTuple):
    token: bytes
    activity_type: str
    pid: int | None  # the child running it; None in the parent or before a child took it
    state: State


@dataclass(eq=False)
class CancelTargets:
    """Where a cancel lands in this process, made as the chain starts: the activity
    context's cancellation details and events, and the thread raiser of a thread task."""

    holder: Any  # runner.context's cancellation-details holder
    thread_cancelled: threading.Event
    async_cancelled: asyncio.Event | None = None
    thread_raiser: ThreadCancelRaiser | None = None

    @classmethod
    def new(cls, *, in_loop: bool, raiser: ThreadCancelRaiser | None) -> CancelTargets:
        return cls(
            holder=runner.context.new_cancellation_holder(),
            thread_cancelled=threading.Event(),
            async_cancelled=asyncio.Event() if in_loop else None,
            thread_raiser=raiser,
        )

    def set(self, details: Details) -> None:
        """Everything a cancel sets in this process (details first, then the events
        and the raiser)."""
        if self.holder.details is None:
            self.holder.details = details
        self.thread_cancelled.set()
        if self.async_cancelled is not None:
            self.async_cancelled.set()
        if self.thread_raiser is not None:
            self.thread_raiser.request()


class Executor(Protocol):
    """Where a task's activity runs (a child, a thread, this loop): the chain's
    innermost step, and how a cancel reaches it."""

    @property
    def kind(self) -> str:
        """process | thread | async"""

    @property
    def takes_child(self) -> bool:
        """Whether it uses the child the poller reserved."""

    @property
    def threads(self) -> concurrent.futures.ThreadPoolExecutor | None:
        """What ExecuteActivityInput.executor says."""

    def targets(self, defn: temporalio.activity._Definition) -> CancelTargets: ...

    async def run(
        self,
        task: Task,
        input: temporalio.worker.ExecuteActivityInput,
        dc: temporalio.converter.DataConverter,
    ) -> Any: ...

    def deliver_cancel(self, task: Task) -> None: ...


@dataclass(eq=False)
class Task:
    id: int
    token: bytes
    activity_type: str
    received: float  # time.monotonic() when the poll returned it
    workflow_type: str = ""
    state: State = State.DECODING
    executor: Executor | None = None  # None: no activity of that name is registered
    info: temporalio.activity.Info | None = None
    pid: int | None = None  # the child running it
    throttle: float = 30.0
    give_up_at: float | None = None  # no report RPC is retried after this
    cancel: Details | None = None  # the first cancel's reason
    cancel_reason: str = ""
    heartbeat_error: BaseException | None = None
    last_heartbeat: Payloads | None = None  # newest details, codec not applied
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    targets: CancelTargets | None = None
    chain: asyncio.Task[Any] | None = None  # the interceptor chain, for every kind
    context: Any = None  # the activity context the chain runs in
    innermost: Innermost | None = None
    reservation: Reservation | None = None  # the child promised to it; run() uses it
    # Payloads the child converts (issue 13): the earlier attempt's heartbeat details
    # (codec applied in reverse), and whether the child returns the result as payloads.
    encoded_heartbeat: bytes | None = None
    encode_result: bool = False
    # Whether the child may send a large result to the server itself (runner.report).
    child_reports: bool = False
    # The poll response's input as it came (service.Polled), until the args are decoded.
    input_bytes: bytes | memoryview | None = None
    child_end: str = ""  # killed / crashed: how a child's end is counted

    @property
    def kind(self) -> str:
        return self.executor.kind if self.executor is not None else "unknown"

    @property
    def cancel_requested(self) -> bool:
        return self.cancel is not None

    def request_cancel(self, details: Details, reason: str) -> bool:
        """Record a cancel; False when one was recorded already (the first one counts)."""
        if self.cancel is not None:
            return False
        self.cancel = details
        self.cancel_reason = reason
        if self.state is State.RUNNING:
            self.state = State.CANCELLING
        return True

    def start_running(self) -> None:
        """The chain starts: RUNNING, or CANCELLING with a cancel that came first."""
        self.state = State.CANCELLING if self.cancel is not None else State.RUNNING

    def as_running(self) -> RunningTask:
        return RunningTask(self.token, self.activity_type, self.pid, self.state)
