"""The worker's lifecycle: one state, and the order in which the sides start and stop.

CREATED ─run()─▶ STARTING ─activity side started─▶ RUNNING ─▶ SHUTTING_DOWN ─▶ STOPPED
                    │ (DescribeNamespace, shared state,        │ shutdown(), a side
                    │  children ready)                         │ failed, or cancelled
                    └────────── start failed ──▶ FAILED ◀──────┘ (ended with an error)

run_sides:  start the activity side ─▶ run temporalio's worker and the activity side
            until shutdown is requested or one of them ends (that is a failure:
            on_fatal_error) ─▶ shutdown_sides ─▶ STOPPED / FAILED (and raise)
shutdown_sides, at once: temporalio's worker (workflows, local activities) and the
    activity side (stop polling, ShutdownWorker, drain for graceful_shutdown_timeout
    then cancel, heartbeats); the pool stops only after temporalio's worker when its
    local activities run in the children
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import temporalio.worker

from .._errors import PoolError
from .._local import LocalActivityExecutor
from .activity_side import ActivitySide

__all__ = ["Lifecycle", "Sides", "State", "run_sides"]

logger = logging.getLogger("pool.worker")


class State(enum.Enum):
    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    SHUTTING_DOWN = "shutting down"
    STOPPED = "stopped"
    FAILED = "failed"


# The transitions a worker may make; any other is a bug of ours.
_NEXT = {
    State.CREATED: {State.STARTING},
    State.STARTING: {State.RUNNING, State.FAILED},
    State.RUNNING: {State.SHUTTING_DOWN},
    State.SHUTTING_DOWN: {State.STOPPED, State.FAILED},
}


class Lifecycle:
    """The worker's state, and the events its waiters wait on.

    A shutdown request is a latch apart from the state: it may come before :meth:`run`
    (then the worker stops as soon as it has started) and is never undone.
    """

    def __init__(self) -> None:
        self.state = State.CREATED
        self.shutdown_requested = asyncio.Event()
        self._ready = asyncio.Event()  # RUNNING was reached
        self._ended = asyncio.Event()  # STOPPED or FAILED

    def __repr__(self) -> str:
        return f"<Lifecycle {self.state.value}>"

    def move(self, state: State) -> None:
        if state not in _NEXT.get(self.state, ()):
            raise RuntimeError(f"pool.Worker cannot go from {self.state.value} to {state.value}")
        self.state = state
        if state is State.RUNNING:
            self._ready.set()
        elif state in (State.STOPPED, State.FAILED):
            self._ended.set()

    @property
    def started(self) -> bool:
        return self.state is not State.CREATED

    @property
    def was_ready(self) -> bool:
        """The worker reached RUNNING (it may have stopped since)."""
        return self._ready.is_set()

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def describe(self) -> str:
        """The readiness check's answer: "ok" or what the worker is doing instead."""
        if self.ended:
            return "shut down"
        if self.shutdown_requested.is_set():
            return "shutting down"
        return "ok" if self.was_ready else "starting"

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def wait_ended(self) -> None:
        await self._ended.wait()

    async def wait_ready_or_ended(self) -> None:
        ready = asyncio.ensure_future(self._ready.wait())
        done = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait([ready, done], return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            done.cancel()


@dataclass(frozen=True)
class Sides:
    """What the worker runs, built by its constructor."""

    activity: ActivitySide | None  # ours: remote activities
    inner: temporalio.worker.Worker | None  # temporalio's: workflows, local activities
    local_in_pool: LocalActivityExecutor | None  # local activities in the pool's children
    local_threads: concurrent.futures.ThreadPoolExecutor | None  # our own, shut at the end


async def run_sides(
    sides: Sides,
    lifecycle: Lifecycle,
    graceful: timedelta,
    on_fatal_error: Callable[[BaseException], Awaitable[None]] | None,
) -> None:
    """Start, run until shutdown or a failure, shut down; raise the failure."""
    await _start(sides, lifecycle)
    tasks = _run_tasks(sides, lifecycle)
    exception = await _until_end(tasks, on_fatal_error)
    tasks["shutdown"].cancel()
    lifecycle.move(State.SHUTTING_DOWN)
    if sides.inner is None:  # temporalio's worker says it itself
        logger.info(
            "Beginning worker shutdown, will wait %s before cancelling activities", graceful
        )
    await shutdown_sides(sides, tasks, graceful)
    lifecycle.move(State.FAILED if exception is not None else State.STOPPED)
    if exception is not None:
        raise exception


async def _start(sides: Sides, lifecycle: Lifecycle) -> None:
    """STARTING -> RUNNING once the activity side is up, or FAILED (what it left closed)."""
    try:
        if sides.activity is not None:
            await sides.activity.start()
    except BaseException:
        with contextlib.suppress(Exception):
            if sides.activity is not None:
                await sides.activity.close()
        lifecycle.move(State.FAILED)
        raise
    lifecycle.move(State.RUNNING)


def _run_tasks(sides: Sides, lifecycle: Lifecycle) -> dict[str, asyncio.Task[Any]]:
    tasks: dict[str, asyncio.Task[Any]] = {
        "shutdown": asyncio.create_task(lifecycle.shutdown_requested.wait()),
    }
    if sides.inner is not None:
        tasks["workflows"] = asyncio.create_task(sides.inner.run(), name="workflow-worker")
    if sides.activity is not None:
        tasks["activities"] = asyncio.create_task(sides.activity.run(), name="activity-worker")
    return tasks


async def _until_end(
    tasks: dict[str, asyncio.Task[Any]],
    on_fatal_error: Callable[[BaseException], Awaitable[None]] | None,
) -> BaseException | None:
    """Wait for a shutdown request or a side's end; the failure to raise, if any."""
    exception: BaseException | None = None
    try:
        await asyncio.shield(asyncio.wait(tasks.values(), return_when=asyncio.FIRST_COMPLETED))
        for name, task in tasks.items():
            if name != "shutdown" and task.done():
                exception = task.exception() or PoolError(
                    f"The {name} side of the worker stopped unexpectedly"
                )
                break
        if exception is not None:
            logger.error("Worker failed, shutting down", exc_info=exception)
            if on_fatal_error is not None:
                try:
                    await on_fatal_error(exception)
                except Exception:
                    logger.warning("Fatal error handler failed", exc_info=True)
    except asyncio.CancelledError as err:
        logger.info("Worker cancelled, shutting down")
        exception = err
    return exception


async def shutdown_sides(
    sides: Sides, tasks: dict[str, asyncio.Task[Any]], graceful: timedelta
) -> None:
    """Both sides at once; errors are logged, never raised."""
    steps: list[Awaitable[None]] = []
    inner: asyncio.Future[None] | None = None
    if sides.inner is not None:
        inner = asyncio.ensure_future(_inner_shutdown(sides.inner, tasks.get("workflows")))
        steps.append(inner)
    if sides.activity is not None:
        # Local activities run in the pool too: it stops once temporalio's worker is
        # done, unless the activity side failed (a crash loop: no child may come back
        # for the local activities waiting for one).
        failed = "activities" in tasks and tasks["activities"].done()
        wait_for_local = sides.local_in_pool is not None and not failed
        steps.append(
            sides.activity.shutdown(
                graceful.total_seconds(), before_close=inner if wait_for_local else None
            )
        )
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            logger.error("Error during shutdown", exc_info=result)
    for task in tasks.values():
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning
    if sides.local_threads is not None:
        sides.local_threads.shutdown(wait=False)


async def _inner_shutdown(
    inner: temporalio.worker.Worker, run_task: asyncio.Task[Any] | None
) -> None:
    if run_task is not None and run_task.done():
        return
    await inner.shutdown()
    if run_task is not None:
        with contextlib.suppress(BaseException):
            await run_task
