"""Chaos, bounded and quick on 2 cores: children SIGKILLed at random during a load, the
dev server restarted mid-load, the launcher SIGKILLed. Each test prints its figures
(``scripts/test tests/pool/test_chaos.py -q -s`` shows them)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path

import psutil
import pytest
import temporalio.client

import pool
from pool.testing import DevServer
from tests.helpers import async_assert_eventually, workflow_id
from tests.pool import _fault_activities as F
from tests.pool.test_launcher import _env, _Launched

pytestmark = pytest.mark.integration

ACTIVITIES = [F.crunch, F.start_sleeper]
WORKFLOWS = [F.CrunchFanOut, F.RunOnce]
# A high crash-loop limit: deaths of running children must not stop the worker. (Until
# the crash-loop policy counts only children that die before they are ready.)
CHAOS = pool.PoolConfig(
    processes=2, cancel_grace=0.3, kill_escalation=0.1, crash_loop_max_deaths=1000
)


def _expected(count: int) -> list[list[int]]:
    return [[i, i * i] for i in range(count)]


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    """The processes still running (a zombie nobody reaped yet counts as gone)."""
    found = []
    for proc in procs:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


async def test_children_sigkilled_at_random_during_a_load(client, task_queue):
    """A ready child, idle or busy, SIGKILLed every 0.2 s (at most 12): every workflow
    completes with correct results and the worker stays up."""
    rng = random.Random(20261202)
    async with pool.Worker(
        client, task_queue=task_queue, activities=ACTIVITIES, workflows=WORKFLOWS, pool_config=CHAOS
    ) as worker:
        began = time.monotonic()
        handles = [
            await client.start_workflow(
                F.CrunchFanOut.run, args=[8, 100], id=workflow_id(), task_queue=task_queue
            )
            for _ in range(6)
        ]
        done = asyncio.gather(*(h.result() for h in handles))
        killed: list[int] = []
        while not done.done() and len(killed) < 12:
            ready = [
                c.pid
                for c in worker.process_pool.snapshot().children
                if c.state in ("idle", "busy")
            ]
            if ready:
                victim = rng.choice(ready)
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)
            await asyncio.wait([done], timeout=0.2)  # paces the kills; not a wait for state
        results = await asyncio.wait_for(done, timeout=120)
        elapsed = time.monotonic() - began
        assert results == [_expected(8)] * 6
        assert len(killed) >= 5, f"the load ended after {len(killed)} kills"
        snapshot = worker.process_pool.snapshot()
        await async_assert_eventually(lambda: len(worker.process_pool.pids) == 2)
        assert snapshot.deaths == len(killed)
        assert not worker.is_shutdown
        crashed = sum(n for (_, label), n in worker.dispatcher.stats.items() if label == "crashed")
        print(
            f"\nchaos: {len(killed)} SIGKILLs survived, 48/48 activities and 6/6 workflows "
            f"completed in {elapsed:.1f} s; {crashed} tasks failed as ChildProcessDied and "
            f"were retried, {snapshot.tasks_redispatched} re-dispatched without an attempt"
        )


async def test_dev_server_restarted_mid_load(tmp_path, task_queue):
    """A server that keeps its state (``--db-filename``) restarts mid-load: the worker
    reconnects by itself, keeps its children, and every workflow completes."""
    server = DevServer(db_filename=str(tmp_path / "temporal.db"))
    server.start()
    try:
        client = await temporalio.client.Client.connect(server.address)
        async with pool.Worker(
            client,
            task_queue=task_queue,
            activities=ACTIVITIES,
            workflows=WORKFLOWS,
            pool_config=CHAOS,
        ) as worker:
            pids = set(worker.process_pool.pids)
            handles = [
                await client.start_workflow(
                    F.CrunchFanOut.run, args=[6, 150], id=workflow_id(), task_queue=task_queue
                )
                for _ in range(4)
            ]

            def finished() -> int:
                return sum(worker.dispatcher.stats.values())

            await async_assert_eventually(lambda: finished() >= 4, timeout=30)
            down = time.monotonic()
            await asyncio.get_running_loop().run_in_executor(None, server.restart)
            up = time.monotonic()
            before = finished()
            await async_assert_eventually(lambda: finished() > before, timeout=60)
            resumed = time.monotonic()
            fresh = await temporalio.client.Client.connect(server.address)
            for handle in handles:
                result = await asyncio.wait_for(
                    fresh.get_workflow_handle(handle.id).result(), timeout=120
                )
                assert result == _expected(6)
            assert set(worker.process_pool.pids) == pids
            assert worker.process_pool.snapshot().deaths == 0
            print(
                f"\nserver restart: outage {up - down:.1f} s; first activity done "
                f"{resumed - up:.1f} s after the server was back; 4/4 workflows completed"
            )
    finally:
        server.stop()


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
async def test_launcher_sigkilled_leaves_no_descendant_and_no_socket(
    start_method: str,
    dev_server: DevServer,
    client: temporalio.client.Client,
    task_queue: str,
    tmp_path: Path,
) -> None:
    """The worker's children, the fork server, the shared state manager, and the
    activity's own subprocesses (grandchildren) all go; nothing is left in TMPDIR."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**_env(tmp_path), "TMPDIR": str(tmpdir)}
    descendants: list[psutil.Process] = []
    launcher = _Launched(
        [
            "run",
            "tests.pool._fault_activities",
            "--task-queue",
            task_queue,
            "--address",
            dev_server.address,
            "--processes",
            "2",
            "--start-method",
            start_method,
        ],
        env,
    )
    try:
        await launcher.line("pool worker started")
        markers = [tmp_path / f"sleeper-{i}" for i in range(2)]
        for marker in markers:
            await client.start_workflow(
                F.RunOnce.run,
                args=["start_sleeper", [str(marker), "hang"], 60],
                id=workflow_id(),
                task_queue=task_queue,
            )
        for marker in markers:
            await async_assert_eventually(marker.exists, timeout=30)
        sleepers = [int(m.read_text().split()[1]) for m in markers]
        descendants = psutil.Process(launcher.proc.pid).children(recursive=True)
        assert set(sleepers) <= {p.pid for p in descendants}
        assert any(tmpdir.iterdir()), "no socket in TMPDIR to begin with"
        launcher.signal(signal.SIGKILL)
        killed = time.monotonic()
        await asyncio.to_thread(launcher.proc.wait, 10)
        await async_assert_eventually(lambda: not _alive(descendants), timeout=10)
        gone = time.monotonic() - killed
        await async_assert_eventually(lambda: not list(tmpdir.rglob("*")), timeout=10)
        print(
            f"\nlauncher SIGKILL ({start_method}): {len(descendants)} descendants "
            f"({len(sleepers)} grandchildren `sleep 300`) gone {gone:.2f} s later; "
            "0 orphans, 0 files left in TMPDIR"
        )
    finally:
        launcher.stop()
        for proc in _alive(descendants):  # only after a failure: what this test started
            proc.kill()
