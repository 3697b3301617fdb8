"""The Prometheus endpoint, scraped during a run; values checked against what ran."""

from __future__ import annotations

import asyncio
import urllib.request
import uuid

from prometheus_client.parser import text_string_to_metric_families

import pool
from pool.testing import free_port
from tests.helpers import async_assert_eventually
from tests.pool import _activities as A
from tests.pool import _bad_activities as B


def _scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


async def test_metrics_endpoint_reflects_what_ran(client, task_queue):
    port = free_port()
    async with pool.Worker(
        client,
        task_queue=task_queue,
        activities=[A.pid_and_square, B.exits_with_os_exit, B.burn],
        workflows=[A.RunOne, B.RunBounded],
        processes=2,
    ) as worker:
        _, server = pool.serve_metrics(worker, port)
        try:
            for i in range(3):
                await client.execute_workflow(
                    A.RunOne.run,
                    args=["pid_and_square", [i]],
                    id=f"wf-{uuid.uuid4().hex}",
                    task_queue=task_queue,
                )
            handle = await client.start_workflow(
                B.RunBounded.run,
                args=["exits_with_os_exit", [], 30, 1],
                id=f"wf-{uuid.uuid4().hex}",
                task_queue=task_queue,
            )
            await asyncio.gather(handle.result(), return_exceptions=True)
            # A task in flight while we scrape: one busy child.
            busy = await client.start_workflow(
                B.RunBounded.run,
                args=["burn", [1500, 1], 30, 1],
                id=f"wf-{uuid.uuid4().hex}",
                task_queue=task_queue,
            )
            await async_assert_eventually(lambda: worker.snapshot().running == 1)

            def replaced() -> bool:
                children = worker.process_pool.snapshot().children
                return all(c.state in ("idle", "busy") for c in children)

            await async_assert_eventually(replaced)
            loop = asyncio.get_running_loop()
            values = await loop.run_in_executor(None, _scrape, port)
            snapshot = worker.process_pool.snapshot()
            during = worker.snapshot()
            await busy.result()
        finally:
            server.shutdown()

    def value(name: str, **labels: str) -> float:
        return values[(name, tuple(sorted(labels.items())))]

    assert (
        value("pool_activity_tasks_total", activity_type="pid_and_square", outcome="completed") == 3
    )
    assert (
        value("pool_activity_tasks_total", activity_type="exits_with_os_exit", outcome="crashed")
        == 1
    )
    assert value("pool_activity_tasks_started_total", activity_type="burn") == 1
    assert value("pool_activity_tasks_running") == 1
    assert value("pool_children_alive") == 2
    assert value("pool_children_busy") == 1
    assert value("pool_children_died_total") == 1
    assert value("pool_children_started_total") == 3
    assert value("pool_children_start_failures_total") == 0
    assert value("pool_children_respawns_delayed_total") == 0  # one death: replaced at once
    assert value("pool_respawn_delay_seconds_total") == 0
    assert value("pool_polls_ahead_total") == snapshot.promised_ahead
    assert value("pool_tasks_waited_total") == snapshot.tasks_waited
    assert value("pool_tasks_redispatched_total") == snapshot.tasks_redispatched
    assert value("pool_task_wait_seconds_total") == snapshot.task_wait_seconds
    assert 0 < value("pool_child_replacement_seconds", stat="last") < 1.0
    assert value("pool_activity_run_seconds_count", activity_type="pid_and_square") == 3
    assert (
        value("pool_activity_schedule_to_start_seconds_count", activity_type="pid_and_square") == 3
    )
    # The worker's own snapshot agrees with what Prometheus served.
    assert during.completed == 3 and during.running == 1
    assert during.outcomes[("exits_with_os_exit", "crashed")] == 1
    assert during.started["burn"] == 1
    assert during.pool is not None and during.pool.busy == 1
    rss = [v for (name, _), v in values.items() if name == "pool_child_rss_bytes"]
    assert len(rss) == 2 and all(v > 10 * 1024 * 1024 for v in rss)
    assert value("pool_activity_slots_used") >= 1
