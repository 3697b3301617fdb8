"""Starting children: the stdlib shared state manager, initializers, start failures,
ProcessPoolExecutor options, and the crash-loop policy (only children that die before
they are ready count; deaths of ready children slow their respawn but never stop the
worker)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import os
import signal
import sys
from typing import Any

import pytest
import temporalio.converter
import temporalio.worker

import pool
from runner import ActivitySpec, RunTask
from tests.helpers import async_assert_eventually, workflow_id
from tests.pool import _bad_activities as B
from tests.pool import _hb_activities as H
from tests.pool import _start_activities as S
from tests.pool.test_supervisor import _info

# -- the stock documented setup: ProcessPoolExecutor + a stdlib Manager -------------------


async def test_the_stdlib_manager_carries_heartbeats_and_cancellation(
    client, task_queue, tmp_path
):
    notes = str(tmp_path / "notes.jsonl")
    manager = multiprocessing.Manager()
    try:
        with concurrent.futures.ProcessPoolExecutor(2) as executor:
            async with pool.Worker(
                client,
                task_queue=task_queue,
                activities=[H.heartbeat_until_cancelled],
                workflows=[H.CancelAfterSignal],
                activity_executor=executor,
                shared_state_manager=temporalio.worker.SharedStateManager.create_from_multiprocessing(
                    manager
                ),
            ) as worker:
                handle = await client.start_workflow(
                    H.CancelAfterSignal.run,
                    args=["heartbeat_until_cancelled", ["uncaught", notes]],
                    id=workflow_id(),
                    task_queue=task_queue,
                )

                async def heartbeating() -> bool:
                    description = await handle.describe()
                    pending = description.raw_description.pending_activities
                    return bool(pending) and pending[0].HasField("last_heartbeat_time")

                await async_assert_eventually(heartbeating, timeout=30)
                await handle.signal(H.CancelAfterSignal.cancel)
                assert await handle.result() == "error:CancelledError"
                assert worker.process_pool.snapshot().deaths == 0
    finally:
        manager.shutdown()
    [note] = H.read_notes(notes)
    assert note["event"] == "cancelled" and note["cancel_requested"]
