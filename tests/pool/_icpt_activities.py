"""Activities and workflows for the interceptor, logging and metric tests (module level:
the sync ones cross into child processes)."""

from __future__ import annotations

import asyncio
import contextvars
import os
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

# What the async activity saw when it was cancelled (it runs in the test's process).
CANCEL_MESSAGES: list[str] = []
STARTED: list[str] = []


def _echo(x: int) -> dict[str, Any]:
    """The first attempt heartbeats and fails; the second returns what it got and the
    heartbeat details the first attempt left on the server."""
    info = activity.info()
    if info.attempt == 1:
        activity.heartbeat("beat", x)
        raise ApplicationError("the first attempt fails after heartbeating")
    return {"x": x, "pid": os.getpid(), "details": list(info.heartbeat_details)}


@activity.defn(name="echo")
def echo_sync(x: int) -> dict[str, Any]:
    return _echo(x)


@activity.defn(name="echo")
async def echo_async(x: int) -> dict[str, Any]:
    return _echo(x)


@activity.defn
def fails(message: str) -> None:
    raise ApplicationError(message, type="Boom")


@activity.defn
def takes_int(n: int) -> int:
    return n + 1


@activity.defn
async def waits_for_cancel() -> str:
    STARTED.append(activity.info().workflow_id or "")
    try:
        while True:
            activity.heartbeat()
            await asyncio.sleep(0.05)
    except asyncio.CancelledError as err:
        CANCEL_MESSAGES.append(str(err))
        raise


def _count_metric() -> str:
    meter = activity.metric_meter()
    meter.create_counter("pool_test_activity_calls", "calls from an activity").add(1)
    meter.create_histogram("pool_test_activity_size", "sizes seen", "bytes").record(
        512, {"shape": "square"}
    )
    meter.create_gauge_float("pool_test_activity_ratio", "a ratio").set(0.25)
    return "counted"


@activity.defn(name="count_metric")
def count_metric_sync() -> str:
    return _count_metric()


@activity.defn(name="count_metric")
async def count_metric_async() -> str:
    return _count_metric()


@workflow.defn
class TwoAttempts:
    @workflow.run
    async def run(self, name: str, args: list) -> Any:
        return await workflow.execute_activity(
            name,
            args=args,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(
                maximum_attempts=2, initial_interval=timedelta(milliseconds=1)
            ),
        )


@workflow.defn
class CancelOnSignal:
    def __init__(self) -> None:
        self._cancel = False

    @workflow.signal
    def cancel_it(self) -> None:
        self._cancel = True

    @workflow.run
    async def run(self) -> str:
        handle = workflow.start_activity(
            waits_for_cancel,
            start_to_close_timeout=timedelta(seconds=30),
            heartbeat_timeout=timedelta(seconds=5),
            # The workflow ends only after the worker reported the cancellation.
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
        await workflow.wait_condition(lambda: self._cancel)
        handle.cancel()
        try:
            await handle
        except ActivityError as err:
            return type(err.cause).__name__
        return "completed"


REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


@activity.defn(name="read_context_var")
def read_context_var_sync() -> str:
    return REQUEST_ID.get()


@activity.defn(name="read_context_var")
async def read_context_var_async() -> str:
    return REQUEST_ID.get()


@workflow.defn
class RunOnce:
    @workflow.run
    async def run(self, name: str) -> Any:
        return await workflow.execute_activity(
            name,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )
