"""Async activities on the worker's own loop: the innermost step for them.

    ExecuteActivityInput ─▶ await input.fn(*input.args) in the chain's task

A cancel sets the activity context's events and cancels the chain's task (stock's
message, "Activity cancelled").
"""

from __future__ import annotations

from typing import Any

import temporalio.activity
import temporalio.converter
import temporalio.worker

from .task import CancelTargets, Task

__all__ = ["CANCEL_MESSAGE", "LoopExecutor"]

# What a cancelled async activity's CancelledError says (stock's words).
CANCEL_MESSAGE = "Activity cancelled"


class LoopExecutor:
    kind = "async"
    takes_child = False
    threads = None

    def targets(self, defn: temporalio.activity._Definition) -> CancelTargets:
        return CancelTargets.new(in_loop=True, raiser=None)

    def deliver_cancel(self, task: Task) -> None:
        assert task.cancel is not None
        if task.targets is not None:
            task.targets.set(task.cancel)
        if task.chain is not None:
            task.chain.cancel(CANCEL_MESSAGE)

    async def run(
        self,
        task: Task,
        input: temporalio.worker.ExecuteActivityInput,
        dc: temporalio.converter.DataConverter,
    ) -> Any:
        return await input.fn(*input.args)
