"""Supervision.on_exit carries out what policy.decide_exit says (pool.supervisor.supervision),
on children that are pipes and a fake process: no child process starts."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

import pool
from pool.supervisor import children as children_module
from pool.supervisor.children import Child, ChildState
from pool.supervisor.lookahead import Lookahead
from pool.supervisor.scheduler import Scheduler
from pool.supervisor.supervision import Supervision
from runner import ChildBroken, RunTask, dumps
from runner.frames import FrameReader, send_frame

pytestmark = pytest.mark.unit


class _Process:
    """What on_exit reads of a multiprocess Process: its sentinel, join, exit code."""

    def __init__(self, exitcode: int | None) -> None:
        self.sentinel, self._write_end = os.pipe()
        self.exitcode = exitcode

    def join(self, timeout: float | None = None) -> None:
        pass

    def close(self) -> None:
        os.close(self.sentinel)
        os.close(self._write_end)


class _Room:
    """A Supervision on the running loop whose spawns and fatal errors are recorded."""

    def __init__(self, **config: Any) -> None:
        self.config = pool.PoolConfig(**config)
        self.scheduler: Scheduler[Child] = Scheduler(Lookahead())
        self.notified = 0
        self.supervision = Supervision(self.config, self.scheduler, self._notify)
        self.fatal: list[BaseException] = []
        self.supervision.begin(asyncio.get_running_loop(), None, {}, self.fatal.append)
        self.spawned: list[int] = []
        self.supervision.spawn = self._spawn  # type: ignore[method-assign]
        self._closers: list[Any] = []

    def _notify(self) -> None:
        self.notified += 1

    def _spawn(self, index: int) -> Child:
        self.spawned.append(index)
        return None  # type: ignore[return-value]

    def child(self, state: ChildState, exitcode: int | None, index: int = 0) -> Child:
        ours, theirs = multiprocessing.Pipe(duplex=True)  # as the pool's task pipe
        ctrl_theirs, ctrl_ours = multiprocessing.Pipe(duplex=False)
        process = _Process(exitcode)
        self._closers += [ours, theirs, ctrl_theirs, ctrl_ours, process]
        child = Child(
            index=index,
            process=process,
            task_conn=ours,
            ctrl_conn=ctrl_ours,
            reader=FrameReader(ours.fileno()),
            spawned_at=time.monotonic(),
            pid=4242 + index,
            state=state,
        )
        child.theirs = theirs  # type: ignore[attr-defined]
        self.supervision.children[index] = child
        self.supervision.by_pid[child.pid] = child
        if state is ChildState.IDLE:
            self.scheduler.add_idle(child)
        return child

    def close(self) -> None:
        for closer in self._closers:
            closer.close()


@pytest.fixture
def no_killpg(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The fake children's pids are not ours: record the process-group kills instead."""
    killed: list[int] = []
    monkeypatch.setattr(children_module, "_kill_group", killed.append)
    yield killed


def _run(child: Child, activity_type: str = "burn") -> asyncio.Future[Any]:
    info = ActivityEnvironment.default_info()
    child.state = ChildState.BUSY
    child.task = RunTask(
        task_id=1, activity_type=activity_type, args=(), info=info, heartbeat_interval=30.0
    )
    child.future = asyncio.get_running_loop().create_future()
    return child.future


async def test_a_busy_child_that_dies_fails_its_task_and_is_replaced_at_once(no_killpg, caplog):
    room = _Room()
    try:
        child = room.child(ChildState.IDLE, exitcode=-9)
        future = _run(child)
        room.supervision.on_exit(child)
        with pytest.raises(pool.ChildProcessDied):
            future.result()
        assert child.state is ChildState.DEAD and no_killpg == [child.pid]
        assert room.spawned == [0] and room.supervision.stats["deaths"] == 1
        assert child.pid not in room.supervision.by_pid and room.scheduler.idle == 0
        assert [c.pid for c in room.supervision.retired] == [child.pid]
        assert room.notified >= 1
        assert "died (killed by SIGKILL" in caplog.text and "while running 'burn'" in caplog.text
    finally:
        room.close()


async def test_repeated_deaths_delay_the_replacement(no_killpg, caplog):
    room = _Room(respawn_backoff=5, respawn_backoff_max=5, crash_loop_window=60)
    try:
        for index in range(2):
            room.supervision.on_exit(room.child(ChildState.IDLE, exitcode=-9, index=index))
        assert room.spawned == [0]  # the second waits 5 s
        assert room.supervision.stats["respawns_delayed"] == 1
        assert room.supervision.respawn_delay_seconds == 5.0
        assert "the replacement of child 1 starts in 5.00 s" in caplog.text
        room.supervision.close()  # the pool stops: the delayed replacement never starts
        assert room.supervision.closing and room.spawned == [0]
    finally:
        room.close()


async def test_a_start_failure_before_up_is_kept_for_start_to_raise(no_killpg):
    room = _Room()
    try:
        child = room.child(ChildState.STARTING, exitcode=3)
        # What it said last is still in the pipe when its sentinel fires.
        said = ChildBroken(pid=child.pid, error_type="ImportError", message="x", traceback="tb")
        send_frame(child.theirs.fileno(), dumps(said))  # type: ignore[attr-defined]
        room.supervision.on_exit(child)
        error = room.supervision.start_error
        assert isinstance(error, pool.ChildStartError) and error.error_type == "ImportError"
        assert room.spawned == [] and room.supervision.stats["start_failures"] == 0
    finally:
        room.close()


async def test_replacements_failing_to_start_make_a_crash_loop(no_killpg):
    room = _Room(crash_loop_max_deaths=1, crash_loop_window=60)
    room.supervision.up = True
    try:
        room.supervision.on_exit(room.child(ChildState.STARTING, exitcode=3))
        assert room.spawned == [0] and room.fatal == []
        room.supervision.on_exit(room.child(ChildState.STARTING, exitcode=3))
        [crash] = room.fatal
        assert isinstance(crash, pool.CrashLoopError) and crash.failures == 2
        assert room.spawned == [0] and room.supervision.stats["start_failures"] == 2
    finally:
        room.close()


async def test_a_recycled_child_is_replaced_and_not_counted(no_killpg, caplog):
    room = _Room()
    try:
        child = room.child(ChildState.IDLE, exitcode=0)
        room.supervision.recycle(child, "ran 10 tasks")
        assert child.state is ChildState.STOPPING and room.scheduler.idle == 0
        room.supervision.on_exit(child)
        assert room.spawned == [0] and room.supervision.stats["deaths"] == 0
        assert room.supervision.stats["recycles"] == 1 and "died" not in caplog.text
    finally:
        room.close()
