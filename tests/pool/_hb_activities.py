"""Heartbeat and cancellation activities/workflows (module level: they cross into
child processes). Activities write what they observed to a file named by the test,
because a cancelled attempt's own result is never reported."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, CancelledError


def _note(path: str, **fields: Any) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(fields) + "\n")


def read_notes(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@activity.defn
def heartbeat_until_cancelled(mode: str, path: str) -> str:
    """Heartbeats until cancelled. mode: catch | uncaught | shield."""
    i = 0
    try:
        while True:
            i += 1
            activity.heartbeat(i)
            if mode == "shield" and i == 3:
                with activity.shield_thread_cancel_exception():
                    _note(path, event="shield-start", t=time.monotonic())
                    deadline = time.monotonic() + 1.0
                    while time.monotonic() < deadline:
                        pass  # busy: the cancel arrives while we are shielded
                    _note(path, event="shield-end", t=time.monotonic())
            time.sleep(0.01)
    except CancelledError:
        details = activity.cancellation_details()
        _note(
            path,
            event="cancelled",
            t=time.monotonic(),
            is_cancelled=activity.is_cancelled(),
            cancel_requested=bool(details and details.cancel_requested),
            paused=bool(details and details.paused),
            reset=bool(details and details.reset),
        )
        if mode == "catch":
            return f"caught after {i} heartbeats"
        raise


@activity.defn(no_thread_cancel_exception=True)
def poll_until_cancelled(path: str) -> str:
    """Cooperative: no exception is raised inside; the activity polls."""
    while not activity.is_cancelled():
        activity.heartbeat()
        activity.wait_for_cancelled_sync(0.05)
    details = activity.cancellation_details()
    _note(path, event="saw-cancel", cancel_requested=bool(details and details.cancel_requested))
    return "noticed"


@activity.defn
def sleep_until_cancelled(path: str) -> str:
    """Stock's process-pool pattern: check, sleep, heartbeat; return once cancelled.
    It checks is_cancelled(), so no CancelledError lands in its sleep."""
    while not activity.is_cancelled():
        time.sleep(0.2)
        activity.heartbeat()
    _note(path, event="returned-after-cancel")
    return "noticed"


@activity.defn
def heartbeat_then_fail(path: str) -> list:
    info = activity.info()
    if info.attempt == 1:
        activity.heartbeat("progress", 7)
        activity.heartbeat("progress", 8)
        raise RuntimeError("first attempt fails after heartbeating")
    return list(info.heartbeat_details)


@activity.defn
def tight_heartbeats(seconds: float) -> int:
    calls = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        activity.heartbeat(calls)
        calls += 1
    return calls


@activity.defn
def heartbeat_gap(path: str, gap: float) -> str:
    """Attempt 1 heartbeats, goes quiet past its heartbeat timeout, heartbeats again
    (NOT_FOUND): records what it saw. Attempt 2 returns attempt 1's notes."""
    info = activity.info()
    if info.attempt > 1:
        # Attempt 1 may still be running locally (the server gave up on it first).
        deadline = time.monotonic() + 20
        while not read_notes(path) and time.monotonic() < deadline:
            time.sleep(0.05)
        return json.dumps(read_notes(path))
    activity.heartbeat("before gap")
    time.sleep(gap)
    try:
        activity.heartbeat("after gap")
        while True:
            time.sleep(0.02)
    except CancelledError:
        details = activity.cancellation_details()
        _note(path, event="cancelled", not_found=bool(details and details.not_found))
        raise


@activity.defn
def wait_for_worker_shutdown(path: str) -> str:
    _note(path, event="started", pid=os.getpid())
    activity.wait_for_worker_shutdown_sync(30)
    return f"{os.getpid()}:{activity.is_worker_shutdown()}"


@activity.defn
def unconvertible_heartbeat() -> str:
    activity.heartbeat(object())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.01)
    return "should not get here"


@workflow.defn
class CancelAfterSignal:
    """Starts one activity; cancels it when signalled; returns what happened."""

    def __init__(self) -> None:
        self.cancel_now = False

    @workflow.signal
    def cancel(self) -> None:
        self.cancel_now = True

    @workflow.run
    async def run(self, name: str, args: list) -> str:
        handle = workflow.start_activity(
            name,
            args=args,
            start_to_close_timeout=timedelta(seconds=60),
            heartbeat_timeout=timedelta(seconds=2),
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            retry_policy=RetryPolicy(maximum_attempts=1),
        )
        await workflow.wait_condition(lambda: self.cancel_now or handle.done())
        if not handle.done():
            handle.cancel()
        try:
            return f"result:{await handle}"
        except ActivityError as err:
            return f"error:{type(err.cause).__name__}"


@workflow.defn
class RunWithOptions:
    @workflow.run
    async def run(self, name: str, args: list, heartbeat_timeout: float, attempts: int) -> Any:
        return await workflow.execute_activity(
            name,
            args=args,
            start_to_close_timeout=timedelta(seconds=60),
            heartbeat_timeout=timedelta(seconds=heartbeat_timeout) if heartbeat_timeout else None,
            retry_policy=RetryPolicy(
                maximum_attempts=attempts,
                initial_interval=timedelta(milliseconds=100),
                backoff_coefficient=1.0,
            ),
        )
