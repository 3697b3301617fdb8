"""Misbehaving activities against the real dev server: one table, each row an
activity and what the workflow must see; after every row the worker still works.
Plus a dead parent (the chaos scenarios are in test_chaos.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError, TimeoutError

import pool
from tests.helpers import assert_eventually, async_assert_eventually, workflow_id
from tests.pool import _bad_activities as B

ACTIVITIES = [
    B.exits_with_os_exit,
    B.exits_with_sys_exit,
    B.kills_itself,
    B.segfaults,
    B.returns_unpicklable,
    B.raises_unpicklable,
    B.returns_too_much,
    B.ignores_signals_forever,
    B.ignores_cancellation,
    B.floods_output,
    B.pid_of_child,
    B.burn,
]
WORKFLOWS = [B.RunBounded, B.BurnFanOut]
FAST = pool.PoolConfig(processes=2, cancel_grace=0.3, kill_escalation=0.1, local_timeout_buffer=0.2)

# name, args, start-to-close (s), expected error type (None: completes), message fragment
TABLE = [
    ("exits_with_os_exit", [], 30, "ChildProcessDied", "exit code 3"),
    ("exits_with_sys_exit", [], 30, "ChildProcessDied", "exit code 4"),
    ("kills_itself", [], 30, "ChildProcessDied", "SIGKILL"),
    ("segfaults", [], 30, "ChildProcessDied", "SIGSEGV"),
    # Converted in the child (issue 13): the converter refuses it before pickling could.
    ("returns_unpicklable", [], 30, "ResultConversionError", "could not be converted"),
    ("raises_unpicklable", [], 30, "LockedError", "an error holding a lock"),
    ("returns_too_much", [], 30, "PayloadTooLarge", "blob size limit"),
    ("no_such_activity", [], 30, "NotFoundError", "not registered"),
    ("burn", ["not a number", 3], 30, "", "Failed decoding arguments"),
    ("ignores_signals_forever", [], 1, "StartToClose", "timed out"),
    ("floods_output", [5], 30, None, 5),
]


@pytest.mark.parametrize(
    ("name", "args", "start_to_close", "error_type", "expected"),
    TABLE,
    ids=[row[0] if row[0] != "burn" else "undecodable_arguments" for row in TABLE],
)
async def test_misbehaving_activity(
    client, task_queue, name, args, start_to_close, error_type, expected
):
    async with pool.Worker(
        client,
        task_queue=task_queue,
        activities=ACTIVITIES,
        workflows=WORKFLOWS,
        pool_config=FAST,
    ) as worker:
        pids_before = set(worker.process_pool.pids)
        run = client.execute_workflow(
            B.RunBounded.run,
            args=[name, args, start_to_close, 1],
            id=workflow_id(),
            task_queue=task_queue,
        )
        if error_type is None:
            assert await run == expected
        else:
            with pytest.raises(WorkflowFailureError) as info:
                await run
            cause = info.value.cause.cause
            if error_type == "StartToClose":
                assert isinstance(cause, TimeoutError)
                await async_assert_eventually(
                    lambda: worker.process_pool.snapshot().kills == 1, timeout=10
                )
            else:
                assert isinstance(cause, ApplicationError)
                assert (cause.type or "") == error_type
                assert expected in cause.message
                assert not cause.non_retryable
        # The worker lives on, with a full pool.
        assert await client.execute_workflow(
            B.RunBounded.run, args=["burn", [1, 5], 30, 1], id=workflow_id(), task_queue=task_queue
        ) == [5, 25]
        await async_assert_eventually(lambda: len(worker.process_pool.pids) == 2)
        if error_type == "ChildProcessDied":
            assert set(worker.process_pool.pids) != pids_before


async def test_cancelled_activity_that_ignores_it_is_killed_and_reported(client, task_queue):
    from tests.pool import _hb_activities as H

    async with pool.Worker(
        client,
        task_queue=task_queue,
        activities=[*ACTIVITIES, H.heartbeat_until_cancelled],
        workflows=[*WORKFLOWS, H.CancelAfterSignal],
        pool_config=FAST,
    ) as worker:
        handle = await client.start_workflow(
            H.CancelAfterSignal.run,
            args=["ignores_cancellation", [60]],
            id=workflow_id(),
            task_queue=task_queue,
        )

        def running():
            return worker.dispatcher.outstanding == 1

        await async_assert_eventually(running, timeout=30)
        [running_task] = worker.dispatcher.running()
        pid = running_task.pid
        await handle.signal(H.CancelAfterSignal.cancel)
        # ignores_cancellation never heartbeats, so the cancel request cannot reach it
        # through a heartbeat; the local start-to-close deadline is 60 s. Cancel it from
        # the worker side as a heartbeat answer would:
        worker.dispatcher.cancel(
            running_task.token,
            __import__("temporalio").activity.ActivityCancellationDetails(cancel_requested=True),
            "test",
        )
        assert await handle.result() == "error:CancelledError"
        assert worker.process_pool.snapshot().kills == 1
        await async_assert_eventually(lambda: pid not in worker.process_pool.pids)


PARENT_SCRIPT = """
import asyncio, sys
import temporalio.client
import pool
from tests.pool import _bad_activities as B

async def main():
    client = await temporalio.client.Client.connect(sys.argv[1])
    async with pool.Worker(client, task_queue=sys.argv[2], activities=[B.burn], processes=2) as w:
        print(" ".join(map(str, w.process_pool.pids)), flush=True)
        await asyncio.Event().wait()

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_children_die_with_a_sigkilled_parent(dev_server, task_queue, tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    parent = subprocess.Popen(
        [sys.executable, str(script), dev_server.address, task_queue],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        line = parent.stdout.readline()  # blocks until the worker printed its pids
        pids = [int(p) for p in line.split()]
        assert len(pids) == 2
        parent.kill()
        parent.wait(timeout=10)

        def all_gone() -> bool:
            for pid in pids:
                try:
                    if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                        return False
                except psutil.NoSuchProcess:
                    pass
            return True

        assert_eventually(all_gone, timeout=10)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()
