"""The SDK's standard activity metrics: the same workload through the stock worker and
ours, each on a real Prometheus endpoint of its own runtime; every activity-side series
the stock worker exports must be in ours, with the same labels."""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import urllib.request
import uuid

import temporalio.client
import temporalio.runtime
import temporalio.worker

import pool
from pool.testing import DevServer, free_port
from tests.helpers import async_assert_eventually
from tests.pool import _metric_activities as M

# The activity side's series: sdk-core's activity worker and its RPCs.
_ACTIVITY_SIDE = re.compile(
    r"^temporal_(activity_\w+"
    r"|num_pollers\{.*poller_type=\"activity_task\""
    r"|worker_task_slots_\w+\{.*worker_type=\"ActivityWorker\""
    r"|(long_)?request(_failure|_latency)?\w*\{.*operation=\"("
    r"PollActivityTaskQueue|RespondActivityTask\w+|RecordActivityTaskHeartbeat))"
)
# Labels whose values differ by design or by run.
_VOLATILE = {"task_queue", "eager", "le"}


def _series(text: str) -> set[str]:
    """Each activity-side sample as 'name{label keys and stable values}'."""
    found = set()
    for line in text.splitlines():
        if line.startswith("#") or not _ACTIVITY_SIDE.match(line):
            continue
        name, _, rest = line.partition("{")
        labels = dict(re.findall(r'(\w+)="([^"]*)"', rest.rpartition("}")[0]))
        stable = ",".join(f"{k}={'*' if k in _VOLATILE else v}" for k, v in sorted(labels.items()))
        found.add(f"{name}{{{stable}}}")
    return found


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return resp.read().decode()


async def _run_workload(dev_server: DevServer, make_worker) -> set[str]:
    port = free_port()
    runtime = temporalio.runtime.Runtime(
        telemetry=temporalio.runtime.TelemetryConfig(
            metrics=temporalio.runtime.PrometheusConfig(bind_address=f"127.0.0.1:{port}")
        )
    )
    client = await temporalio.client.Client.connect(dev_server.address, runtime=runtime)
    task_queue = f"tq-metrics-{uuid.uuid4().hex[:8]}"
    with concurrent.futures.ThreadPoolExecutor(4) as executor:
        async with make_worker(client, task_queue, executor):
            result = await client.execute_workflow(
                M.SucceedThenFail.run, id=f"wf-{uuid.uuid4().hex}", task_queue=task_queue
            )
            assert result == "done"

            async def scraped() -> set[str]:
                series = _series(await asyncio.to_thread(_scrape, port))
                # Gauges are sampled: wait until the pollers show up.
                assert any(s.startswith("temporal_num_pollers") for s in series), series
                return series

            return await async_assert_eventually(scraped, timeout=20)


def _stock(client, task_queue, executor):
    return temporalio.worker.Worker(
        client,
        task_queue=task_queue,
        activities=[M.succeeds, M.fails],
        workflows=[M.SucceedThenFail],
        activity_executor=executor,
        # Ours never runs activities eagerly; compare like with like.
        disable_eager_activity_execution=True,
        workflow_runner=pool.Worker.__init__.__kwdefaults__["workflow_runner"],
    )


def _ours(client, task_queue, executor):
    return pool.Worker(
        client,
        task_queue=task_queue,
        activities=[M.succeeds, M.fails],
        workflows=[M.SucceedThenFail],
        processes=1,
    )


async def test_every_stock_activity_series_is_in_ours(dev_server: DevServer) -> None:
    stock = await _run_workload(dev_server, _stock)
    ours = await _run_workload(dev_server, _ours)
    # The stock worker exports the families this test is about (guards the regex).
    for family in (
        "temporal_activity_task_received",
        "temporal_activity_execution_failed",
        "temporal_activity_execution_latency",
        "temporal_activity_schedule_to_start_latency",
        "temporal_activity_succeed_endtoend_latency",
        "temporal_num_pollers",
        "temporal_worker_task_slots_available",
        "temporal_worker_task_slots_used",
        "temporal_request",
        "temporal_long_request",
    ):
        assert any(s.startswith(family + "{") or s.startswith(family + "_") for s in stock), (
            family,
            sorted(stock),
        )
    missing = stock - ours
    assert not missing, f"stock series missing from pool.Worker: {sorted(missing)}"
