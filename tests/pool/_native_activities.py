"""What a child sees of the native thread limit (module level: runs in children)."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow

from runner._native import THREAD_VARIABLES


@activity.defn
def native_threads() -> dict[str, Any]:
    import numpy  # noqa: F401  (loads OpenBLAS: its pool reads the variables now)
    from threadpoolctl import threadpool_info

    blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    return {
        "env": {name: os.environ.get(name) for name in THREAD_VARIABLES},
        "blas_threads": blas,
        "affinity": sorted(os.sched_getaffinity(0)),
    }


@workflow.defn
class ReadNativeThreads:
    @workflow.run
    async def run(self) -> dict[str, Any]:
        return await workflow.execute_activity(
            native_threads, start_to_close_timeout=timedelta(seconds=60)
        )
