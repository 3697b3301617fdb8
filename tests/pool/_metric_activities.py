"""A small workload for comparing the SDK's metrics between the stock worker and ours:
one activity that completes, one that fails (module level: they cross into children)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError


@activity.defn
def succeeds(n: int) -> int:
    return n + 1


@activity.defn
def fails() -> None:
    raise ApplicationError("this activity fails")


@workflow.defn
class SucceedThenFail:
    @workflow.run
    async def run(self) -> str:
        await workflow.execute_activity(succeeds, 1, start_to_close_timeout=timedelta(seconds=30))
        try:
            await workflow.execute_activity(
                fails,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        except ActivityError:
            return "done"
        return "the failing activity did not fail"
