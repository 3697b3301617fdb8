"""The supervisor: start, watch, recycle and kill the child processes.

    reserve() ──▶ an idle child is promised to a poller before it polls
    run(task) ──▶ task pipe ──▶ child ──▶ TaskDone ──▶ future resolved
    cancel()  ──▶ control pipe (+ a kill timer: cancel_grace, then SIGTERM, SIGKILL)
    sentinel readable ──▶ the child died: SIGKILL its process group (the activity's
                          subprocesses), fail its task, start a replacement (at once,
                          or after a backoff when children keep dying)
    failed before ready ─▶ a start failure (ChildStartError): fatal at start; for a
                          replacement, counted towards the crash loop (a child
                          killed from outside while starting is just a death)
    memory monitor ──▶ psutil RSS: recycle after the task, or kill over the hard limit

Everything runs on the worker's asyncio loop: pipes and process sentinels are
registered with ``loop.add_reader``, so a dead child is noticed at once without
a polling loop or a helper thread. Decisions (what to do with a child after a
task, whether deaths make a crash loop) are pure functions in pool.supervisor.policy.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import multiprocessing
import os
import select
import signal
import sys
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cloudpickle
import multiprocess
import psutil
from multiprocess import get_context

import runner
from runner import (
    ActivitySpec,
    CancelTask,
    ChildBroken,
    ChildLog,
    ChildReady,
    ChildSpec,
    RunTask,
    Stop,
    TaskDone,
    WorkerShutdown,
    child_main,
    done_from_wire,
    dumps,
    loads,
    task_to_wire,
)
from runner.frames import FrameReader, send_frame

from .._config import PoolConfig
from .._errors import (
    ChildProcessDied,
    ChildStartError,
    CrashLoopError,
    PoolError,
    WorkerConfigError,
    describe_exit,
)
from .lookahead import Lookahead
from .policy import (
    after_task,
    is_crash_loop,
    is_start_failure,
    memory_verdict,
    recent,
    respawn_delay,
)
from .scheduler import Scheduler

__all__ = [
    "ChildKilled",
    "ChildMemoryExceeded",
    "ChildSnapshot",
    "PoolSnapshot",
    "ProcessPool",
    "TaskTransferError",
]

logger = logging.getLogger("pool.supervisor")


class _State(enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"
    DEAD = "dead"


class ChildKilled(PoolError):
    """The supervisor killed a child on purpose (cancel grace, deadline, memory)."""

    def __init__(self, pid: int, reason: str) -> None:
        self.pid = pid
        self.reason = reason
        super().__init__(f"Child process {pid} was killed: {reason}")


class TaskTransferError(PoolError):
    """A task's arguments could not be pickled for the child."""


class ChildMemoryExceeded(ChildKilled):
    """A child went over ``hard_memory_per_child`` while running a task."""


@dataclass(eq=False)
class _Child:
    index: int
    process: Any
    task_conn: Any
    ctrl_conn: Any
    reader: FrameReader
    spawned_at: float
    pid: int = 0
    state: _State = _State.STARTING
    task: RunTask | None = None
    future: asyncio.Future[TaskDone] | None = None
    tasks_done: int = 0
    recycle_reason: str | None = None
    kill_reason: ChildKilled | None = None
    kill_handle: asyncio.TimerHandle | None = None
    rss: int = 0
    peak_rss: int = 0
    cpu_seconds: float = 0.0
    ready_at: float | None = None
    psutil_proc: psutil.Process | None = None
    started_at: float = 0.0  # loop clock, when the current task was sent
    # Wakes the pollers when this busy child's lookahead window opens (pool.supervisor.scheduler).
    window_handle: asyncio.TimerHandle | None = None
    # Why it cannot start, as it said before exiting (ChildBroken).
    start_error: ChildStartError | None = None


@dataclass(frozen=True)
class ChildSnapshot:
    index: int
    pid: int
    state: str
    activity_type: str | None
    tasks_done: int
    rss: int
    peak_rss: int
    cpu_seconds: float


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


