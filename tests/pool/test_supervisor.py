"""The ProcessPool on its own (no server): crash isolation, replacement, cancel
latency, recycling, crash loops, memory limits; every test of a running pool under both
start methods (forkserver, spawn). Pure decisions: test_supervisor_policy."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from typing import Any

import psutil
import pytest
import temporalio.activity
import temporalio.common
import temporalio.converter
from temporalio.testing import ActivityEnvironment

import pool
from pool.supervisor.lookahead import Lookahead
from runner import ActivitySpec, RunTask
from tests.helpers import async_assert_eventually
from tests.pool import _bad_activities as B

ACTIVITIES = {
    name: ActivitySpec(fn=getattr(B, name), no_thread_cancel_exception=False)
    for name in (
        "exits_with_os_exit",
        "segfaults",
        "pid_of_child",
        "info_in_child",
        "burn",
        "timed_cancel_probe",
        "ignores_signals_forever",
        "allocate_and_hold",
        "ignores_cancellation",
    )
}


def _info(activity_type: str) -> temporalio.activity.Info:
    """temporalio's test Info, with this task's type and a token of its own."""
    return dataclasses.replace(
        ActivityEnvironment.default_info(), activity_type=activity_type, task_token=os.urandom(16)
    )


def _task(task_id: int, name: str, *args: Any) -> RunTask:
    return RunTask(
        task_id=task_id, activity_type=name, args=args, info=_info(name), heartbeat_interval=30.0
    )


@pytest.fixture(params=["forkserver", "spawn"])
def start_method(request: pytest.FixtureRequest) -> str:
    """Every test of a running pool runs under both start methods."""
    return request.param


class _Pool:
    """A started ProcessPool plus a counter of task ids and the fatal errors seen."""

    def __init__(self, start_method: str, processes: int = 2, **config: Any) -> None:
        self.pool = pool.ProcessPool(
            processes, config=pool.PoolConfig(start_method=start_method, **config)
        )
        self.fatal: list[BaseException] = []
        self.ids = iter(range(1, 1_000_000))

    async def __aenter__(self) -> _Pool:
        await self.pool.start(
            activities=ACTIVITIES,
            converter=temporalio.converter.DataConverter.default,
            heartbeat_sender=None,
            on_fatal=self.fatal.append,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.stop()

    async def start(self, name: str, *args: Any) -> tuple[int, int, asyncio.Future]:
        task_id = next(self.ids)
        reservation = await self.pool.reserve()
        pid, future = await self.pool.run(_task(task_id, name, *args), reservation=reservation)
        return task_id, pid, future

    async def run(self, name: str, *args: Any):
        _, _, future = await self.start(name, *args)
        return await future


async def test_children_start_and_run_tasks(start_method):
    async with _Pool(start_method, 2) as p:
        assert len(p.pool.pids) == 2
        done = await p.run("burn", 10, 7)
        assert done.outcome == "completed" and done.value == [7, 49]
        assert done.cpu_seconds >= 0.009
        assert repr(p.pool).startswith("<ProcessPool [Children: 2 alive")
        assert p.pool.config.start_method == start_method


async def test_activity_info_in_the_child_equals_the_parents(start_method):
    from datetime import datetime, timedelta, timezone

    info = dataclasses.replace(
        _info("info_in_child"),
        attempt=4,
        heartbeat_details=[{"step": 3}],
        heartbeat_timeout=timedelta(seconds=7),
        started_time=datetime.now(timezone.utc),
        priority=temporalio.common.Priority(priority_key=2, fairness_key="t"),
        retry_policy=temporalio.common.RetryPolicy(maximum_attempts=9),
        workflow_run_id="run-1",
    )
    async with _Pool(start_method, 1) as p:
        reservation = await p.pool.reserve()
        _, future = await p.pool.run(
            reservation=reservation,
            task=RunTask(
                task_id=1,
                activity_type="info_in_child",
                args=(),
                info=info,
                heartbeat_interval=30.0,
            ),
        )
        done = await future
    assert done.outcome == "completed", done
    seen, same_object = done.value
    assert seen == info and same_object
    for f in dataclasses.fields(info):
        assert getattr(seen, f.name) == getattr(info, f.name), f.name


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("exits_with_os_exit", "exit code 3"),
        ("segfaults", "SIGSEGV"),
    ],
)
async def test_a_crash_fails_only_that_task_and_is_replaced(start_method, name, fragment):
    async with _Pool(start_method, 2) as p:
        _, other_pid, other = await p.start("burn", 300, 2)
        _, pid, crashing = await p.start(name)
        with pytest.raises(pool.ChildProcessDied, match=fragment) as info:
            await crashing
        assert info.value.pid == pid and info.value.activity_type == name
        assert (await other).value == [2, 4]  # the neighbour was not disturbed
        await async_assert_eventually(lambda: len(p.pool.pids) == 2 and pid not in p.pool.pids)
        assert other_pid in p.pool.pids
        assert p.pool.snapshot().deaths == 1
        assert (await p.run("burn", 1, 3)).value == [3, 9]


async def test_an_idle_child_that_dies_is_replaced(start_method):
    async with _Pool(start_method, 2) as p:
        victim = p.pool.pids[0]
        os.kill(victim, signal.SIGKILL)
        await async_assert_eventually(
            lambda: len(p.pool.pids) == 2 and victim not in p.pool.pids and p.pool.free() == 2
        )
        snapshot = p.pool.snapshot()
        assert snapshot.deaths == 1 and len(snapshot.replacement_seconds) == 1
        assert snapshot.replacement_seconds[0] < 1.0


async def test_cancel_raises_inside_the_child_within_100ms(start_method, tmp_path):
    ready = tmp_path / "ready"
    async with _Pool(start_method, 1) as p:
        task_id, pid, future = await p.start("timed_cancel_probe", str(ready))
        await async_assert_eventually(ready.exists)
        sent = time.monotonic()
        p.pool.cancel(pid, task_id, temporalio.activity.ActivityCancellationDetails(), "test")
        done = await future
        assert done.outcome == "completed"  # the probe catches the cancel and returns
        assert 0 <= done.value - sent < 0.1, done.value - sent


async def test_a_child_that_ignores_cancellation_is_killed_after_the_grace(start_method, tmp_path):
    ready = tmp_path / "ready"
    async with _Pool(start_method, 1, cancel_grace=0.3, kill_escalation=0.1) as p:
        task_id, pid, future = await p.start("ignores_signals_forever", str(ready))
        await async_assert_eventually(ready.exists)
        sent = time.monotonic()
        p.pool.cancel(pid, task_id, temporalio.activity.ActivityCancellationDetails(), "test")
        with pytest.raises(pool.ChildKilled, match="cancel_grace"):
            await future
        assert time.monotonic() - sent < 0.3 + 0.1 + 0.5
        await async_assert_eventually(lambda: pid not in p.pool.pids and len(p.pool.pids) == 1)
        assert p.pool.snapshot().kills == 1 and p.pool.snapshot().deaths == 0


async def test_recycling_by_task_count_fails_no_task(start_method):
    async with _Pool(start_method, 1, max_tasks_per_child=2) as p:
        pids = [(await p.run("pid_of_child")).value for _ in range(5)]
        assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
        assert p.pool.snapshot().recycles == 2


async def test_recycling_by_memory_after_the_task(start_method):
    limit = 150 * 1024 * 1024
    async with _Pool(start_method, 1, max_memory_per_child=limit, memory_check_interval=0.05) as p:
        first = (await p.run("allocate_and_hold", 200, 0.3)).value
        await async_assert_eventually(lambda: first not in p.pool.pids and len(p.pool.pids) == 1)
        second = (await p.run("pid_of_child")).value
        assert second != first
        assert p.pool.snapshot().recycles == 1


async def test_hard_memory_limit_kills_the_task(start_method):
    async with _Pool(
        start_method,
        1,
        max_memory_per_child=100 * 1024 * 1024,
        hard_memory_per_child=150 * 1024 * 1024,
        memory_check_interval=0.05,
    ) as p:
        with pytest.raises(pool.ChildMemoryExceeded, match="hard_memory_per_child"):
            await p.run("allocate_and_hold", 300, 30)


async def test_deaths_of_ready_children_never_become_fatal(start_method):
    async with _Pool(
        start_method, 1, crash_loop_max_deaths=2, respawn_backoff=0.001, respawn_backoff_max=0.01
    ) as p:
        for _ in range(20):
            with pytest.raises(pool.ChildProcessDied):
                await p.run("exits_with_os_exit")
        assert (await p.run("burn", 1, 3)).value == [3, 9]
        assert p.fatal == []
        snapshot = p.pool.snapshot()
        assert (snapshot.deaths, snapshot.start_failures) == (20, 0)
        assert snapshot.respawns_delayed == 19  # the first death is replaced at once


async def test_stop_leaves_no_child(start_method):
    async with _Pool(start_method, 2) as p:
        pids = list(p.pool.pids)
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


# -- pure decisions ------------------------------------------------------------------------


def test_pool_config_validation():
    with pytest.raises(pool.WorkerConfigError, match="processes"):
        pool.PoolConfig(processes=0)
    with pytest.raises(pool.WorkerConfigError, match="start_method"):
        pool.PoolConfig(start_method="fork")  # type: ignore[arg-type]
    with pytest.raises(pool.WorkerConfigError, match="hard_memory_per_child"):
        pool.PoolConfig(max_memory_per_child=10, hard_memory_per_child=5)
    assert dataclasses.replace(pool.PoolConfig(), processes=3).size == 3


async def test_prefetch_promises_one_task_beyond_the_idle_children(start_method):
    async with _Pool(start_method, 1, prefetch=1) as p:
        first_promise = await p.pool.reserve()
        second_promise = await p.pool.reserve()  # one beyond the single idle child
        assert p.pool.free() == -1
        with pytest.raises(asyncio.TimeoutError):  # no further than the prefetch allows
            await asyncio.wait_for(p.pool.reserve(), timeout=0.2)
        first_pid, first = await p.pool.run(_task(1, "burn", 200, 1), reservation=first_promise)
        second = asyncio.create_task(p.pool.run(_task(2, "burn", 1, 2), reservation=second_promise))
        assert (await first).value == [1, 1]
        second_pid, second_done = await second  # waited for the child to finish
        assert second_pid == first_pid and (await second_done).value == [2, 4]


MAIN_GUARD_SCRIPT = """
import asyncio, os
from dataclasses import dataclass
import temporalio.converter
import pool
from runner import ActivitySpec, RunTask
from tests.pool import _bad_activities as B
from tests.pool.test_supervisor import _info

