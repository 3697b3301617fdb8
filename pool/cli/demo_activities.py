"""The sample that ``python -m pool demo`` runs: CPU-heavy sync activities, fanned out.

    FanOutWorkflow(activities=N, work_ms=W)
      ├─ burn_cpu(index 0, W ms of CPU) ─┐
      ├─ burn_cpu(index 1, W ms of CPU) ─┼─▶ child processes of the pool, in parallel
      └─ ...                              ┘
      ◀─ [BurnResult(index, pid, cpu_seconds, started_at, finished_at, digest), ...]

Each activity burns ``work_ms`` of its own CPU time in pure Python (so a cancellation
lands at once) and reports which process ran it and how much CPU it used, which is how
the demo measures CPU efficiency. The module is an ordinary activities-and-workflow
module: ``python -m pool run pool.cli.demo_activities --task-queue demo`` serves it too.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy

__all__ = ["BurnInput", "BurnResult", "FanOutInput", "FanOutWorkflow", "burn_cpu"]

# How many hash rounds between two looks at the CPU clock: a round is ~1 µs, a clock
# read ~1 µs, so the overshoot past work_ms stays well under a millisecond.
_ROUNDS_PER_CHECK = 256


@dataclass
class BurnInput:
    index: int
    work_ms: int


@dataclass
class BurnResult:
    index: int
    pid: int
    cpu_seconds: float  # this activity's own time.process_time() delta
    started_at: float  # time.time() at start and end: the demo's activity span
    finished_at: float
    digest: str


@dataclass
class FanOutInput:
    activities: int
    work_ms: int


@activity.defn
def burn_cpu(job: BurnInput) -> BurnResult:
    """Spend ``job.work_ms`` of CPU time hashing; return who did it and what it cost."""
    started_at = time.time()
    began = time.process_time()
    until = began + job.work_ms / 1000
    digest = hashlib.sha256(job.index.to_bytes(8, "big")).digest()
    while time.process_time() < until:
        for _ in range(_ROUNDS_PER_CHECK):
            digest = hashlib.sha256(digest).digest()
    return BurnResult(
        index=job.index,
        pid=os.getpid(),
        cpu_seconds=time.process_time() - began,
        started_at=started_at,
        finished_at=time.time(),
        digest=digest.hex()[:16],
    )


@workflow.defn
class FanOutWorkflow:
    """Start ``activities`` burn_cpu activities at once and wait for all of them."""

    @workflow.run
    async def run(self, job: FanOutInput) -> list[BurnResult]:
        # Generous: on a loaded machine an attempt may wait for a free child, and the
        # start-to-close clock starts only when a child takes it.
        timeout = timedelta(seconds=max(60, job.work_ms / 1000 * 10))
        return list(
            await asyncio.gather(
                *(
                    workflow.execute_activity(
                        burn_cpu,
                        BurnInput(index=i, work_ms=job.work_ms),
                        start_to_close_timeout=timeout,
                        retry_policy=RetryPolicy(maximum_attempts=3),
                    )
                    for i in range(job.activities)
                )
            )
        )