def preload_modules(activities: Mapping[str, ActivitySpec], extra: tuple[str, ...]) -> list[str]:
    """Modules the fork server imports once, so a new child costs milliseconds.

    Ours and temporalio's, the activities' modules, and the modules the main script
    imported: a child re-imports the main script (as ``__mp_main__``, like spawn),
    and with its imports already loaded that is cheap. Never ``__main__`` itself: an
    unguarded script would run its whole body in the fork server.
    """
    modules = [
        runner.FORKSERVER_PRELOAD,  # removes the fork server's socket when it exits
        "runner",
        "shared_state",
        "temporalio.activity",
        "temporalio.converter",
        "cloudpickle",
    ]
    for spec in activities.values():
        fn = getattr(spec.fn, "__func__", spec.fn)
        module = getattr(fn, "__module__", None)
        if module and module != "__main__" and module in sys.modules:
            modules.append(module)
    main = sys.modules.get("__main__")
    if main is not None and getattr(main, "__file__", None):
        for value in list(vars(main).values()):
            name = value.__name__ if isinstance(value, types.ModuleType) else None
            name = name or getattr(value, "__module__", None)
            if isinstance(name, str) and name != "__main__" and name in sys.modules:
                modules.append(name)
    modules.extend(extra)
    return list(dict.fromkeys(modules))


# -- the pool ------------------------------------------------------------------------


