"""Our SharedStateManager with the STOCK temporalio Worker, a ProcessPoolExecutor and a
real Temporal dev server: heartbeats flow, and the last details survive a failed attempt."""

from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import temporalio.client
import temporalio.worker

from shared_state import SharedStateManager
from tests.shared_state import _activities

_WORKFLOW_TIMEOUT = 60


@pytest.fixture
def manager() -> Iterator[SharedStateManager]:
    with SharedStateManager.create() as manager:
        yield manager


async def _run(
    client: temporalio.client.Client,
    task_queue: str,
    manager: SharedStateManager,
    activity: str,
    count: int,
) -> object:
    with concurrent.futures.ProcessPoolExecutor(2) as executor:
        async with temporalio.worker.Worker(
            client,
            task_queue=task_queue,
            workflows=[_activities.RunActivity],
            activities=[_activities.heartbeat_many, _activities.heartbeat_then_fail_once],
            activity_executor=executor,
            shared_state_manager=manager,
            max_concurrent_activities=2,
        ):
            return await client.execute_workflow(
                _activities.RunActivity.run,
                args=[activity, count],
                id=f"wf-{uuid.uuid4()}",
                task_queue=task_queue,
                execution_timeout=timedelta(seconds=_WORKFLOW_TIMEOUT),
            )


async def test_a_sync_activity_in_a_process_pool_heartbeats_many_times(
    client: temporalio.client.Client, task_queue: str, manager: SharedStateManager
) -> None:
    result = await _run(client, task_queue, manager, "heartbeat_many", 500)
    assert result == 500
    assert manager.stats()["delivered"] >= 1
    assert "heartbeaters: 0" in repr(manager)
    assert manager.error is None


async def test_the_next_attempt_sees_the_last_heartbeat_details(
    client: temporalio.client.Client, task_queue: str, manager: SharedStateManager
) -> None:
    result = await _run(client, task_queue, manager, "heartbeat_then_fail_once", 50)
    assert result == [49, {"step": 49}]
