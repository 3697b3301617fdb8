"""A tiny application for the launcher tests: `python -m pool run tests.pool.launcher_app`.

Module level, as everything the pool's children import must be."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.common import RetryPolicy


@activity.defn
def shout(text: str) -> list:
    """[TEXT, pid of the process that ran it]."""
    activity.logger.info("shouting %s", text)
    return [text.upper(), os.getpid()]


@activity.defn
def linger(marker: str, seconds: float) -> str:
    """Create ``marker`` (the test waits for it), then stay busy for ``seconds``."""
    Path(marker).write_text(str(os.getpid()))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)  # pure Python between sleeps: a cancellation lands at once
    return "finished"


@workflow.defn
class ShoutWorkflow:
    @workflow.run
    async def run(self, text: str) -> list:
        return await workflow.execute_activity(
            shout, text, start_to_close_timeout=timedelta(seconds=30)
        )


@workflow.defn
class LingerWorkflow:
    @workflow.run
    async def run(self, marker: str, seconds: float) -> str:
        return await workflow.execute_activity(
            linger,
            args=[marker, seconds],
            start_to_close_timeout=timedelta(seconds=120),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )
