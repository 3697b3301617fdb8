"""Sync activities in the user's ThreadPoolExecutor: the innermost step for them.

    ExecuteActivityInput ─▶ loop.run_in_executor(threads, run_in_thread, ...) in a copy
        of this context ─▶ the activity, with its own activity context in the thread
        ─▶ the value or the error

A cancel sets the context's events and raises ``CancelledError`` in the thread
(``ThreadCancelRaiser``), unless the activity opted out with
``no_thread_cancel_exception``. Its heartbeats go through the outbound chain, on
the loop, as stock's do.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from typing import Any

import temporalio.activity
import temporalio.common
import temporalio.converter
import temporalio.worker

import runner.context
from pool.activity.threads import ThreadCancelRaiser, run_in_thread

from .task import CancelTargets, Task

__all__ = ["ThreadExecutor"]


class ThreadExecutor:
    kind = "thread"
    takes_child = False

    def __init__(
        self,
        threads: concurrent.futures.ThreadPoolExecutor,
        *,
        worker_shutdown: threading.Event,
        metric_meter: temporalio.common.MetricMeter | None,
    ) -> None:
        self.threads: concurrent.futures.ThreadPoolExecutor | None = threads
        self._worker_shutdown = worker_shutdown
        self._metric_meter = metric_meter

    def targets(self, defn: temporalio.activity._Definition) -> CancelTargets:
        raiser = None if defn.no_thread_cancel_exception else ThreadCancelRaiser()
        return CancelTargets.new(in_loop=False, raiser=raiser)

    def deliver_cancel(self, task: Task) -> None:
        assert task.cancel is not None
        if task.targets is not None:
            task.targets.set(task.cancel)

    async def run(
        self,
        task: Task,
        input: temporalio.worker.ExecuteActivityInput,
        dc: temporalio.converter.DataConverter,
    ) -> Any:
        assert task.innermost is not None and task.targets is not None
        loop = asyncio.get_running_loop()
        # The thread's heartbeats go through the outbound chain, on this loop, in the
        # activity context (stock does the same).
        chain_heartbeat = task.innermost.heartbeat
        assert chain_heartbeat is not None
        context = contextvars.copy_context()

        def heartbeat(*details: Any) -> None:
            loop.call_soon_threadsafe(lambda: chain_heartbeat(*details), context=context)

        targets = task.targets
        raiser = targets.thread_raiser
        context_kwargs: dict[str, Any] = {
            "info": task.info,
            "heartbeat": heartbeat,
            "cancelled_event": targets.thread_cancelled,
            "worker_shutdown_event": self._worker_shutdown,
            "shield": raiser.shielded if raiser else None,
            "payload_converter": runner.context.current_context().payload_converter,
            "cancellation_details": targets.holder,
            "metric_meter": self._metric_meter,
        }
        # The thread runs in a copy of this context, so context variables the
        # interceptors set reach the activity (stock does the same).
        return await loop.run_in_executor(
            self.threads,
            contextvars.copy_context().run,
            run_in_thread,
            context_kwargs,
            raiser,
            input.fn,
            tuple(input.args),
        )
