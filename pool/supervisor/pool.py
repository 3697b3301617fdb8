"""The process pool: the I/O facade that wires the scheduler and the supervision.

    reserve() ──▶ Scheduler.promise: an idle child (or a busy one, lookahead) is
                  promised to a poller before it polls
    run(task) ──▶ Scheduler.take_idle ──▶ task pipe ──▶ child ──▶ TaskDone ──▶ future resolved
    cancel()  ──▶ control pipe (+ a kill timer: cancel_grace, then SIGTERM, SIGKILL)
    sentinel readable ──▶ Supervision.on_exit: SIGKILL its process group (the activity's
                          subprocesses), fail its task, start a replacement (at once,
                          or after a backoff when children keep dying)
    failed before ready ─▶ a start failure (ChildStartError): fatal at start; for a
                          replacement, counted towards the crash loop (a child
                          killed from outside while starting is just a death)
    memory monitor ──▶ psutil RSS: recycle after the task, or kill over the hard limit

Everything runs on the worker's asyncio loop: pipes and process sentinels are
registered with ``loop.add_reader``, so a dead child is noticed at once without
a polling loop or a helper thread. The rooms: pool.supervisor.scheduler (which child,
how many promises: pure), pool.supervisor.policy (recycle, memory, what a death means:
pure), pool.supervisor.supervision (the children's messages and deaths),
pool.supervisor.children (one child's process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from multiprocess import get_context

from runner import ActivitySpec, CancelTask, RunTask, TaskDone
from runner.report import ReportSettings

from .._changes import Changes
from .._config import PoolConfig
from .._errors import PoolError
from .children import (
    Child,
    ChildKilled,
    ChildSnapshot,
    ChildState,
    child_spec_template,
    preload_modules,
    task_frame,
)
from .lookahead import Lookahead
from .scheduler import Reservation, Scheduler
from .supervision import Supervision

__all__ = ["PoolSnapshot", "ProcessPool"]

logger = logging.getLogger("pool.supervisor")


@dataclass(frozen=True)
class PoolSnapshot:
    size: int
    children: tuple[ChildSnapshot, ...]
    idle: int
    busy: int
    reserved: int
    starts: int
    deaths: int
    recycles: int
    kills: int
    replacement_seconds: tuple[float, ...] = field(default=())
    retired: tuple[ChildSnapshot, ...] = field(default=())
    # Polls made for a busy child (lookahead) or beyond every child (prefetch) ...
    promised_ahead: int = 0
    # ... and the tasks that arrived before any child was free and waited for one:
    # how many, their total and longest wait in seconds.
    tasks_waited: int = 0
    task_wait_seconds: float = 0.0
    task_wait_max: float = 0.0
    # Replacement children that failed before they were ready (the crash loop counts
    # these), and replacements delayed by the respawn backoff, with their total delay.
    start_failures: int = 0
    respawns_delayed: int = 0
    respawn_delay_seconds: float = 0.0
    # Tasks written to a child that had died idle (unnoticed yet), then given to another.
    tasks_redispatched: int = 0


class ProcessPool:
    """A supervised pool of child processes running sync activities.

    Pass it to :class:`pool.Worker` as ``activity_executor`` (or let the worker
    build one). It is not a ``concurrent.futures.Executor``: it runs registered
    activities, each sent to every child once, not arbitrary callables.
    """

    def __init__(self, processes: int | None = None, *, config: PoolConfig | None = None) -> None:
        self.config = (config or PoolConfig()).with_processes(processes)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.lookahead = Lookahead(self.config.lookahead)
        self._scheduler: Scheduler[Child] = Scheduler(self.lookahead, self.config.prefetch)
        self._changes = Changes()  # the pool changed: reserve() and stop() look again
        self._supervision = Supervision(self.config, self._scheduler, self._changes.notify)
        self._started = False
        self._monitor: asyncio.Task[None] | None = None

    # -- public read-only state --------------------------------------------------------

    @property
    def size(self) -> int:
        return self.config.size

    @property
    def started(self) -> bool:
        return self._started

    @property
    def pids(self) -> list[int]:
        children = self._supervision.children.values()
        return [c.pid for c in children if c.pid and c.state is not ChildState.DEAD]

    def snapshot(self) -> PoolSnapshot:
        supervision, scheduler = self._supervision, self._scheduler
        children = sorted(supervision.children.values(), key=_index)
        stats = supervision.stats
        return PoolSnapshot(
            size=self.size,
            children=tuple(c.snapshot() for c in children),
            idle=sum(1 for c in children if c.state is ChildState.IDLE),
            busy=sum(1 for c in children if c.state is ChildState.BUSY),
            reserved=scheduler.reserved,
            starts=stats["starts"],
            deaths=stats["deaths"],
            recycles=stats["recycles"],
            kills=stats["kills"],
            replacement_seconds=tuple(supervision.replacement_seconds),
            retired=tuple(supervision.retired),
            promised_ahead=scheduler.promised_ahead,
            tasks_waited=scheduler.tasks_waited,
            task_wait_seconds=scheduler.wait_seconds,
            task_wait_max=scheduler.wait_max,
            start_failures=stats["start_failures"],
            respawns_delayed=stats["respawns_delayed"],
            respawn_delay_seconds=supervision.respawn_delay_seconds,
            tasks_redispatched=stats["redispatched"],
        )

    def __repr__(self) -> str:
        if not self._started:
            return f"<ProcessPool [not started | size: {self.size}, {self.config.start_method}]>"
        s = self.snapshot()
        return (
            f"<ProcessPool [Children: {len(self.pids)} alive, {s.busy} busy, {s.idle} idle, "
            f"{s.reserved} reserved | starts: {s.starts}, deaths: {s.deaths}, "
            f"recycles: {s.recycles}, kills: {s.kills}]>"
        )

    # -- lifecycle -------------------------------------------------------------------

    async def start(
        self,
        *,
        activities: Mapping[str, ActivitySpec],
        converter: Any,
        heartbeat_sender: Any,
        on_fatal: Callable[[BaseException], None],
        report: ReportSettings | None = None,
    ) -> None:
        """Start every child and wait until each has loaded the activities and run the
        initializer. A child that fails before it is ready fails the start with its
        :class:`ChildStartError`. ``report``: how children send large results to the
        server themselves (None: they never do)."""
        if self._started:
            raise PoolError("This ProcessPool is already running; give each worker its own")
        self._started = True
        self._loop = asyncio.get_running_loop()
        ctx = get_context(self.config.start_method)
        if self.config.start_method == "forkserver":
            ctx.set_forkserver_preload(preload_modules(activities, self.config.preload))
        template = child_spec_template(activities, converter, heartbeat_sender, self.config, report)
        self._supervision.begin(self._loop, ctx, template, on_fatal)
        for index in range(self.size):
            self._supervision.spawn(index)
        try:
            await self._wait_all_ready(self.config.seconds("start_timeout"))
        except BaseException:
            await self.stop(timeout=0)
            raise
        self._supervision.up = True
        self._monitor = asyncio.create_task(self._monitor_memory(), name="pool-memory-monitor")

    async def _wait_all_ready(self, timeout: float) -> None:
        supervision = self._supervision

        def ready() -> bool:
            return supervision.start_error is not None or all(
                c.state is not ChildState.STARTING for c in supervision.children.values()
            )

        ready_in_time = await self._changes.until(ready, timeout)
        if supervision.start_error is not None:
            raise supervision.start_error
        if not ready_in_time:
            children = supervision.children.values()
            slow = [c.pid for c in children if c.state is ChildState.STARTING]
            raise PoolError(
                f"Child processes {slow} did not report ready within {timeout:g} s. "
                "Importing the activity modules may be slow or hang; raise "
                "PoolConfig.start_timeout or check what the modules do at import."
            )

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop every child: ``Stop`` to idle ones, then SIGTERM/SIGKILL past ``timeout``."""
        supervision = self._supervision
        supervision.close()
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor

        def all_dead() -> bool:
            return not supervision.alive()

        if not await self._changes.until(all_dead, timeout):
            for child in supervision.alive():
                child.signal(signal.SIGTERM)
            if not await self._changes.until(
                all_dead, self.config.seconds("kill_escalation") + 1.0
            ):
                for child in supervision.alive():
                    child.signal(signal.SIGKILL)
                await self._changes.until(all_dead, None)

    # -- reservations and tasks ----------------------------------------------------------

    def free(self) -> int:
        """Idle children not yet promised to a poller."""
        return self._scheduler.free()

    def promisable(self) -> int:
        """Promises :meth:`reserve` can still make: idle children and busy children
        whose lookahead window is open, each backing ``lookahead.depth()`` polls (1
        unless tasks are much shorter than a poll round trip), plus
        ``PoolConfig.prefetch``, less those made."""
        assert self._loop is not None
        return self._scheduler.promisable(self._loop.time())

    async def reserve(self) -> Reservation:
        """Wait until a child can be promised to the next task: an idle one, or a busy
        one expected to finish within a poll round trip (``PoolConfig.lookahead``).

        With ``PoolConfig.prefetch`` = N, up to N promises more than that: those
        tasks wait in :meth:`run` for the next child that finishes. The promise holds
        until :meth:`run` uses it or the caller releases it.
        """
        supervision = self._supervision
        if self.promisable() <= 0 and not supervision.closing:
            await self._changes.until(lambda: self.promisable() > 0 or supervision.closing, None)
        if supervision.closing:
            raise PoolError("The process pool is stopping")
        self._scheduler.promise()
        return Reservation(self._give_back)

    def claim(self) -> Reservation:
        """Promise a child now, even beyond what :meth:`reserve` allows: for work already
        accepted (a local activity). :meth:`run` then waits for an idle child if need be,
        and no poll is made for the child it is about to take."""
        self._scheduler.promise_now()
        return Reservation(self._give_back)

    def _give_back(self, notify: bool) -> None:
        self._scheduler.give_back()
        if notify:
            self._changes.notify()

    async def run(
        self, task: RunTask, *, reservation: Reservation | None = None
    ) -> tuple[int, asyncio.Future[TaskDone]]:
        """Start ``task`` on an idle child. Returns (pid, future of its TaskDone).

        ``reservation`` (from :meth:`reserve` or :meth:`claim`) is used here, whether
        the task starts or not. Without one, or with one already released (a task that
        waited for its activity type's limit), the task takes the next idle child
        ahead of the pollers' promises.
        """
        assert self._loop is not None
        # The promise stays counted until the task has its child: a task waiting here
        # for a busy child still holds that child, so no second poll is made for it.
        try:
            child = await self._deliver(task_frame(task))
        except BaseException:
            if reservation is not None:
                reservation.use()
            self._changes.notify()
            raise
        if reservation is not None:
            reservation.use()
        child.state = ChildState.BUSY
        child.task = task
        child.future = self._loop.create_future()
        child.started_at = now = self._loop.time()
        opens = self._scheduler.task_started(child, task.activity_type, now)
        if opens is not None:
            child.window_handle = self._loop.call_at(opens, self._changes.notify)
        return child.pid, child.future

    async def _deliver(self, data: list[bytes | memoryview]) -> Child:
        """Write a task to an idle child (:meth:`Scheduler.take_idle`); the child that
        took it. A child that died idle, its sentinel not handled yet, refuses the
        write (EPIPE): the task never reached it, so the next idle child (or the
        replacement) gets it, and ``Supervision.on_exit`` logs that death as idle.
        """
        while True:
            if not self._scheduler.idle:
                # Promised to a busy child that has not finished yet (lookahead,
                # prefetch), or a promised child died and its replacement is coming.
                await self._wait_for_idle()
            child = self._scheduler.take_idle()
            try:
                child.send_task(data)
            except OSError as err:
                self._supervision.stats["redispatched"] += 1
                logger.info(
                    "Child %d died before it could take a task (%s): giving the task to "
                    "another child",
                    child.pid,
                    type(err).__name__,
                )
                continue
            return child

    async def _wait_for_idle(self) -> None:
        self._scheduler.wait_began()
        assert self._loop is not None
        began = self._loop.time()
        supervision = self._supervision
        await self._changes.until(lambda: bool(self._scheduler.idle) or supervision.closing, None)
        self._scheduler.wait_ended(self._loop.time() - began)
        if not self._scheduler.idle:
            raise PoolError("The process pool stopped before the task could start")

    def cancel(self, pid: int, task_id: int, details: Any, reason: str) -> None:
        """Cancel a running task cooperatively; kill its child after ``cancel_grace``."""
        child = self._supervision.by_pid.get(pid)
        if child is None or child.task is None or child.task.task_id != task_id:
            return
        child.send_control(CancelTask(task_id=task_id, details=details))
        if child.kill_handle is None and self._loop is not None:
            grace = self.config.seconds("cancel_grace")
            child.kill_handle = self._loop.call_later(
                grace,
                self._supervision.kill_for,
                child,
                task_id,
                ChildKilled(
                    child.pid,
                    f"{reason}, and the activity did not return within cancel_grace={grace:g} s",
                ),
            )

    def kill_task(self, pid: int, task_id: int, error: ChildKilled) -> None:
        """Kill the child running ``task_id`` now (its future fails with ``error``)."""
        child = self._supervision.by_pid.get(pid)
        if child is not None:
            self._supervision.kill_for(child, task_id, error)

    def broadcast_shutdown(self) -> None:
        """Make ``activity.is_worker_shutdown()`` true in every child."""
        self._supervision.broadcast_shutdown()

    # -- memory -----------------------------------------------------------------------

    async def _monitor_memory(self) -> None:
        interval = self.config.seconds("memory_check_interval")
        while True:
            await asyncio.sleep(interval)
            self.sample()
            self._supervision.check_memory()

    def sample(self) -> None:
        """Read RSS and CPU time of every live child (psutil)."""
        self._supervision.sample()


def _index(child: Child) -> int:
    return child.index