if __name__ == "__main__":
    @dataclass
    class OnlyInMain:  # does not exist when a child imports this script
        x: int

    async def main():
        p = pool.ProcessPool(1)
        await p.start(activities={"echo": ActivitySpec(B.echo, False)},
                      converter=temporalio.converter.DataConverter.default,
                      heartbeat_sender=None, on_fatal=print)
        try:
            reservation = await p.reserve()
            task = RunTask(task_id=1, activity_type="echo", args=(OnlyInMain(3),),
                           info=_info("echo"), heartbeat_interval=30.0)
            _, future = await p.run(task, reservation=reservation)
            done = await future
            print(done.outcome, done.value)
        finally:
            await p.stop()

    asyncio.run(main())
"""


def test_arguments_of_classes_defined_under_a_main_guard(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "guarded.py"
    script.write_text(MAIN_GUARD_SCRIPT)
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "completed OnlyInMain(x=3)"


async def test_lookahead_promises_a_busy_child_near_its_expected_end(start_method):
    async with _Pool(start_method, 1) as p:
        for _ in range(Lookahead.MIN_RUNS):  # history: this type runs ~0.4 s
            assert (await p.run("ignores_cancellation", 0.4)).value == "finished"
        # What the poller feeds it: 200 ms round trips (allowed up to 200 ms here).
        p.pool.lookahead.MAX_AHEAD = 0.2
        p.pool.lookahead.observe_poll(0.2)
        task_id, pid, long_one = await p.start("ignores_cancellation", 60.0)
        assert p.pool.promisable() == 0  # busy, and ~0.2 s before its window opens
        started = time.monotonic()
        reservation = await asyncio.wait_for(p.pool.reserve(), timeout=10)
        assert time.monotonic() - started >= 0.1  # not before one round trip before its end
        assert not long_one.done()  # promised while still busy
        assert p.pool.promisable() == 0  # one promise per busy child
        reservation.release()
        reservation.release()  # a second release gives back nothing more
        assert p.pool.promisable() == 1  # the window is still open ...
        # ... and closes once the task overruns its expected end by a round trip.
        await async_assert_eventually(lambda: p.pool.promisable() == 0)
        assert not long_one.done()
        p.pool.kill_task(pid, task_id, pool.ChildKilled(pid, "test over"))
        with pytest.raises(pool.ChildKilled):
            await long_one


async def test_lookahead_off_polls_only_for_idle_children(start_method):
    async with _Pool(start_method, 1, lookahead=False) as p:
        for _ in range(Lookahead.MIN_RUNS):
            await p.run("burn", 1, 1)
        p.pool.lookahead.observe_poll(0.05)
        _, _, busy = await p.start("burn", 300, 2)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(p.pool.reserve(), timeout=0.2)
        assert not busy.done()
        assert (await busy).value == [2, 4]


async def test_one_bad_message_in_a_read_does_not_lose_the_others(caplog):
    """The parent reads whatever arrived at once: a message it cannot unpickle is
    reported to the loop's exception handler, and the ones around it still land."""
    import logging
    import socket

    from pool.supervisor.children import Child
    from runner import ChildLog, dumps
    from runner.frames import FrameReader, send_frame

    loop = asyncio.get_running_loop()
    errors: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    ours, theirs = socket.socketpair()
    try:
        p = pool.ProcessPool(1)
        p._supervision.loop = loop
        child = Child(
            index=0,
            process=None,
            task_conn=ours,
            ctrl_conn=None,
            reader=FrameReader(ours.fileno()),
            spawned_at=time.monotonic(),
            pid=12345,
        )
        # A class the parent cannot import (protocol 0: GLOBAL "nosuch_module Ghost").
        unknown_class = b"cnosuch_module\nGhost\n."
        record = logging.makeLogRecord(
            {"name": "tests.child", "levelno": logging.WARNING, "msg": "after the bad one"}
        ).__dict__
        for data in (unknown_class, dumps(ChildLog(record=dict(record)))):
            send_frame(theirs.fileno(), data)
        with caplog.at_level(logging.WARNING, logger="tests.child"):
            p._supervision.on_readable(child)
        assert [r.getMessage() for r in caplog.records] == ["after the bad one"]
        assert len(errors) == 1 and isinstance(errors[0]["exception"], ModuleNotFoundError)
    finally:
        loop.set_exception_handler(None)
        ours.close()
        theirs.close()


