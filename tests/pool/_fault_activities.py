"""Activities and workflows for the fault and chaos tests (module level: they cross into
child processes, and ``python -m pool run tests.pool._fault_activities`` serves them)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy


@activity.defn
def start_sleeper(marker: str, then: str) -> int:
    """Start ``sleep 300`` (a grandchild of the worker), write "CHILD SLEEPER" pids to
    ``marker`` (the test waits for it), then ``then``: "return", "crash" (the child dies
    with exit code 3), "hang" (until killed or cancelled)."""
    sleeper = subprocess.Popen(["sleep", "300"])
    tmp = Path(f"{marker}.tmp")
    tmp.write_text(f"{os.getpid()} {sleeper.pid}")
    tmp.rename(marker)  # whole or absent: the test never reads half a line
    if then == "crash":
        os._exit(3)
    while then == "hang":
        time.sleep(0.01)
    return sleeper.pid


def _running(marker: str) -> None:
    """Write "PID STARTED" to ``marker``: this child, and when the server started the
    attempt (before the worker received it), as a Unix time."""
    tmp = Path(f"{marker}.tmp")
    tmp.write_text(f"{os.getpid()} {activity.info().started_time.timestamp()}")
    tmp.rename(marker)


@activity.defn
def swallow_cancel(marker: str) -> None:
    """Write ``marker``, then keep running through every CancelledError."""
    _running(marker)
    while True:
        try:
            time.sleep(0.01)
        except BaseException:  # deliberately misbehaving
            continue


@activity.defn
def long_c_call(marker: str) -> int:
    """Write ``marker``, then sit in one C call that never checks for signals: the
    cancel signal's handler (and so CancelledError) cannot run until it returns."""
    _running(marker)
    return sum(range(10**12))  # the int fast path of sum() loops in C


@activity.defn
def crunch(ms: int, n: int) -> list[int]:
    """Burns CPU for ``ms`` milliseconds; returns [n, n*n]."""
    deadline = time.process_time() + ms / 1000
    while time.process_time() < deadline:
        pass
    return [n, n * n]


_FAST_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=50), backoff_coefficient=1.0)


@workflow.defn
class RunOnce:
    """One activity, one attempt, with the given start-to-close timeout."""

    @workflow.run
    async def run(self, name: str, args: list, start_to_close: float) -> Any:
        return await workflow.execute_activity(
            name,
            args=args,
            start_to_close_timeout=timedelta(seconds=start_to_close),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


@workflow.defn
class CrunchFanOut:
    """``count`` crunch activities of ``ms`` each, retried quickly."""

    @workflow.run
    async def run(self, count: int, ms: int) -> list:
        return list(
            await asyncio.gather(
                *[
                    workflow.execute_activity(
                        crunch,
                        args=[ms, i],
                        start_to_close_timeout=timedelta(seconds=30),
                        retry_policy=_FAST_RETRY,
                    )
                    for i in range(count)
                ]
            )
        )
