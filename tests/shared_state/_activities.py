"""A workflow and sync activities for the stock temporalio worker with a process pool:
module level, so a ProcessPoolExecutor child can import them by name."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy


@activity.defn
def heartbeat_many(count: int) -> int:
    """Heartbeat ``count`` times with details; return how many."""
    for i in range(count):
        activity.heartbeat(i, {"step": i, "of": count})
    return count


@activity.defn
def heartbeat_then_fail_once(count: int) -> list[Any]:
    """Attempt 1: heartbeat ``count`` times, then raise. Attempt 2: return the heartbeat
    details the server recorded for attempt 1."""
    info = activity.info()
    if info.attempt == 1:
        for i in range(count):
            activity.heartbeat(i, {"step": i})
        raise RuntimeError("attempt 1 fails on purpose")
    return list(info.heartbeat_details)


@workflow.defn
class RunActivity:
    @workflow.run
    async def run(self, name: str, count: int) -> Any:
        return await workflow.execute_activity(
            name,
            count,
            start_to_close_timeout=timedelta(seconds=30),
            heartbeat_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(
                maximum_attempts=2,
                initial_interval=timedelta(milliseconds=100),
            ),
        )
