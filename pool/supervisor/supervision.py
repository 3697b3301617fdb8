"""Supervision of the children as a set: their messages, their deaths, their replacements.

    task pipe readable ──▶ on_readable ──▶ ChildReady: idle   TaskDone: future resolved,
                           then idle, or recycled (policy.after_task)   ChildLog: logged here
    sentinel readable  ──▶ on_exit ──▶ reap (SIGKILL its group), bury (no more work for it)
                           ──▶ policy.decide_exit ──▶ log, fail its task, count the death,
                           respawn now / after a backoff / never, or fatal (crash loop)
    kill_for           ──▶ SIGTERM, then SIGKILL after kill_escalation
    check_memory       ──▶ policy.memory_verdict: kill a busy child, recycle one

The pool (pool.supervisor.pool) owns the waits: every change here calls ``notify``,
so they re-check. Decisions are pure functions
in pool.supervisor.policy; one child's I/O is pool.supervisor.children.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

from runner import (
    ChildBroken,
    ChildLog,
    ChildReady,
    TaskDone,
    WorkerShutdown,
    done_from_wire,
    loads,
)

from .._config import PoolConfig
from .._errors import ChildStartError
from .children import (
    Child,
    ChildKilled,
    ChildMemoryExceeded,
    ChildSnapshot,
    ChildState,
    emit_child_record,
    spawn_child,
)
from .policy import (
    ChildEnd,
    DeathHistory,
    ExitDecision,
    Replace,
    after_task,
    decide_exit,
    memory_verdict,
    recent,
)
from .scheduler import Scheduler

__all__ = ["Supervision"]

logger = logging.getLogger("pool.supervisor")

_RAN = ("completed", "failed")  # outcomes whose run time predicts the next run's


class Supervision:
    """The children by index and by pid, and what happened to them."""

    def __init__(
        self, config: PoolConfig, scheduler: Scheduler[Child], notify: Callable[[], None]
    ) -> None:
        self.config = config
        self._scheduler = scheduler
        self._notify = notify
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ctx: Any = None
        self._spec_template: Mapping[str, Any] = {}
        self._on_fatal: Callable[[BaseException], None] = lambda err: None
        self.children: dict[int, Child] = {}  # by index
        self.by_pid: dict[int, Child] = {}
        self.stats = collections.Counter[str]()
        self._deaths: collections.deque[float] = collections.deque()  # of ready children
        self._start_failures: collections.deque[float] = collections.deque()
        self.start_error: ChildStartError | None = None  # at start: fatal at once
        self._last_said: tuple[str | None, str | None] | None = None  # start failure logged
        self._respawns: dict[int, asyncio.TimerHandle] = {}  # index -> delayed respawn
        self.respawn_delay_seconds = 0.0
        self.closing = False
        self.up = False  # every first child was ready
        self._shutdown_sent = False
        self.replacement_seconds: collections.deque[float] = collections.deque(maxlen=256)
        self.retired: collections.deque[ChildSnapshot] = collections.deque(maxlen=256)
        self._died_at: dict[int, float] = {}  # index -> when its predecessor died

    def begin(
        self,
        loop: asyncio.AbstractEventLoop,
        ctx: Any,
        spec_template: Mapping[str, Any],
        on_fatal: Callable[[BaseException], None],
    ) -> None:
        """Children can be spawned from now on (``ctx``: a multiprocess context)."""
        self.loop = loop
        self._ctx = ctx
        self._spec_template = spec_template
        self._on_fatal = on_fatal

    def alive(self) -> list[Child]:
        return [c for c in self.children.values() if c.state is not ChildState.DEAD]

    def spawn(self, index: int) -> Child:
        assert self.loop is not None
        child = spawn_child(self._ctx, index, self._spec_template)
        self.children[index] = child
        self.by_pid[child.pid] = child
        self.stats["starts"] += 1
        self.loop.add_reader(child.task_conn.fileno(), self.on_readable, child)
        self.loop.add_reader(child.process.sentinel, self.on_exit, child)
        return child

    def close(self) -> None:
        """The pool is stopping: no more replacements; idle children are asked to stop."""
        self.closing = True
        for handle in self._respawns.values():
            handle.cancel()
        self._respawns.clear()
        for child in list(self.children.values()):
            if child.state is ChildState.IDLE:
                self.send_stop(child)

    def broadcast_shutdown(self) -> None:
        """Make ``activity.is_worker_shutdown()`` true in every child (and later ones)."""
        self._shutdown_sent = True
        for child in self.alive():
            child.send_control(WorkerShutdown())

    # -- messages from the children ------------------------------------------------------

    def on_readable(self, child: Child) -> None:
        try:
            messages = child.read()
        except (EOFError, OSError):
            self._forget_reader(child)
            return  # the sentinel tells us the rest
        if len(messages) == 1:
            self._on_message(child, messages[0])
            return
        self._on_messages(child, messages)

    def _on_messages(self, child: Child, messages: list[bytes | bytearray]) -> None:
        for data in messages:
            # One read may bring several messages: one that fails (say, a record that
            # cannot be unpickled here) must not lose the others.
            try:
                self._on_message(child, data)
            except Exception as err:
                assert self.loop is not None
                self.loop.call_exception_handler(
                    {"message": f"Message from child {child.pid} failed", "exception": err}
                )

    def _on_message(self, child: Child, data: bytes | bytearray) -> None:
        msg = loads(data)
        if type(msg) is tuple:
            self._on_task_done(child, done_from_wire(msg))
        elif isinstance(msg, ChildReady):
            self._on_ready(child)
        elif isinstance(msg, ChildLog):
            emit_child_record(msg.record)
        elif isinstance(msg, ChildBroken):
            child.start_error = ChildStartError(
                msg.pid,
                error_type=msg.error_type,
                error_message=msg.message,
                child_traceback=msg.traceback,
            )

    def _on_ready(self, child: Child) -> None:
        now = time.monotonic()
        child.ready_at = now
        child.watch_usage()
        died_at = self._died_at.pop(child.index, None)
        if died_at is not None:
            self.replacement_seconds.append(now - died_at)
        if self._shutdown_sent:
            child.send_control(WorkerShutdown())
        self._make_idle(child)

    def _make_idle(self, child: Child) -> None:
        child.state = ChildState.IDLE
        child.task = None
        child.future = None
        if self.closing:
            self.send_stop(child)
        else:
            self._scheduler.add_idle(child)
        self._notify()

    def _on_task_done(self, child: Child, done: TaskDone) -> None:
        child.cancel_kill_timer()
        assert self.loop is not None
        ran = self.loop.time() - child.started_at
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
            self.recycle(child, reason)
        else:
            self._make_idle(child)

    def _close_window(self, child: Child, activity_type: str | None, ran: float | None) -> None:
        self._scheduler.task_ended(child, activity_type, ran)
        if child.window_handle is not None:
            child.window_handle.cancel()
            child.window_handle = None

    def recycle(self, child: Child, reason: str) -> None:
        logger.info("Recycling child %d: %s", child.pid, reason)
        self.stats["recycles"] += 1
        child.task = None
        self.send_stop(child)

    def send_stop(self, child: Child) -> None:
        self._scheduler.forget(child)
        child.state = ChildState.STOPPING
        child.send_stop()

    def _forget_reader(self, child: Child) -> None:
        assert self.loop is not None
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(child.task_conn.fileno())

    # -- deaths ------------------------------------------------------------------------

    def on_exit(self, child: Child) -> None:
        """Its sentinel fired: read what it wrote last, reap and bury it, then do what
        :func:`policy.decide_exit` says."""
        assert self.loop is not None
        self.loop.remove_reader(child.process.sentinel)
        self._on_messages(child, child.drain())
        self._forget_reader(child)
        exitcode = child.reap()
        was = child.state
        self._bury(child)
        task = child.task
        end = ChildEnd(
            pid=child.pid,
            index=child.index,
            exitcode=exitcode,
            state=was.value,
            activity_type=task.activity_type if task else None,
            activity_id=task.info.activity_id if task else None,
            task_pending=child.future is not None and not child.future.done(),
            kill_reason=child.kill_reason,
            start_error=child.start_error,
        )
        now = time.monotonic()
        self._carry_out(child, decide_exit(end, self._history(), now, self.config), now)
        self._notify()

    def _history(self) -> DeathHistory:
        return DeathHistory(
            closing=self.closing,
            up=self.up,
            deaths=tuple(self._deaths),
            start_failures=tuple(self._start_failures),
            start_error_known=self.start_error is not None,
            last_said=self._last_said,
        )

    def _bury(self, child: Child) -> None:
        """Take a dead child out of every place that could hand it work."""
        child.state = ChildState.DEAD
        self._close_window(child, None, None)
        self._scheduler.forget(child)
        child.cancel_kill_timer()
        self.by_pid.pop(child.pid, None)
        self.retired.append(child.snapshot())
        child.close_pipes()

    def _carry_out(self, child: Child, decision: ExitDecision, now: float) -> None:
        for level, text in decision.logs:
            logger.log(level, "%s", text)
        if decision.said is not None:
            self._last_said = decision.said
        if decision.fails_start is not None:
            self.start_error = decision.fails_start  # start() raises it
        if decision.task_error is not None and child.future is not None:
            child.future.set_exception(decision.task_error)
        if decision.counts_as is not None:
            self.stats[decision.counts_as] += 1
            times = self._deaths if decision.counts_as == "deaths" else self._start_failures
            times.append(now)
            recent(times, now, self.config)  # forget those out of the window
        if self.closing:
            return
        self._died_at[child.index] = now
        if decision.replace is Replace.NOW:
            self.respawn(child.index)
        elif decision.replace is Replace.AFTER_BACKOFF:
            assert self.loop is not None
            self.stats["respawns_delayed"] += 1
            self.respawn_delay_seconds += decision.delay
            handle = self.loop.call_later(decision.delay, self.respawn, child.index)
            self._respawns[child.index] = handle
        elif decision.fatal is not None:
            self._on_fatal(decision.fatal)

    def respawn(self, index: int) -> None:
        self._respawns.pop(index, None)
        if not self.closing:
            self.spawn(index)
            self._notify()

    # -- killing -------------------------------------------------------------------------

    def kill_for(self, child: Child, task_id: int, error: ChildKilled) -> None:
        """Kill ``child`` if it still runs ``task_id``: SIGTERM, SIGKILL after
        ``kill_escalation``; its task fails with ``error``."""
        if child.state is ChildState.DEAD or child.task is None or child.task.task_id != task_id:
            return
        if child.kill_reason is not None:
            return
        logger.warning("Killing child %d: %s", child.pid, error.reason)
        self.stats["kills"] += 1
        child.kill_reason = error
        child.kill_handle = None
        child.signal(signal.SIGTERM)
        assert self.loop is not None
        self.loop.call_later(self.config.seconds("kill_escalation"), child.signal, signal.SIGKILL)

    def check_memory(self) -> None:
        """After :meth:`sample`: kill a busy child over the hard limit, recycle one over
        ``max_memory_per_child`` (an idle one now, a busy one after its task)."""
        for child in list(self.children.values()):
            verdict = memory_verdict(child.rss, child.state is ChildState.BUSY, self.config)
            if verdict == "kill" and child.task is not None:
                self.kill_for(
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
                if child.state is ChildState.IDLE:
                    self.recycle(child, reason)
                elif child.state is ChildState.BUSY:
                    child.recycle_reason = reason

    def sample(self) -> None:
        """Read RSS and CPU time of every live child (psutil)."""
        for child in self.children.values():
            child.sample()
