"""Supervision under real faults: a task for a child that just died idle, the activity's
subprocesses dying with its child, the core freed at the start-to-close deadline, and
SIGHUP on the launcher."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import temporalio.converter
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import TimeoutError
from temporalio.testing import ActivityEnvironment

import pool
from runner import ActivitySpec, RunTask
from tests.helpers import async_assert_eventually, workflow_id
from tests.pool import _fault_activities as F
from tests.pool.test_launcher import REPO, _env, _run_args

ACTIVITIES = {
    name: ActivitySpec(fn=getattr(F, name), no_thread_cancel_exception=False)
    for name in ("start_sleeper", "crunch")
}


def _task(task_id: int, name: str, *args: Any) -> RunTask:
    info = dataclasses.replace(
        ActivityEnvironment.default_info(), activity_type=name, task_token=os.urandom(16)
    )
    return RunTask(task_id=task_id, activity_type=name, args=args, info=info, heartbeat_interval=30)


async def _started_pool(processes: int, **config: Any) -> pool.ProcessPool:
    started = pool.ProcessPool(processes, config=pool.PoolConfig(**config))
    await started.start(
        activities=ACTIVITIES,
        converter=temporalio.converter.DataConverter.default,
        heartbeat_sender=None,
        on_fatal=lambda err: None,
    )
    return started


def _gone(pid: int) -> bool:
    """Exited (a zombie nobody reaped yet counts as exited)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_dead_without_the_loop(pids: list[int]) -> None:
    """Block until every pid has exited, on pidfds: the loop does not run meanwhile, so
    the pool has not seen the deaths yet (its sentinel callbacks are still pending)."""
    fds = []
    for pid in pids:
        try:
            fds.append(os.pidfd_open(pid))
        except ProcessLookupError:  # already exited and reaped (by the fork server)
            continue
    try:
        deadline = time.monotonic() + 10
        pending = list(fds)
        while pending:
            readable, _, _ = select.select(pending, [], [], deadline - time.monotonic())
            assert readable, f"children {pids} still alive after 10 s"
            pending = [fd for fd in pending if fd not in readable]
    finally:
        for fd in fds:
            os.close(fd)


# -- item 2: a task for a child that died idle --------------------------------------------


async def test_a_task_for_children_that_died_idle_runs_on_a_replacement(caplog):
    caplog.set_level(logging.INFO, logger="pool.supervisor")
    started = await _started_pool(2)
    try:
        victims = started.pids
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        _wait_dead_without_the_loop(victims)
        # Both children look idle to the pool: the task is written to one, then the
        # other (EPIPE each time), then waits for a replacement.
        await started.reserve()
        pid, future = await started.run(_task(1, "crunch", 1, 6))
        done = await future
        assert done.outcome == "completed" and done.value == [6, 36]
        assert pid not in victims
        snapshot = started.snapshot()
        assert snapshot.tasks_redispatched == 2
        assert snapshot.deaths == 2
        gc.collect()  # an unretrieved future's exception is logged when it is collected
    finally:
        await started.stop()
    deaths = [r.getMessage() for r in caplog.records if "died (" in r.getMessage()]
    assert len(deaths) == 2 and all(m.endswith("while idle") for m in deaths), deaths
    assert "never retrieved" not in caplog.text


# -- item 3: the activity's subprocesses die with its child --------------------------------


async def _sleeper_of(marker: Path) -> tuple[int, int]:
    text = await async_assert_eventually(lambda: marker.exists() and marker.read_text())
    child, sleeper = map(int, text.split())
    assert psutil.Process(sleeper).name() == "sleep"
    return child, sleeper


@pytest.mark.parametrize("how", ["crash", "sigkill", "supervisor_kill", "recycle", "shutdown"])
async def test_an_activitys_subprocess_dies_with_its_child(how, tmp_path):
    marker = tmp_path / "sleeper"
    then = {"crash": "crash", "recycle": "return", "shutdown": "return"}.get(how, "hang")
    started = await _started_pool(1, max_tasks_per_child=1 if how == "recycle" else None)
    try:
        await started.reserve()
        pid, future = await started.run(_task(1, "start_sleeper", str(marker), then))
        child, sleeper = await _sleeper_of(marker)
        assert child == pid
        if how == "crash":
            with pytest.raises(pool.ChildProcessDied, match="exit code 3"):
                await future
        elif how == "sigkill":
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(pool.ChildProcessDied, match="SIGKILL"):
                await future
        elif how == "supervisor_kill":
            started.kill_task(pid, 1, pool.ChildKilled(pid, "test"))
            with pytest.raises(pool.ChildKilled):
                await future
        else:
            assert (await future).value == sleeper
            if how == "shutdown":
                await started.stop()
        await async_assert_eventually(lambda: _gone(sleeper), timeout=5)
        assert _gone(pid)
    finally:
        await started.stop()


# -- item 4: the core is free at the start-to-close deadline -------------------------------


@pytest.mark.parametrize("name", ["swallow_cancel", "long_c_call"])
async def test_the_core_is_free_within_start_to_close_plus_cancel_grace(
    name, client, task_queue, tmp_path
):
    start_to_close, grace = 1.0, 0.3
    marker = tmp_path / "running"
    async with pool.Worker(
        client,
        task_queue=task_queue,
        activities=[F.swallow_cancel, F.long_c_call],
        workflows=[F.RunOnce],
        pool_config=pool.PoolConfig(processes=1, cancel_grace=grace),
    ) as worker:
        handle = await client.start_workflow(
            F.RunOnce.run,
            args=[name, [str(marker)], start_to_close],
            id=workflow_id(),
            task_queue=task_queue,
        )
        text = await async_assert_eventually(lambda: marker.exists() and marker.read_text())
        pid, started_at = int(text.split()[0]), float(text.split()[1])
        [running] = worker.dispatcher.running()
        await async_assert_eventually(lambda: _gone(pid), timeout=start_to_close + grace + 5)
        freed = time.time()
        assert freed - started_at < start_to_close + grace + 0.5, freed - started_at
        print(f"\n{name}: core free {freed - started_at:.2f} s after the attempt started")
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        assert isinstance(failure.value.cause.cause, TimeoutError)
        assert worker.process_pool.snapshot().kills == 1
        assert running.pid == pid


# -- item 5: SIGHUP on the launcher ----------------------------------------------------------


async def test_a_hangup_stops_the_launcher_gracefully(dev_server, task_queue, tmp_path):
    """SIGHUP to the launcher's whole process group, as a closed terminal sends it: the
    launcher shuts down as on SIGTERM, logged; the fork server and the shared state
    manager (in that group too) do not die first."""
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "pool", *_run_args(dev_server, task_queue, "--processes", "2")],
            cwd=REPO,
            env=_env(tmp_path),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # its own group, to hang up on
        )
    try:
        await async_assert_eventually(lambda: "pool worker started" in out.read_text(), timeout=30)
        os.killpg(launcher.pid, signal.SIGHUP)
        assert await asyncio.to_thread(launcher.wait, 30) == 0, err.read_text()
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    log = err.read_text()
    assert "SIGHUP received: shutting down" in log
    assert "worker stopped" in log
    assert "died" not in log and "Traceback" not in log, log
