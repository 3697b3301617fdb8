"""Heartbeats and cancellation across processes, against the real dev server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import timedelta

import pytest
from temporalio.api.workflowservice.v1 import PauseActivityRequest, ResetActivityRequest
from temporalio.service import RPCError

import pool
from tests.helpers import async_assert_eventually, workflow_id
from tests.pool import _activities as A
from tests.pool import _hb_activities as H

ACTIVITIES = [
    H.heartbeat_until_cancelled,
    H.poll_until_cancelled,
    H.sleep_until_cancelled,
    H.heartbeat_then_fail,
    H.tight_heartbeats,
    H.heartbeat_gap,
    H.wait_for_worker_shutdown,
    H.unconvertible_heartbeat,
    A.async_double,
    A.pid_and_square,
]
WORKFLOWS = [H.CancelAfterSignal, H.RunWithOptions, A.RunOne]


def _worker(client, task_queue, **kwargs) -> pool.Worker:
    kwargs.setdefault("processes", 2)
    return pool.Worker(
        client, task_queue=task_queue, activities=ACTIVITIES, workflows=WORKFLOWS, **kwargs
    )


async def _wait_heartbeating(handle) -> str:
    """Wait until the workflow's one activity has recorded a heartbeat; its activity id."""

    async def check():
        description = await handle.describe()
        pending = description.raw_description.pending_activities
        if pending and pending[0].HasField("last_heartbeat_time"):
            return pending[0].activity_id
        return None

    return await async_assert_eventually(check, timeout=30)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("catch", "result:caught after"),
        ("uncaught", "error:CancelledError"),
    ],
)
async def test_cancel_from_the_workflow_raises_inside_the_child(
    client, task_queue, tmp_path, mode, expected
):
    notes = str(tmp_path / "notes.jsonl")
    async with _worker(client, task_queue):
        handle = await client.start_workflow(
            H.CancelAfterSignal.run,
            args=["heartbeat_until_cancelled", [mode, notes]],
            id=workflow_id(),
            task_queue=task_queue,
        )
        await _wait_heartbeating(handle)
        await handle.signal(H.CancelAfterSignal.cancel)
        result = await handle.result()
    assert result.startswith(expected)
    [note] = H.read_notes(notes)
    assert note["event"] == "cancelled"
    assert note["is_cancelled"] and note["cancel_requested"]


async def test_shielded_section_finishes_before_the_cancel_lands(client, task_queue, tmp_path):
    notes = str(tmp_path / "notes.jsonl")
    async with _worker(client, task_queue):
        handle = await client.start_workflow(
            H.CancelAfterSignal.run,
            args=["heartbeat_until_cancelled", ["shield", notes]],
            id=workflow_id(),
            task_queue=task_queue,
        )

        def shield_started() -> bool:
            return any(n["event"] == "shield-start" for n in H.read_notes(notes))

        await async_assert_eventually(shield_started, timeout=30)
        await handle.signal(H.CancelAfterSignal.cancel)
        assert await handle.result() == "error:CancelledError"
    events = [n["event"] for n in H.read_notes(notes)]
    assert events == ["shield-start", "shield-end", "cancelled"]


async def test_cooperative_activity_sees_is_cancelled(client, task_queue, tmp_path):
    notes = str(tmp_path / "notes.jsonl")
    async with _worker(client, task_queue):
        handle = await client.start_workflow(
            H.CancelAfterSignal.run,
            args=["poll_until_cancelled", [notes]],
            id=workflow_id(),
            task_queue=task_queue,
        )
        await _wait_heartbeating(handle)
        await handle.signal(H.CancelAfterSignal.cancel)
        assert await handle.result() == "result:noticed"
    assert H.read_notes(notes) == [{"event": "saw-cancel", "cancel_requested": True}]


async def test_an_activity_that_checks_is_cancelled_is_not_interrupted(
    client, task_queue, tmp_path
):
    """Without no_thread_cancel_exception, an activity that looks at is_cancelled()
    handles cancellation itself, as stock's process-pool activities do: it returns."""
    notes = tmp_path / "notes"
    async with _worker(client, task_queue):
        handle = await client.start_workflow(
            H.CancelAfterSignal.run,
            args=["sleep_until_cancelled", [str(notes)]],
            id=workflow_id(),
            task_queue=task_queue,
        )
        await _wait_heartbeating(handle)
        await handle.signal(H.CancelAfterSignal.cancel)
        assert await handle.result() == "result:noticed"
    assert H.read_notes(str(notes)) == [{"event": "returned-after-cancel"}]


async def test_heartbeat_details_reach_the_next_attempt(client, task_queue):
    async with _worker(client, task_queue):
        result = await client.execute_workflow(
            H.RunWithOptions.run,
            args=["heartbeat_then_fail", ["unused"], 0, 2],
            id=workflow_id(),
            task_queue=task_queue,
        )
    assert result == ["progress", 8]


async def test_tight_heartbeat_loop_is_throttled(client, task_queue):
    async with _worker(client, task_queue) as worker:
        before = worker.dispatcher.heartbeats.rpcs
        calls = await client.execute_workflow(
            H.RunWithOptions.run,
            args=["tight_heartbeats", [2.0], 1.0, 1],
            id=workflow_id(),
            task_queue=task_queue,
        )
        rpcs = worker.dispatcher.heartbeats.rpcs - before
    # heartbeat_timeout 1 s -> throttle 0.8 s: sends at ~0, 0.8, 1.6 s in a 2 s loop.
    assert calls > 10_000
    assert 2 <= rpcs <= 4, rpcs


async def test_not_found_heartbeat_cancels_and_reports_nothing(client, task_queue, tmp_path):
    notes = str(tmp_path / "notes.jsonl")
    async with _worker(client, task_queue):
        result = await client.execute_workflow(
            H.RunWithOptions.run,
            args=["heartbeat_gap", [notes, 2.5], 1.0, 2],
            id=workflow_id(),
            task_queue=task_queue,
        )
    assert json.loads(result) == [{"event": "cancelled", "not_found": True}]


@pytest.mark.parametrize("action", ["pause", "reset"])
async def test_pause_and_reset_cancel_the_activity(client, task_queue, tmp_path, action):
    notes = str(tmp_path / "notes.jsonl")
    async with _worker(client, task_queue):
        handle = await client.start_workflow(
            H.CancelAfterSignal.run,
            args=["heartbeat_until_cancelled", ["uncaught", notes]],
            id=workflow_id(),
            task_queue=task_queue,
        )
        activity_id = await _wait_heartbeating(handle)
        execution = {"workflow_id": handle.id}
        if action == "pause":
            request = PauseActivityRequest(namespace="default", id=activity_id, reason="test")
            request.execution.workflow_id = execution["workflow_id"]
            await client.workflow_service.pause_activity(request)
        else:
            request = ResetActivityRequest(namespace="default", id=activity_id)
            request.execution.workflow_id = execution["workflow_id"]
            await client.workflow_service.reset_activity(request)

        def cancelled():
            return H.read_notes(notes)

        [note] = await async_assert_eventually(cancelled, timeout=30)
        assert note["paused" if action == "pause" else "reset"]
        assert not note["cancel_requested"]
        # A paused activity waits for an unpause; a reset one may already have ended
        # the workflow (its one attempt failed with ActivityReset).
        with contextlib.suppress(RPCError):
            await handle.terminate()


async def test_worker_shutdown_reaches_every_child(client, task_queue, tmp_path):
    notes = str(tmp_path / "notes.jsonl")
    worker = _worker(client, task_queue, graceful_shutdown_timeout=timedelta(seconds=20))
    run = asyncio.create_task(worker.run())
    handles = [
        await client.start_workflow(
            A.RunOne.run,
            args=["wait_for_worker_shutdown", [notes]],
            id=workflow_id(),
            task_queue=task_queue,
        )
        for _ in range(2)
    ]
    await async_assert_eventually(lambda: len(H.read_notes(notes)) == 2, timeout=30)
    started = time.monotonic()
    await worker.shutdown()
    await run
    assert time.monotonic() - started < 10  # they returned at once, not after the grace
    results = []
    for handle in handles:
        async for event in handle.fetch_history_events():
            if event.HasField("activity_task_completed_event_attributes"):
                payloads = event.activity_task_completed_event_attributes.result.payloads
                results.extend(await client.data_converter.decode(payloads))
    pids = {n["pid"] for n in H.read_notes(notes)}
    assert len(pids) == 2
    assert sorted(results) == sorted(f"{pid}:True" for pid in pids)


async def test_unconvertible_heartbeat_fails_the_activity_clearly(client, task_queue):
    from temporalio.client import WorkflowFailureError

    async with _worker(client, task_queue):
        with pytest.raises(WorkflowFailureError) as info:
            await client.execute_workflow(
                A.RunOne.run,
                args=["unconvertible_heartbeat", []],
                id=workflow_id(),
                task_queue=task_queue,
            )
    cause = info.value.cause.cause
    assert cause.type == "HeartbeatConversionError"
    assert "could not be converted" in cause.message


async def test_heartbeat_storm_leaves_the_worker_responsive(client, task_queue):
    # Two children heartbeat in a tight loop for 3 s; the third child and the
    # parent's loop must keep serving other activities meanwhile.
    async with _worker(client, task_queue, processes=3) as worker:
        storm = [
            await client.start_workflow(
                H.RunWithOptions.run,
                args=["tight_heartbeats", [3.0], 1.0, 1],
                id=workflow_id(),
                task_queue=task_queue,
            )
            for _ in range(2)
        ]

        def storming() -> bool:
            return worker.dispatcher.outstanding == 2

        await async_assert_eventually(storming, timeout=30)
        started = time.monotonic()
        for name, expected in (("async_double", 8), ("pid_and_square", 16)):
            value, _ = await client.execute_workflow(
                A.RunOne.run, args=[name, [4]], id=workflow_id(), task_queue=task_queue
            )
            assert value == expected
        assert time.monotonic() - started < 2.0  # while two children are storming
        assert worker.dispatcher.outstanding == 2
        results = await asyncio.gather(*(h.result() for h in storm))
        assert all(calls > 10_000 for calls in results)
    assert worker.is_shutdown


async def test_cancel_raises_inside_a_thread_executor_activity(client, task_queue, tmp_path):
    import concurrent.futures

    notes = str(tmp_path / "notes.jsonl")
    with concurrent.futures.ThreadPoolExecutor(2) as executor:
        async with pool.Worker(
            client,
            task_queue=task_queue,
            activities=ACTIVITIES,
            workflows=WORKFLOWS,
            activity_executor=executor,
        ):
            handle = await client.start_workflow(
                H.CancelAfterSignal.run,
                args=["heartbeat_until_cancelled", ["uncaught", notes]],
                id=workflow_id(),
                task_queue=task_queue,
            )
            await _wait_heartbeating(handle)
            await handle.signal(H.CancelAfterSignal.cancel)
            assert await handle.result() == "error:CancelledError"
    [note] = H.read_notes(notes)
    assert note["event"] == "cancelled" and note["cancel_requested"]
