"""One child's process as the parent sees it: spawn, pipes, sentinel, kill, sample.

    spawn_child(ctx, index, spec) ──▶ Process(child_main) + task pipe + control pipe ──▶ Child
    Child.send_task / send_stop ──▶ task pipe      Child.send_control ──▶ control pipe
    Child.read / drain ◀── task pipe (frames: TaskDone, ChildReady, ChildLog, ChildBroken)
    Child.reap ──▶ SIGKILL what is left of its process group, its exit code
    Child.sample ──▶ psutil: RSS, peak RSS, CPU time          Child.snapshot ──▶ ChildSnapshot

No decisions here (pool.supervisor.policy makes them) and no loop: the pool registers
``task_conn`` and ``process.sentinel`` with the worker's loop and calls these.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import multiprocessing
import os
import select
import signal
import socket
import sys
import time
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cloudpickle
import multiprocess
import psutil

import runner
from runner import (
    ActivitySpec,
    ChildSpec,
    RunTask,
    Stop,
    TaskDone,
    child_main,
    dumps,
    dumps_frame,
    task_to_wire,
)
from runner.frames import FrameReader, send_frame
from runner.report import ReportSettings

from .._config import PoolConfig
from .._errors import ChildStartError, PoolError, WorkerConfigError

__all__ = [
    "Child",
    "ChildKilled",
    "ChildMemoryExceeded",
    "ChildSnapshot",
    "ChildState",
    "TaskTransferError",
    "child_spec_template",
    "emit_child_record",
    "preload_modules",
    "spawn_child",
    "task_frame",
]


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


class ChildState(enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"
    DEAD = "dead"


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


@dataclass(eq=False)
class Child:
    """One child process, its two pipes and what the supervisor knows of it."""

    index: int
    process: Any
    task_conn: Any
    ctrl_conn: Any
    reader: FrameReader
    spawned_at: float
    pid: int = 0
    state: ChildState = ChildState.STARTING
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

    # -- pipes -------------------------------------------------------------------------

    def send_task(self, parts: list[bytes | memoryview]) -> None:
        """Write a task (:func:`task_frame`); OSError (EPIPE) when the child is gone."""
        send_frame(self.task_conn.fileno(), *parts)

    def send_stop(self) -> None:
        """Ask the child to exit after its task; SIGTERM when the pipe is gone."""
        try:
            self.task_conn.send_bytes(dumps(Stop()))
        except OSError:
            self.signal(signal.SIGTERM)

    def send_control(self, message: object) -> None:
        """A message on the control pipe (cancel, worker shutdown); lost if it died."""
        with contextlib.suppress(OSError):
            self.ctrl_conn.send_bytes(dumps(message))

    def read(self) -> list[bytes | bytearray]:
        """The messages the task pipe has now (EOFError, OSError: it closed)."""
        return self.reader.feed()

    def drain(self) -> list[bytes | bytearray]:
        """What a dead child wrote last and the loop has not read yet (a start
        failure's reason, a TaskDone). ``select`` first: never block on the pipe."""
        messages: list[bytes | bytearray] = []
        fd = self.task_conn.fileno()
        with contextlib.suppress(EOFError, OSError):
            while select.select([fd], [], [], 0)[0]:
                messages.extend(self.reader.feed())
        return messages

    def close_pipes(self) -> None:
        for conn in (self.task_conn, self.ctrl_conn):
            with contextlib.suppress(OSError):
                conn.close()

    # -- the process -------------------------------------------------------------------

    def signal(self, signum: int) -> None:
        if self.state is ChildState.DEAD or self.pid <= 0:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def reap(self) -> int | None:
        """After its sentinel fired: SIGKILL what is left of its process group (the
        activity's subprocesses), join it; its exit code.

        A forkserver child's sentinel fires once the fork server has its exit status. A
        spawned child's is a pipe that closes while the process exits, a moment before
        the kernel holds its status: wait for that moment, at most ``REAP_WAIT`` (the
        group's SIGKILL also ends a child that closed the pipe and lived on).
        """
        _kill_group(self.pid)
        self.process.join(0)
        deadline = time.monotonic() + REAP_WAIT
        while self.process.exitcode is None and time.monotonic() < deadline:
            time.sleep(0.0002)
            self.process.join(0)
        exitcode: int | None = self.process.exitcode
        return exitcode

    def cancel_kill_timer(self) -> None:
        if self.kill_handle is not None:
            self.kill_handle.cancel()
            self.kill_handle = None

    def watch_usage(self) -> None:
        """Once it is ready: the psutil handle :meth:`sample` reads (CPU time primed)."""
        with contextlib.suppress(psutil.Error):
            self.psutil_proc = psutil.Process(self.pid)
            self.psutil_proc.cpu_times()  # prime

    def sample(self) -> None:
        """Read its RSS and CPU time (psutil); nothing when it is dead or not ready."""
        proc = self.psutil_proc
        if proc is None or self.state is ChildState.DEAD:
            return
        try:
            with proc.oneshot():
                self.rss = proc.memory_info().rss
                times = proc.cpu_times()
        except psutil.Error:
            return
        self.peak_rss = max(self.peak_rss, self.rss)
        self.cpu_seconds = times.user + times.system

    def snapshot(self) -> ChildSnapshot:
        return ChildSnapshot(
            index=self.index,
            pid=self.pid,
            state=self.state.value,
            activity_type=self.task.activity_type if self.task else None,
            tasks_done=self.tasks_done,
            rss=self.rss,
            peak_rss=self.peak_rss,
            cpu_seconds=self.cpu_seconds,
        )


# What each end of a task pipe may hold unread: a 1 MiB task or result goes out in one
# write, without blocking the worker's loop until the child has read it, and arrives in
# one read. The kernel caps it at net.core.wmem_max (212992 on many systems).
TASK_PIPE_BUFFER = 4 << 20


def widen_buffer(fd: int) -> None:
    """Raise a task pipe's (a socketpair's) send buffer to TASK_PIPE_BUFFER, as far as
    the kernel allows, never lowering it."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:  # not a socket (a platform's Pipe may be a pipe): leave it
        return
    try:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) < TASK_PIPE_BUFFER:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, TASK_PIPE_BUFFER)
    finally:
        sock.detach()  # the fd stays the Connection's


def spawn_child(ctx: Any, index: int, spec_template: Mapping[str, Any]) -> Child:
    """Start child ``index`` (``ctx``: a multiprocess context) with its two pipes."""
    task_parent, task_child = ctx.Pipe(duplex=True)
    for conn in (task_parent, task_child):
        widen_buffer(conn.fileno())
    ctrl_child, ctrl_parent = ctx.Pipe(duplex=False)
    spec = ChildSpec(index=index, **spec_template)
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
    return Child(
        index=index,
        process=process,
        task_conn=task_parent,
        ctrl_conn=ctrl_parent,
        reader=FrameReader(task_parent.fileno()),
        spawned_at=time.monotonic(),
        pid=process.pid,
    )


def child_spec_template(
    activities: Mapping[str, ActivitySpec],
    converter: Any,
    heartbeat_sender: Any,
    config: PoolConfig,
    report: ReportSettings | None = None,
) -> dict[str, Any]:
    """What every child's :class:`runner.ChildSpec` holds but its index: serialised once."""
    return {
        "activities": cloudpickle.dumps(dict(activities)),
        "converter": cloudpickle.dumps(converter),
        "heartbeat_sender": dumps(heartbeat_sender),
        "log_level": logging.getLogger().getEffectiveLevel(),
        "authkeys": (
            bytes(multiprocessing.current_process().authkey),
            bytes(multiprocess.current_process().authkey),
        ),
        "initializer": _pickled_initializer(config),
        "native_threads": config.native_thread_limit(),
        "cpu_affinity": config.cpu_affinity,
        "report": report,
    }


def _pickled_initializer(config: PoolConfig) -> bytes | None:
    initializer = config.initializer
    if initializer is None:
        return None
    try:
        return cloudpickle.dumps((initializer, config.initargs))
    except Exception as err:
        raise WorkerConfigError(
            f"The initializer {getattr(initializer, '__qualname__', initializer)!r} or its "
            f"initargs cannot be serialised with cloudpickle to send them to the child "
            f"processes: {type(err).__name__}: {err}. Pass a module-level function and "
            "picklable arguments."
        ) from err


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


def task_frame(task: RunTask) -> list[bytes | memoryview]:
    """A task as the child reads it (one frame's parts); TaskTransferError when its
    arguments won't pickle."""
    try:
        return dumps_frame(task_to_wire(task))
    except Exception as err:
        raise TaskTransferError(
            f"The arguments of activity {task.activity_type!r} could not be pickled "
            f"to send them to a child process: {type(err).__name__}: {err}"
        ) from err


def emit_child_record(fields: dict[str, Any]) -> None:
    """Hand a child's log record to this process's handlers, as if logged here."""
    record = logging.makeLogRecord(fields)
    target = logging.getLogger(record.name)
    if target.isEnabledFor(record.levelno):
        target.handle(record)


# How long reap() waits for the exit status of a child whose sentinel fired.
REAP_WAIT = 0.5


def _kill_group(pid: int) -> None:
    """SIGKILL what is left of a dead child's process group (it led one: runner._process).

    A group id stays taken while any process is in the group, so this reaches only the
    child's leftovers (with spawn, the child is not even reaped yet).
    """
    if pid <= 0:
        return  # never killpg(0): that is our own group
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
