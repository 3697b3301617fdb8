"""Activity interceptors, plugins, stock log lines, the cancel message and the metric
meter, against the real dev server, for each kind of activity (child, thread, loop)."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import re
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import temporalio.client
import temporalio.runtime
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.plugin import SimplePlugin
from temporalio.worker import (
    ActivityInboundInterceptor,
    ActivityOutboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

import pool
from pool.testing import DevServer, free_port
from tests.helpers import async_assert_eventually, workflow_id
from tests.pool import _icpt_activities as I

WORKFLOWS = [I.TwoAttempts, I.CancelOnSignal, I.RunOnce]


class Recorder(Interceptor):
    """Adds 100 to the first argument, marks the result, and appends a detail to every
    heartbeat; records what it saw."""

    def __init__(self) -> None:
        self.executed: list[tuple[str, list[Any]]] = []
        self.heartbeats: list[tuple[Any, ...]] = []

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _RecordingInbound(next, self)


class _RecordingInbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, recorder: Recorder) -> None:
        super().__init__(next)
        self._recorder = recorder

    def init(self, outbound: ActivityOutboundInterceptor) -> None:
        super().init(_RecordingOutbound(outbound, self._recorder))

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        self._recorder.executed.append((activity.info().activity_type, list(input.args)))
        input.args = [input.args[0] + 100, *input.args[1:]]
        result = await super().execute_activity(input)
        return {**result, "intercepted": True}


class _RecordingOutbound(ActivityOutboundInterceptor):
    def __init__(self, next: ActivityOutboundInterceptor, recorder: Recorder) -> None:
        super().__init__(next)
        self._recorder = recorder

    def heartbeat(self, *details: Any) -> None:
        self._recorder.heartbeats.append(details)
        super().heartbeat(*details, "via-interceptor")


KINDS = {
    "process": dict(activities=[I.echo_sync]),
    "thread": dict(activities=[I.echo_sync], threads=True),
    "async": dict(activities=[I.echo_async]),
}


@asynccontextmanager
async def _worker(
    client: temporalio.client.Client, task_queue: str, activities: list, threads: bool = False, **kw
) -> AsyncIterator[pool.Worker]:
    executor = concurrent.futures.ThreadPoolExecutor(4) if threads else None
    try:
        async with pool.Worker(
            client,
            task_queue=task_queue,
            activities=activities,
            workflows=WORKFLOWS,
            activity_executor=executor,
            processes=None if threads else 1,
            **kw,
        ) as worker:
            yield worker
    finally:
        if executor is not None:
            executor.shutdown()


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_interceptor_replaces_args_and_result_and_sees_heartbeats(
    client: temporalio.client.Client, task_queue: str, kind: str
) -> None:
    recorder = Recorder()
    async with _worker(client, task_queue, interceptors=[recorder], **KINDS[kind]):
        result = await client.execute_workflow(
            I.TwoAttempts.run, args=["echo", [5]], id=workflow_id(), task_queue=task_queue
        )
    assert result["x"] == 105  # the activity got the interceptor's argument
    assert result["intercepted"] is True  # the workflow got the interceptor's result
    # The first attempt's heartbeat passed through the outbound interceptor, whose
    # extra detail reached the server and came back as the second attempt's details.
    assert result["details"] == ["beat", 105, "via-interceptor"]
    assert ("beat", 105) in recorder.heartbeats
    assert recorder.executed == [("echo", [5]), ("echo", [5])]
    assert (result["pid"] != os.getpid()) is (kind == "process")


class SetsContextVar(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _SettingInbound(next)


class _SettingInbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        I.REQUEST_ID.set("set by the interceptor")
        return await super().execute_activity(input)


@pytest.mark.parametrize("kind", ["thread", "async"])
async def test_context_variables_set_by_an_interceptor_reach_parent_activities(
    client: temporalio.client.Client, task_queue: str, kind: str
) -> None:
    fn = I.read_context_var_async if kind == "async" else I.read_context_var_sync
    async with _worker(
        client, task_queue, [fn], threads=kind == "thread", interceptors=[SetsContextVar()]
    ):
        result = await client.execute_workflow(
            I.RunOnce.run, "read_context_var", id=workflow_id(), task_queue=task_queue
        )
    assert result == "set by the interceptor"


async def _traced_client(
    dev_server: DevServer,
) -> tuple[temporalio.client.Client, InMemorySpanExporter]:
    """A client with TracingInterceptor, and the in-memory exporter of its spans."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    client = await temporalio.client.Client.connect(
        dev_server.address, interceptors=[TracingInterceptor(provider.get_tracer(__name__))]
    )
    return client, exporter


async def test_tracing_interceptor_emits_run_activity_spans_for_child_activities(
    dev_server: DevServer, task_queue: str
) -> None:
    client, exporter = await _traced_client(dev_server)
    async with _worker(client, task_queue, activities=[I.echo_sync]):
        await client.execute_workflow(
            I.TwoAttempts.run, args=["echo", [1]], id=workflow_id(), task_queue=task_queue
        )
    spans = exporter.get_finished_spans()
    runs = [s for s in spans if s.name == "RunActivity:echo"]
    assert len(runs) == 2, [s.name for s in spans]  # one per attempt
    starts = [s for s in spans if s.name == "StartActivity:echo"]
    assert starts, [s.name for s in spans]
    # The activity's spans continue the workflow's trace, through the task's headers.
    assert {s.context.trace_id for s in runs} == {starts[0].context.trace_id}


