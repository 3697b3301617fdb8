"""Fatal errors and shutdown: nothing is lost, nothing hangs."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from datetime import timedelta

import pytest

import pool
from tests.helpers import async_assert_eventually, workflow_id
from tests.pool import _activities as A
from tests.pool import _bad_activities as B
from tests.pool import _hb_activities as H
from tests.pool import _start_activities as S


async def _failures(handle) -> list:
    return [
        event.activity_task_failed_event_attributes.failure
        async for event in handle.fetch_history_events()
        if event.HasField("activity_task_failed_event_attributes")
    ]


async def test_unfinished_activities_are_handed_back_as_worker_shutdown(client, task_queue):
    worker = pool.Worker(
        client,
        task_queue=task_queue,
        activities=[A.sleep_then_return],
        workflows=[A.RunOne],
        processes=1,
        graceful_shutdown_timeout=timedelta(seconds=0.3),
    )
    run = asyncio.create_task(worker.run())
    handle = await client.start_workflow(
        A.RunOne.run,
        args=["sleep_then_return", [60, "late"]],
        id=workflow_id(),
        task_queue=task_queue,
    )
    await async_assert_eventually(lambda: worker.dispatcher and worker.dispatcher.outstanding == 1)
    await worker.shutdown()
    await run
    [failure] = await _failures(handle)
    assert failure.application_failure_info.type == "WorkerShutdown"
    assert not failure.application_failure_info.non_retryable
    await handle.terminate()


async def test_losing_the_shared_state_manager_is_a_fatal_error(client, task_queue):
    fatal: list[BaseException] = []

    async def on_fatal(err: BaseException) -> None:
        fatal.append(err)

    worker = pool.Worker(
        client,
        task_queue=task_queue,
        activities=[H.tight_heartbeats],
        workflows=[H.RunWithOptions],
        processes=1,
        on_fatal_error=on_fatal,
    )
    run = asyncio.create_task(worker.run())
    handle = await client.start_workflow(
        H.RunWithOptions.run,
        args=["tight_heartbeats", [30.0], 2.0, 1],
        id=workflow_id(),
        task_queue=task_queue,
    )
    await async_assert_eventually(lambda: worker.dispatcher and worker.dispatcher.outstanding == 1)
    os.kill(worker.shared_state_manager.pid, signal.SIGKILL)
    with pytest.raises(pool.SharedStateLostError, match="heartbeat channel"):
        await asyncio.wait_for(run, timeout=60)
    assert len(fatal) == 1 and isinstance(fatal[0], pool.SharedStateLostError)
    assert worker.is_shutdown
    await handle.terminate()


async def test_children_dying_in_tasks_never_stop_the_worker(client, task_queue):
    async with pool.Worker(
        client,
        task_queue=task_queue,
        activities=[S.exits_until_attempt],
        workflows=[B.RunBounded],
        pool_config=pool.PoolConfig(
            processes=1, crash_loop_max_deaths=2, respawn_backoff=0.01, respawn_backoff_max=0.05
        ),
    ) as worker:
        attempt = await client.execute_workflow(
            B.RunBounded.run,
            args=["exits_until_attempt", [21], 30, 0],
            id=workflow_id(),
            task_queue=task_queue,
        )
        assert attempt == 21  # after 20 deaths in a row, with crash_loop_max_deaths=2
        assert worker.is_running
        snapshot = worker.process_pool.snapshot()
        assert (snapshot.deaths, snapshot.start_failures) == (20, 0)
        assert snapshot.respawns_delayed == 19


async def test_children_ignore_sigint(client, task_queue):
    async with pool.Worker(
        client,
        task_queue=task_queue,
        activities=[B.pid_of_child],
        workflows=[B.RunBounded],
        processes=1,
    ) as worker:
        [pid] = worker.process_pool.pids
        os.kill(pid, signal.SIGINT)
        answered = await client.execute_workflow(
            B.RunBounded.run,
            args=["pid_of_child", [], 30, 1],
            id=workflow_id(),
            task_queue=task_queue,
        )
        assert answered == pid
        assert worker.process_pool.snapshot().deaths == 0


@pytest.mark.parametrize("with_workflows", [True, False])
async def test_shutdown_is_announced_once(client, task_queue, caplog, with_workflows):
    caplog.set_level(logging.INFO)
    async with pool.Worker(
        client,
        task_queue=task_queue,
        activities=[A.pid_and_square],
        workflows=[A.RunOne] if with_workflows else [],
        processes=1,
    ):
        pass
    announced = [
        r for r in caplog.records if r.getMessage().startswith("Beginning worker shutdown")
    ]
    assert len(announced) == 1, [(r.name, r.getMessage()) for r in announced]