async def test_a_task_waiting_for_its_busy_child_keeps_the_promise(start_method):
    async with _Pool(start_method, 1) as p:
        for _ in range(Lookahead.MIN_RUNS):
            await p.run("ignores_cancellation", 0.05)
        p.pool.lookahead.observe_poll(0.05)
        task_id, pid, long_one = await p.start("ignores_cancellation", 60.0)
        # lookahead: child still busy
        reservation = await asyncio.wait_for(p.pool.reserve(), timeout=10)
        waiting = asyncio.create_task(
            p.pool.run(_task(task_id + 1, "burn", 1, 5), reservation=reservation)
        )
        await async_assert_eventually(lambda: p.pool.snapshot().tasks_waited == 1)
        # The waiting task still holds the busy child: no second poll for it.
        assert p.pool.promisable() <= 0
        p.pool.kill_task(pid, task_id, pool.ChildKilled(pid, "test over"))
        with pytest.raises(pool.ChildKilled):
            await long_one
        new_pid, done = await asyncio.wait_for(waiting, timeout=30)  # the replacement
        assert new_pid != pid and (await done).value == [5, 25]
        assert p.pool.promisable() == 1 and p.pool.snapshot().task_wait_seconds > 0


async def test_a_child_backs_several_polls_when_tasks_are_short(start_method):
    async with _Pool(start_method, 1) as p:
        p.pool.lookahead.MAX_AHEAD = 1.0
        p.pool.lookahead.observe_poll(1.0)  # a slow server: 1 s round trips
        assert p.pool.promisable() == 1
        for _ in range(Lookahead.RECENT_KEPT):  # and tasks of a few ms
            await p.run("burn", 1, 1)
        assert p.pool.promisable() == Lookahead.MAX_DEPTH
        promises = [
            await asyncio.wait_for(p.pool.reserve(), timeout=10) for _ in range(Lookahead.MAX_DEPTH)
        ]
        assert p.pool.promisable() == 0
        dones = [
            await p.pool.run(_task(100 + n, "burn", 1, n), reservation=promise)
            for n, promise in enumerate(promises)
        ]
        for n, (_pid, done) in enumerate(dones):
            assert (await done).value == [n, n * n]