async def test_a_span_opened_in_the_child_is_a_child_of_run_activity(
    dev_server: DevServer, task_queue: str
) -> None:
    from tests.pool import _trace_activities as T

    client, exporter = await _traced_client(dev_server)
    async with pool.Worker(
        client,
        task_queue=task_queue,
        activities=[T.traced_work],
        workflows=[T.RunTraced],
        pool_config=pool.PoolConfig(processes=1, initializer=T.setup_tracing),
    ):
        seen = await client.execute_workflow(
            T.RunTraced.run, id=workflow_id(), task_queue=task_queue
        )
    [run] = [s for s in exporter.get_finished_spans() if s.name == "RunActivity:traced_work"]
    assert seen == {"trace_id": run.context.trace_id, "parent_span_id": run.context.span_id}


async def test_simple_plugin_interceptor_and_run_context_are_applied(
    client: temporalio.client.Client, task_queue: str
) -> None:
    recorder = Recorder()
    entered: list[str] = []

    @asynccontextmanager
    async def run_context() -> AsyncIterator[None]:
        entered.append("enter")
        yield
        entered.append("exit")

    plugin = SimplePlugin("test-plugin", interceptors=[recorder], run_context=run_context)
    async with _worker(client, task_queue, activities=[I.echo_sync], plugins=[plugin]) as worker:
        assert entered == ["enter"]
        result = await client.execute_workflow(
            I.TwoAttempts.run, args=["echo", [1]], id=workflow_id(), task_queue=task_queue
        )
        assert recorder in worker.config(active_config=True)["interceptors"]
        assert recorder not in worker.config()["interceptors"]
    assert entered == ["enter", "exit"]
    assert result["intercepted"] is True
    assert len(recorder.executed) == 2


async def test_failures_log_stock_lines_on_the_activity_logger(
    client: temporalio.client.Client, task_queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="temporalio.activity")
    async with _worker(client, task_queue, activities=[I.fails, I.takes_int]):
        for name, args in (("fails", ["kaboom"]), ("takes_int", ["not an int"])):
            with pytest.raises(WorkflowFailureError):
                await client.execute_workflow(
                    I.TwoAttempts.run, args=[name, args], id=workflow_id(), task_queue=task_queue
                )
    failed = [
        r
        for r in caplog.records
        if r.name == "temporalio.activity"
        and r.getMessage().startswith("Completing activity as failed")
    ]
    # Two attempts of each: the child's error and the argument that could not be decoded.
    assert len(failed) == 4, [r.getMessage() for r in caplog.records]
    assert all(r.levelno == logging.WARNING for r in failed)
    assert all(getattr(r, "__temporal_error_identifier") == "ActivityFailure" for r in failed)
    errors = [getattr(r.exc_info[1], "message", "") for r in failed if r.exc_info]
    assert errors.count("kaboom") == 2
    assert sum(e.startswith("Failed decoding arguments") for e in errors) == 2
    # The child's traceback is kept as the cause, as a ProcessPoolExecutor does.
    kaboom = next(r for r in failed if r.exc_info and str(r.exc_info[1]) == "Boom: kaboom")
    assert "raise ApplicationError(message" in str(kaboom.exc_info[1].__cause__)
    # The activity's fields ride along, as the stock adapter adds them.
    assert kaboom.temporal_activity["activity_type"] == "fails"
    assert any(r.getMessage().startswith("Starting activity") for r in caplog.records)


async def test_cancelled_async_activity_reads_activity_cancelled(
    client: temporalio.client.Client, task_queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="temporalio.activity")
    I.CANCEL_MESSAGES.clear()
    async with _worker(client, task_queue, activities=[I.waits_for_cancel]):
        wf_id = workflow_id()
        handle = await client.start_workflow(I.CancelOnSignal.run, id=wf_id, task_queue=task_queue)
        await async_assert_eventually(lambda: wf_id in I.STARTED)
        await handle.signal(I.CancelOnSignal.cancel_it)
        assert await handle.result() == "CancelledError"
    assert I.CANCEL_MESSAGES == ["Activity cancelled"]
    assert any(r.getMessage().startswith("Completing as cancelled") for r in caplog.records), [
        (r.name, r.getMessage()) for r in caplog.records
    ]


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


@pytest.mark.parametrize("kind", ["process", "thread", "async"])
async def test_metric_meter_in_activities_reaches_the_runtime(
    dev_server: DevServer, task_queue: str, kind: str
) -> None:
    port = free_port()
    runtime = temporalio.runtime.Runtime(
        telemetry=temporalio.runtime.TelemetryConfig(
            metrics=temporalio.runtime.PrometheusConfig(bind_address=f"127.0.0.1:{port}")
        )
    )
    client = await temporalio.client.Client.connect(dev_server.address, runtime=runtime)
    fn = I.count_metric_async if kind == "async" else I.count_metric_sync
    async with _worker(client, task_queue, activities=[fn], threads=kind == "thread"):
        assert (
            await client.execute_workflow(
                I.TwoAttempts.run,
                args=["count_metric", []],
                id=workflow_id(),
                task_queue=task_queue,
            )
            == "counted"
        )

    def series(name: str, value: str) -> dict[str, str]:
        pattern = re.compile(rf"^{name}\{{([^}}]*)\}} {re.escape(value)}$", re.M)
        match = pattern.search(_scrape(port))
        assert match, f"no {name} series with {value} yet"
        return dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))

    # Counter, histogram and gauge, with the activity's attributes (recorded in a child
    # for the process kind, replayed on the parent's runtime meter).
    for name, value in (
        ("pool_test_activity_calls", "1"),
        ("pool_test_activity_size_sum", "512"),
        ("pool_test_activity_ratio", "0.25"),
    ):
        labels = await async_assert_eventually(lambda n=name, v=value: series(n, v))
        assert labels["activity_type"] == "count_metric", (name, labels)
        assert labels["task_queue"] == task_queue
        assert labels["namespace"] == "default"
    assert series("pool_test_activity_size_sum", "512")["shape"] == "square"
