"""A workflow module that imports ``pool`` itself, as the README's smallest program does:
the default sandbox must pass our packages through."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow

import pool  # noqa: F401  (the point of this module)


@activity.defn
def crunch(n: int) -> int:
    return sum(i * i for i in range(n))


@workflow.defn
class Crunch:
    @workflow.run
    async def run(self, n: int) -> int:
        return await workflow.execute_activity(
            crunch, n, start_to_close_timeout=timedelta(seconds=30)
        )