class ProcessPool:
    """A supervised pool of child processes running sync activities.

    Pass it to :class:`pool.Worker` as ``activity_executor`` (or let the worker
    build one). It is not a ``concurrent.futures.Executor``: it runs registered
    activities, each sent to every child once, not arbitrary callables.
    """

    def __init__(self, processes: int | None = None, *, config: PoolConfig | None = None) -> None:
        self.config = (config or PoolConfig()).with_processes(processes)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._children: dict[int, _Child] = {}  # by index
        self._by_pid: dict[int, _Child] = {}
        self.lookahead = Lookahead(self.config.lookahead)
        self._scheduler: Scheduler[_Child] = Scheduler(self.lookahead, self.config.prefetch)
        self._waiters: list[asyncio.Future[None]] = []
        self._spec_template: dict[str, Any] | None = None
        self._ctx: Any = None
        self._on_fatal: Callable[[BaseException], None] = lambda err: None
        self._deaths: collections.deque[float] = collections.deque()  # of ready children
        self._start_failures: collections.deque[float] = collections.deque()
        self._start_error: ChildStartError | None = None  # at start: fatal at once
        self._last_start_failure: tuple[str | None, str | None] | None = None  # logged
        self._respawns: dict[int, asyncio.TimerHandle] = {}  # index -> delayed respawn
        self._respawn_delay_seconds = 0.0
        self._closing = False
        self._started = False
        self._up = False  # every first child was ready
        self._shutdown_sent = False
        self._monitor: asyncio.Task[None] | None = None
        self._stats = collections.Counter[str]()
        self._replacement_seconds: collections.deque[float] = collections.deque(maxlen=256)
        self._retired: collections.deque[ChildSnapshot] = collections.deque(maxlen=256)
        self._died_at: dict[int, float] = {}  # index -> when its predecessor died

    # -- public read-only state --------------------------------------------------------

    @property
    def size(self) -> int:
        return self.config.size

    @property
    def started(self) -> bool:
        return self._started

    @property
    def pids(self) -> list[int]:
        return [c.pid for c in self._children.values() if c.pid and c.state is not _State.DEAD]

    def snapshot(self) -> PoolSnapshot:
        children = tuple(_snapshot(c) for c in sorted(self._children.values(), key=_index))
        return PoolSnapshot(
            size=self.size,
            children=children,
            idle=sum(1 for c in self._children.values() if c.state is _State.IDLE),
            busy=sum(1 for c in self._children.values() if c.state is _State.BUSY),
            reserved=self._scheduler.reserved,
            starts=self._stats["starts"],
            deaths=self._stats["deaths"],
            recycles=self._stats["recycles"],
            kills=self._stats["kills"],
            replacement_seconds=tuple(self._replacement_seconds),
            retired=tuple(self._retired),
            promised_ahead=self._scheduler.promised_ahead,
            tasks_waited=self._scheduler.tasks_waited,
            task_wait_seconds=self._scheduler.wait_seconds,
            task_wait_max=self._scheduler.wait_max,
            start_failures=self._stats["start_failures"],
            respawns_delayed=self._stats["respawns_delayed"],
            respawn_delay_seconds=self._respawn_delay_seconds,
            tasks_redispatched=self._stats["redispatched"],
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
    ) -> None:
        """Start every child and wait until each has loaded the activities and run the
        initializer. A child that fails before it is ready fails the start with its
        :class:`ChildStartError`."""
        if self._started:
            raise PoolError("This ProcessPool is already running; give each worker its own")
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._on_fatal = on_fatal
        self._ctx = get_context(self.config.start_method)
        if self.config.start_method == "forkserver":
            self._ctx.set_forkserver_preload(preload_modules(activities, self.config.preload))
        self._spec_template = {
            "activities": cloudpickle.dumps(dict(activities)),
            "converter": cloudpickle.dumps(converter),
            "heartbeat_sender": dumps(heartbeat_sender),
            "log_level": logging.getLogger().getEffectiveLevel(),
            "authkeys": (
                bytes(multiprocessing.current_process().authkey),
                bytes(multiprocess.current_process().authkey),
            ),
            "initializer": self._pickled_initializer(),
            "native_threads": self.config.native_thread_limit(),
            "cpu_affinity": self.config.cpu_affinity,
        }
        for index in range(self.size):
            self._spawn(index)
        try:
            await self._wait_all_ready(self.config.seconds("start_timeout"))
        except BaseException:
            await self.stop(timeout=0)
            raise
        self._up = True
        self._monitor = asyncio.create_task(self._monitor_memory(), name="pool-memory-monitor")

    def _pickled_initializer(self) -> bytes | None:
        initializer = self.config.initializer
        if initializer is None:
            return None
        try:
            return cloudpickle.dumps((initializer, self.config.initargs))
        except Exception as err:
            raise WorkerConfigError(
                f"The initializer {getattr(initializer, '__qualname__', initializer)!r} or its "
                f"initargs cannot be serialised with cloudpickle to send them to the child "
                f"processes: {type(err).__name__}: {err}. Pass a module-level function and "
                "picklable arguments."
            ) from err

    async def _wait_all_ready(self, timeout: float) -> None:
        def ready() -> bool:
            return self._start_error is not None or all(
                c.state is not _State.STARTING for c in self._children.values()
            )

        ready_in_time = await self._wait_for(ready, timeout)
        if self._start_error is not None:
            raise self._start_error
        if not ready_in_time:
            slow = [c.pid for c in self._children.values() if c.state is _State.STARTING]
            raise PoolError(
                f"Child processes {slow} did not report ready within {timeout:g} s. "
                "Importing the activity modules may be slow or hang; raise "
                "PoolConfig.start_timeout or check what the modules do at import."
            )

    def _spawn(self, index: int) -> _Child:
        assert self._spec_template is not None and self._loop is not None
        ctx = self._ctx
        task_parent, task_child = ctx.Pipe(duplex=True)
        ctrl_child, ctrl_parent = ctx.Pipe(duplex=False)
        spec = ChildSpec(index=index, **self._spec_template)
        process = ctx.Process(
            target=child_main,
            args=(dumps(spec), task_child, ctrl_child),
            name=f"pool-child-{index}",
            daemon=True,
        )
        process.start()
        # Our copies of the child's ends must go, or we would never see EOF.
        task_child.close()
        ctrl_child.close()
        child = _Child(
            index=index,
            process=process,
            task_conn=task_parent,
            ctrl_conn=ctrl_parent,
            reader=FrameReader(task_parent.fileno()),
            spawned_at=time.monotonic(),
            pid=process.pid,
        )
        self._children[index] = child
        self._by_pid[child.pid] = child
        self._stats["starts"] += 1
        self._loop.add_reader(task_parent.fileno(), self._on_readable, child)
        self._loop.add_reader(process.sentinel, self._on_exit, child)
        return child

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop every child: ``Stop`` to idle ones, then SIGTERM/SIGKILL past ``timeout``."""
        self._closing = True
        for handle in self._respawns.values():
            handle.cancel()
        self._respawns.clear()
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        for child in list(self._children.values()):
            if child.state is _State.IDLE:
                self._send_stop(child)

        def all_dead() -> bool:
            return not self._alive()

        if not await self._wait_for(all_dead, timeout):
            for child in self._alive():
                self._signal(child, signal.SIGTERM)
            if not await self._wait_for(all_dead, self.config.seconds("kill_escalation") + 1.0):
                for child in self._alive():
                    self._signal(child, signal.SIGKILL)
                await self._wait_for(all_dead, None)

    def _alive(self) -> list[_Child]:
        return [c for c in self._children.values() if c.state is not _State.DEAD]

    async def _wait_for(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until ``predicate()`` holds (re-checked on every pool change)."""
        assert self._loop is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while not predicate():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except asyncio.TimeoutError:
                return predicate()
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        return True

    def _notify(self) -> None:
        if not self._waiters:
            return
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

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

    async def reserve(self) -> None:
        """Wait until a child can be promised to the next task: an idle one, or a busy
        one expected to finish within a poll round trip (``PoolConfig.lookahead``).

        With ``PoolConfig.prefetch`` = N, up to N promises more than that: those
        tasks wait in :meth:`run` for the next child that finishes.
        """
        if self.promisable() <= 0 and not self._closing:
            await self._wait_for(lambda: self.promisable() > 0 or self._closing, None)
        if self._closing:
            raise PoolError("The process pool is stopping")
        self._scheduler.promise()

    def unreserve(self) -> None:
        """Give back a promise (the poll came back empty, or the task was async)."""
        self._scheduler.give_back()
        self._notify()

    def claim(self) -> None:
        """Promise a child now, even beyond what :meth:`reserve` allows: for work already
        accepted (a local activity). :meth:`run` then waits for an idle child if need be,
        and no poll is made for the child it is about to take."""
        self._scheduler.promise_now()

    async def run(
        self, task: RunTask, *, reserved: bool = True
    ) -> tuple[int, asyncio.Future[TaskDone]]:
        """Start ``task`` on an idle child. Returns (pid, future of its TaskDone).

        ``reserved``: the caller holds a reservation from :meth:`reserve`, used up here.
        Without one (a task that waited for its activity type's limit) the task takes
        the next idle child ahead of the pollers' promises.
        """
        assert self._loop is not None
        # The promise stays counted until the task has its child: a task waiting here
        # for a busy child still holds that child, so no second poll is made for it.
        try:
            child = await self._deliver(_task_bytes(task))
        except BaseException:
            if reserved:
                self._scheduler.give_back()
            self._notify()
            raise
        if reserved:
            self._scheduler.give_back()
        child.state = _State.BUSY
        child.task = task
        child.future = self._loop.create_future()
        child.started_at = now = self._loop.time()
        opens = self._scheduler.task_started(child, task.activity_type, now)
        if opens is not None:
            child.window_handle = self._loop.call_at(opens, self._notify)
        return child.pid, child.future

    async def _deliver(self, data: bytes) -> _Child:
        """Write a task to an idle child (:meth:`Scheduler.take_idle`); the child that
        took it. A child that died idle, its sentinel not handled yet, refuses the
        write (EPIPE): the task never reached it, so the next idle child (or the
        replacement) gets it, and ``_on_exit`` logs that death as idle.
        """
        while True:
            if not self._scheduler.idle:
                # Promised to a busy child that has not finished yet (lookahead,
                # prefetch), or a promised child died and its replacement is coming.
                await self._wait_for_idle()
            child = self._scheduler.take_idle()
            try:
                send_frame(child.task_conn.fileno(), data)
            except OSError as err:
                self._stats["redispatched"] += 1
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
        await self._wait_for(lambda: bool(self._scheduler.idle) or self._closing, None)
        self._scheduler.wait_ended(self._loop.time() - began)
        if not self._scheduler.idle:
            raise PoolError("The process pool stopped before the task could start")

    def cancel(self, pid: int, task_id: int, details: Any, reason: str) -> None:
        """Cancel a running task cooperatively; kill its child after ``cancel_grace``."""
        child = self._by_pid.get(pid)
        if child is None or child.task is None or child.task.task_id != task_id:
            return
        with contextlib.suppress(OSError):
            child.ctrl_conn.send_bytes(dumps(CancelTask(task_id=task_id, details=details)))
        if child.kill_handle is None and self._loop is not None:
            grace = self.config.seconds("cancel_grace")
            child.kill_handle = self._loop.call_later(
                grace,
                self._kill_for,
                child,
                task_id,
                ChildKilled(
                    child.pid,
                    f"{reason}, and the activity did not return within cancel_grace={grace:g} s",
                ),
            )

    def kill_task(self, pid: int, task_id: int, error: ChildKilled) -> None:
        """Kill the child running ``task_id`` now (its future fails with ``error``)."""
        child = self._by_pid.get(pid)
        if child is not None:
            self._kill_for(child, task_id, error)

    def broadcast_shutdown(self) -> None:
        """Make ``activity.is_worker_shutdown()`` true in every child."""
        self._shutdown_sent = True
        message = dumps(WorkerShutdown())
        for child in self._alive():
            with contextlib.suppress(OSError):
                child.ctrl_conn.send_bytes(message)

    # -- events from the children ------------------------------------------------------

    def _on_readable(self, child: _Child) -> None:
        try:
            messages = child.reader.feed()
        except (EOFError, OSError):
            self._forget_reader(child)
            return  # the sentinel tells us the rest
        if len(messages) == 1:
            self._on_message(child, messages[0])
            return
        self._on_messages(child, messages)

    def _drain(self, child: _Child) -> None:
        """Handle what a dead child wrote last and the loop has not read yet (a start
        failure's reason, a TaskDone). ``select`` first: never block on the pipe."""
        fd = child.task_conn.fileno()
        with contextlib.suppress(EOFError, OSError):
            while select.select([fd], [], [], 0)[0]:
                self._on_messages(child, child.reader.feed())

    def _on_messages(self, child: _Child, messages: list[bytes]) -> None:
        for data in messages:
            # One read may bring several messages: one that fails (say, a record that
            # cannot be unpickled here) must not lose the others.
            try:
                self._on_message(child, data)
            except Exception as err:
                assert self._loop is not None
                self._loop.call_exception_handler(
                    {"message": f"Message from child {child.pid} failed", "exception": err}
                )

    def _on_message(self, child: _Child, data: bytes) -> None:
        msg = loads(data)
        if type(msg) is tuple:
            self._on_task_done(child, done_from_wire(msg))
        elif isinstance(msg, ChildReady):
            self._on_ready(child)
        elif isinstance(msg, ChildLog):
            _emit_child_record(msg.record)
        elif isinstance(msg, ChildBroken):
            child.start_error = ChildStartError(
                msg.pid,
                error_type=msg.error_type,
                error_message=msg.message,
                child_traceback=msg.traceback,
            )

    def _on_ready(self, child: _Child) -> None:
        now = time.monotonic()
        child.ready_at = now
        with contextlib.suppress(psutil.Error):
            child.psutil_proc = psutil.Process(child.pid)
            child.psutil_proc.cpu_times()  # prime
        died_at = self._died_at.pop(child.index, None)
        if died_at is not None:
            self._replacement_seconds.append(now - died_at)
        if self._shutdown_sent:
            with contextlib.suppress(OSError):
                child.ctrl_conn.send_bytes(dumps(WorkerShutdown()))
        self._make_idle(child)

    def _close_window(self, child: _Child, activity_type: str | None, ran: float | None) -> None:
        self._scheduler.task_ended(child, activity_type, ran)
        if child.window_handle is not None:
            child.window_handle.cancel()
            child.window_handle = None

    def _make_idle(self, child: _Child) -> None:
        child.state = _State.IDLE
        child.task = None
        child.future = None
        if self._closing:
            self._send_stop(child)
        else:
            self._scheduler.add_idle(child)
        self._notify()

    def _on_task_done(self, child: _Child, done: TaskDone) -> None:
        if child.kill_handle is not None:
            child.kill_handle.cancel()
            child.kill_handle = None
        assert self._loop is not None
        ran = self._loop.time() - child.started_at
        activity_type = child.task.activity_type if child.task is not None else None
        self._close_window(child, activity_type, ran if done.outcome in _RAN else None)
        future, child.future = child.future, None
        child.tasks_done += 1
        if future is not None and not future.done():
            future.set_result(done)
        if child.kill_reason is not None:
            return  # being killed: the sentinel finishes the job
        reason = child.recycle_reason or after_task(child.tasks_done, child.rss, self.config)
        if reason is not None:
            self._recycle(child, reason)
        else:
            self._make_idle(child)

    def _recycle(self, child: _Child, reason: str) -> None:
        logger.info("Recycling child %d: %s", child.pid, reason)
        self._stats["recycles"] += 1
        child.task = None
        self._send_stop(child)

    def _send_stop(self, child: _Child) -> None:
        self._scheduler.forget(child)
        child.state = _State.STOPPING
        try:
            child.task_conn.send_bytes(dumps(Stop()))
        except OSError:
            self._signal(child, signal.SIGTERM)

    def _on_exit(self, child: _Child) -> None:
        assert self._loop is not None
        self._loop.remove_reader(child.process.sentinel)
        self._drain(child)
        self._forget_reader(child)
        _kill_group(child.pid)
        child.process.join(0)
        exitcode = child.process.exitcode
        was = child.state
        self._bury(child)
        expected = was is _State.STOPPING or child.kill_reason is not None or self._closing
        start_failure = (
            not expected
            and was is _State.STARTING
            and is_start_failure(child.start_error is not None, exitcode)
        )
        if not expected and not start_failure:
            self._stats["deaths"] += 1
            logger.warning(
                "Child process %d died (%s) %s",
                child.pid,
                describe_exit(exitcode),
                _doing(child, was),
            )
        future = child.future
        if future is not None and not future.done():
            task = child.task
            error: BaseException = child.kill_reason or ChildProcessDied(
                pid=child.pid,
                exitcode=exitcode,
                activity_type=task.activity_type if task else None,
                activity_id=task.info.activity_id if task else None,
            )
            future.set_exception(error)
        if not self._closing:
            now = time.monotonic()
            self._died_at[child.index] = now
            if start_failure:
                self._on_start_failure(child, exitcode, now)
            elif expected:
                self._respawn(child.index)
            else:
                self._deaths.append(now)
                self._respawn_after(child.index, recent(self._deaths, now, self.config), "died")
        self._notify()

    def _bury(self, child: _Child) -> None:
        """Take a dead child out of every place that could hand it work."""
        child.state = _State.DEAD
        self._close_window(child, None, None)
        self._scheduler.forget(child)
        if child.kill_handle is not None:
            child.kill_handle.cancel()
            child.kill_handle = None
        self._by_pid.pop(child.pid, None)
        self._retired.append(_snapshot(child))
        for conn in (child.task_conn, child.ctrl_conn):
            with contextlib.suppress(OSError):
                conn.close()

    def _on_start_failure(self, child: _Child, exitcode: int | None, now: float) -> None:
        """A child failed before it was ready (:func:`is_start_failure`): fatal at
        start (no child will ever be ready); for a replacement, counted towards the
        crash loop."""
        error = child.start_error or ChildStartError(child.pid, exitcode=exitcode)
        if not self._up:
            if self._start_error is None:
                self._start_error = error  # start() raises it; later ones say the same
                self._log_start_failure(error)
            return
        self._stats["start_failures"] += 1
        self._start_failures.append(now)
        self._log_start_failure(error)
        if is_crash_loop(self._start_failures, now, self.config):
            crash = CrashLoopError(
                len(self._start_failures), self.config.seconds("crash_loop_window"), error
            )
            crash.__cause__ = error
            self._on_fatal(crash)
            return
        self._respawn_after(child.index, len(self._start_failures), "failed to start")

    def _log_start_failure(self, error: ChildStartError) -> None:
        """Log a start failure; the child's traceback only when it says something new."""
        said = (error.error_type, error.error_message)
        if error.child_traceback and said != self._last_start_failure:
            logger.error("%s\nTraceback in the child:\n%s", error, error.child_traceback.rstrip())
        else:
            logger.error("%s", error)
        self._last_start_failure = said

    def _respawn_after(self, index: int, deaths: int, what: str) -> None:
        """Replace the child at ``index`` after the backoff for ``deaths`` recent deaths."""
        assert self._loop is not None
        delay = respawn_delay(deaths, self.config)
        if delay <= 0:
            self._respawn(index)
            return
        logger.warning(
            "%d children %s within %g s: the replacement of child %d starts in %.2f s",
            deaths,
            what,
            self.config.seconds("crash_loop_window"),
            index,
            delay,
        )
        self._stats["respawns_delayed"] += 1
        self._respawn_delay_seconds += delay
        self._respawns[index] = self._loop.call_later(delay, self._respawn, index)

    def _respawn(self, index: int) -> None:
        self._respawns.pop(index, None)
        if not self._closing:
            self._spawn(index)
            self._notify()

    def _forget_reader(self, child: _Child) -> None:
        assert self._loop is not None
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(child.task_conn.fileno())

    # -- killing -------------------------------------------------------------------------

    def _kill_for(self, child: _Child, task_id: int, error: ChildKilled) -> None:
        if child.state is _State.DEAD or child.task is None or child.task.task_id != task_id:
            return
        if child.kill_reason is not None:
            return
        logger.warning("Killing child %d: %s", child.pid, error.reason)
        self._stats["kills"] += 1
        child.kill_reason = error
        child.kill_handle = None
        self._signal(child, signal.SIGTERM)
        assert self._loop is not None
        self._loop.call_later(
            self.config.seconds("kill_escalation"), self._signal, child, signal.SIGKILL
        )

    def _signal(self, child: _Child, signum: int) -> None:
        if child.state is _State.DEAD or child.pid <= 0:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signum)

    # -- memory -----------------------------------------------------------------------

    async def _monitor_memory(self) -> None:
        interval = self.config.seconds("memory_check_interval")
        while True:
            await asyncio.sleep(interval)
            self.sample()
            for child in list(self._children.values()):
                verdict = memory_verdict(child.rss, child.state is _State.BUSY, self.config)
                if verdict == "kill" and child.task is not None:
                    self._kill_for(
                        child,
                        child.task.task_id,
                        ChildMemoryExceeded(
                            child.pid,
                            f"RSS {child.rss} bytes over hard_memory_per_child="
                            f"{self.config.hard_memory_per_child}",
                        ),
                    )
                elif verdict == "recycle":
                    reason = (
                        f"RSS {child.rss} bytes over max_memory_per_child="
                        f"{self.config.max_memory_per_child}"
                    )
                    if child.state is _State.IDLE:
                        self._recycle(child, reason)
                    elif child.state is _State.BUSY:
                        child.recycle_reason = reason

    def sample(self) -> None:
        """Read RSS and CPU time of every live child (psutil)."""
        for child in self._children.values():
            proc = child.psutil_proc
            if proc is None or child.state is _State.DEAD:
                continue
            try:
                with proc.oneshot():
                    child.rss = proc.memory_info().rss
                    times = proc.cpu_times()
            except psutil.Error:
                continue
            child.peak_rss = max(child.peak_rss, child.rss)
            child.cpu_seconds = times.user + times.system


