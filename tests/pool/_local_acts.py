"""Activities and workflows for the local-activity tests (module level: they cross into
child processes)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import CancelledError
from temporalio.workflow import ActivityCancellationType

# How long the blocking activities below wait at most before giving up on the test.
_TEST_PATIENCE = 30.0


@activity.defn
def burn_cpu(seconds: float, marker: str) -> int:
    """Writes its pid to ``marker``, then burns ``seconds`` of CPU in C calls that hold the
    GIL (~0.3 s each): in a thread of the worker's process this would stall its event
    loop. Returns the pid."""
    with open(marker, "w") as f:
        f.write(str(os.getpid()))
    deadline = time.process_time() + seconds
    while time.process_time() < deadline:
        sum(range(10_000_000))
    return os.getpid()


@activity.defn
def noop() -> int:
    return os.getpid()


@activity.defn
def blocked_on_first_attempt() -> list[int]:
    """Attempt 1 waits (for the test to SIGKILL its child); later attempts return
    [attempt, pid] at once."""
    attempt = activity.info().attempt
    if attempt == 1:
        deadline = time.monotonic() + _TEST_PATIENCE
        while time.monotonic() < deadline:
            time.sleep(0.01)
    return [attempt, os.getpid()]


@activity.defn
def wait_for_cancel(marker: str, linger: float = 0.0) -> None:
    """Waits until cancelled; writes "<pid> <cancel reason>" to ``marker`` when the
    CancelledError is raised here, then takes ``linger`` seconds to clean up."""
    deadline = time.monotonic() + _TEST_PATIENCE
    try:
        while time.monotonic() < deadline:
            time.sleep(0.01)
    except CancelledError:
        details = activity.cancellation_details()
        why = "?"
        if details is not None and details.cancel_requested:
            why = "cancel_requested"
        elif details is not None and details.timed_out:
            why = "timed_out"
        with open(marker, "w") as f:
            f.write(f"{os.getpid()} {why}")
        time.sleep(linger)
        raise


@activity.defn
def ignore_cancel(marker: str) -> None:
    """Swallows the CancelledError and keeps going: only a kill stops it."""
    deadline = time.monotonic() + _TEST_PATIENCE
    while time.monotonic() < deadline:
        try:
            time.sleep(0.01)
        except CancelledError:
            with open(marker, "w") as f:
                f.write(str(os.getpid()))


@workflow.defn
class Local:
    """Runs one local activity by name; retries (100 ms apart) only when ``attempts`` > 1."""

    @workflow.run
    async def run(self, name: str, args: list, attempts: int = 1, timeout: float = 60) -> Any:
        return await workflow.execute_local_activity(
            name,
            args=args,
            start_to_close_timeout=timedelta(seconds=timeout),
            retry_policy=RetryPolicy(
                maximum_attempts=attempts, initial_interval=timedelta(milliseconds=100)
            ),
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )


@workflow.defn
class Remote:
    """Runs one no-op remote activity."""

    @workflow.run
    async def run(self) -> int:
        return await workflow.execute_activity(noop, start_to_close_timeout=timedelta(seconds=30))


def start_once(marker: str) -> None:
    """A child initializer: the first child starts, every later one fails to."""
    if os.path.exists(marker):
        raise RuntimeError("only the first child may start")
    with open(marker, "w") as f:
        f.write(str(os.getpid()))


@activity.defn
def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@activity.defn
def hold(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


@workflow.defn
class LocalFanOut:
    """Runs one local activity per argument list, all at once."""

    @workflow.run
    async def run(self, name: str, args_lists: list) -> list:
        return list(
            await asyncio.gather(
                *[
                    workflow.execute_local_activity(
                        name,
                        args=args,
                        start_to_close_timeout=timedelta(seconds=60),
                        retry_policy=RetryPolicy(maximum_attempts=1),
                        cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                    )
                    for args in args_lists
                ]
            )
        )
