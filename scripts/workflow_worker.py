#!/usr/bin/env python
"""A stock, workflow-only worker in a process of its own, for ``loadtest.py
--workflow-process``: the worker under test then runs only activities, so its
process's CPU is the activity side alone, for every kind of worker alike.

    loadtest ─▶ python scripts/workflow_worker.py ADDRESS NAMESPACE TASK_QUEUE
        ─▶ temporalio.worker.Worker(workflows=[LoadWorkflow]) ─▶ "ready" on stdout
        ─▶ runs until its stdin closes (the loadtest ended or died) ─▶ shuts down
"""

from __future__ import annotations

import asyncio
import sys

import _common  # noqa: F401  (sys.path set-up)
import temporalio.client
import temporalio.worker
import workloads


async def main(address: str, namespace: str, task_queue: str) -> None:
    client = await temporalio.client.Client.connect(address, namespace=namespace)
    worker = temporalio.worker.Worker(
        client, task_queue=task_queue, workflows=[workloads.LoadWorkflow]
    )
    loop = asyncio.get_running_loop()
    async with worker:
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.read)  # EOF: time to stop


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