_RAN = ("completed", "failed")  # outcomes whose run time predicts the next run's


def _task_bytes(task: RunTask) -> bytes:
    try:
        return dumps(task_to_wire(task))
    except Exception as err:
        raise TaskTransferError(
            f"The arguments of activity {task.activity_type!r} could not be pickled "
            f"to send them to a child process: {type(err).__name__}: {err}"
        ) from err


def _kill_group(pid: int) -> None:
    """SIGKILL what is left of a dead child's process group (it led one: runner._child).

    A group id stays taken while any process is in the group, so this reaches only the
    child's leftovers (with spawn, the child is not even reaped yet).
    """
    if pid <= 0:
        return  # never killpg(0): that is our own group
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _emit_child_record(fields: dict[str, Any]) -> None:
    """Hand a child's log record to this process's handlers, as if logged here."""
    record = logging.makeLogRecord(fields)
    target = logging.getLogger(record.name)
    if target.isEnabledFor(record.levelno):
        target.handle(record)


def _doing(child: _Child, was: _State) -> str:
    if child.task is not None:
        return f"while running {child.task.activity_type!r}"
    return "before it was ready" if was is _State.STARTING else "while idle"


def _index(child: _Child) -> int:
    return child.index


def _snapshot(child: _Child) -> ChildSnapshot:
    return ChildSnapshot(
        index=child.index,
        pid=child.pid,
        state=child.state.value,
        activity_type=child.task.activity_type if child.task else None,
        tasks_done=child.tasks_done,
        rss=child.rss,
        peak_rss=child.peak_rss,
        cpu_seconds=child.cpu_seconds,
    )
