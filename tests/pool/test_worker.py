"""pool.Worker end to end against the real dev server: routing, conversion,
failure shapes, slots, lifecycle. The tests that run activities in children take the
``start_method`` fixture: each runs under ``forkserver`` and ``spawn`` from one body."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from pathlib import Path

import psutil
import pytest
import temporalio.client
import temporalio.converter
import temporalio.worker
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError

import pool
from tests.helpers import async_assert_eventually, workflow_id
from tests.pool import _activities as A

SYNC_KINDS = {
    "pid_and_square": lambda n: n * n,  # module-level function
    "closure_add": lambda n: n + 1000,  # closure
    "lambda_triple": lambda n: n * 3,  # lambda
    "bound_scale": lambda n: n * 7,  # bound method of a picklable object
}


@pytest.fixture(params=["forkserver", "spawn"])
def start_method(request: pytest.FixtureRequest) -> str:
    """The core tests run their children both ways, from one body."""
    return request.param


async def _run_one(
    client: temporalio.client.Client, task_queue: str, name: str, *args: object, local: bool = False
) -> object:
    return await client.execute_workflow(
        A.RunOne.run, args=[name, list(args), local], id=workflow_id(), task_queue=task_queue
    )


async def _failure_of(client: temporalio.client.Client, task_queue: str, name: str, *args: object):
    with pytest.raises(WorkflowFailureError) as info:
        await _run_one(client, task_queue, name, *args)
    activity_error = info.value.cause
    assert isinstance(activity_error, ActivityError)
    return activity_error.cause


def _all_activities():
    return [
        A.pid_and_square,
        A.closure_add,
        A.lambda_activity,
        A.bound_scale,
        A.async_double,
        A.describe_info,
        A.add_points,
        A.fail_application,
        A.sleep_then_return,
        A.record_concurrency,
    ]


async def test_sync_kinds_run_in_children(client, task_queue, start_method):
    async with pool.Worker(
        client,
        task_queue=task_queue,
        activities=_all_activities(),
        workflows=[A.RunOne, A.FanOut],
        pool_config=pool.PoolConfig(processes=2, start_method=start_method),
    ) as worker:
        children = set(worker.process_pool.pids)
        assert len(children) == 2
        for name, expected in SYNC_KINDS.items():
            results = await client.execute_workflow(
                A.FanOut.run, args=[name, 6], id=workflow_id(), task_queue=task_queue
            )
            assert [value for value, _ in results] == [expected(i) for i in range(6)]
            pids = {pid for _, pid in results}
            assert os.getpid() not in pids
            assert pids <= children, f"{name} ran outside the pool: {pids} vs {children}"


async def test_type_hints_and_context_in_child(client, task_queue, start_method):
    async with pool.Worker(
        client,
        task_queue=task_queue,
        pool_config=pool.PoolConfig(start_method=start_method),
        activities=_all_activities(),
        workflows=[A.RunOne],
    ) as worker:
        point = await _run_one(client, task_queue, "add_points", {"x": 1, "y": 2}, {"x": 3, "y": 4})
        assert point == {"x": 4, "y": 6}  # decoded into Point in the child, re-encoded
        info = await _run_one(client, task_queue, "describe_info")
        assert info["activity_type"] == "describe_info"
        assert info["task_queue"] == task_queue
        assert info["attempt"] == 1
        assert info["in_child"] in worker.process_pool.pids
        assert info["converter"] == "_TemporalTransferTypePayloadConverter"


async def test_async_activity_runs_in_parent(client, task_queue):
    async with pool.Worker(
        client, task_queue=task_queue, activities=_all_activities(), workflows=[A.RunOne]
    ):
        value, pid = await _run_one(client, task_queue, "async_double", 21)
        assert (value, pid) == (42, os.getpid())


async def test_thread_executor_runs_sync_activities_in_threads(client, task_queue):
    with concurrent.futures.ThreadPoolExecutor(4) as executor:
        async with pool.Worker(
            client,
            task_queue=task_queue,
            activities=_all_activities(),
            workflows=[A.RunOne],
            activity_executor=executor,
        ) as worker:
            assert worker.process_pool is None
            value, pid = await _run_one(client, task_queue, "pid_and_square", 9)
            assert (value, pid) == (81, os.getpid())


async def test_local_activity_runs_in_a_child(client, task_queue, start_method):
    async with pool.Worker(
        client,
        task_queue=task_queue,
        pool_config=pool.PoolConfig(start_method=start_method),
        activities=_all_activities(),
        workflows=[A.RunOne],
    ) as worker:
        value, pid = await _run_one(client, task_queue, "pid_and_square", 4, local=True)
        assert value == 16 and pid in worker.process_pool.pids


async def test_workflow_only_and_activity_only_workers(client, task_queue):
    # Two workers on one queue: one runs workflows only, the other activities only.
    async with (
        pool.Worker(client, task_queue=task_queue, workflows=[A.RunOne]) as workflow_worker,
        pool.Worker(
            client, task_queue=task_queue, activities=[A.pid_and_square], processes=1
        ) as activity_worker,
    ):
        assert workflow_worker.process_pool is None
        value, pid = await _run_one(client, task_queue, "pid_and_square", 5)
        assert value == 25
        assert pid in activity_worker.process_pool.pids


async def test_stock_process_pool_executor_taken_as_size(client, task_queue, caplog):
    caplog.set_level(logging.INFO, logger="pool.worker")
    executor = concurrent.futures.ProcessPoolExecutor(max_workers=3)
    try:
        async with pool.Worker(
            client,
            task_queue=task_queue,
            activities=[A.pid_and_square],
            workflows=[A.RunOne],
            activity_executor=executor,
        ) as worker:
            assert worker.process_pool.size == 3
            value, pid = await _run_one(client, task_queue, "pid_and_square", 3)
            assert value == 9 and pid in worker.process_pool.pids
        messages = [
            r.getMessage() for r in caplog.records if "ProcessPoolExecutor" in r.getMessage()
        ]
        assert len(messages) == 1 and "3 supervised child processes" in messages[0]
        # The user's executor was left alone: it never started a process.
        assert not getattr(executor, "_processes", None)
    finally:
        executor.shutdown()


async def test_application_error_fields_reach_the_workflow(client, task_queue, start_method):
    async with pool.Worker(
        client,
        task_queue=task_queue,
        pool_config=pool.PoolConfig(start_method=start_method),
        activities=_all_activities(),
        workflows=[A.RunOne],
    ):
        cause = await _failure_of(client, task_queue, "fail_application", "app")
        assert isinstance(cause, ApplicationError)
        assert (cause.type, cause.message, cause.non_retryable) == ("MyError", "boom", True)
        assert list(cause.details) == [{"why": "test"}]


async def test_plain_exception_is_retryable_named_after_its_class(client, task_queue, start_method):
    async with pool.Worker(
        client,
        task_queue=task_queue,
        pool_config=pool.PoolConfig(start_method=start_method),
        activities=_all_activities(),
        workflows=[A.RunOne],
    ):
        cause = await _failure_of(client, task_queue, "fail_application", "plain")
        assert isinstance(cause, ApplicationError)
        assert cause.type == "ValueError"
        assert cause.message == "plain failure"
        assert not cause.non_retryable
        assert "fail_application" in (cause.failure.stack_trace if cause.failure else "")


async def test_unknown_activity_type_lists_registered_names(client, task_queue, start_method):
    async with pool.Worker(
        client,
        task_queue=task_queue,
        pool_config=pool.PoolConfig(start_method=start_method),
        activities=[A.pid_and_square],
        workflows=[A.RunOne],
    ):
        cause = await _failure_of(client, task_queue, "no_such_activity")
        assert isinstance(cause, ApplicationError)
        assert cause.type == "NotFoundError"
        assert "no_such_activity" in cause.message and "pid_and_square" in cause.message
        assert not cause.non_retryable


async def test_undecodable_arguments_fail_clearly(client, task_queue, start_method):
    async with pool.Worker(
        client,
        task_queue=task_queue,
        pool_config=pool.PoolConfig(start_method=start_method),
        activities=[A.add_points],
        workflows=[A.RunOne],
    ):
        cause = await _failure_of(client, task_queue, "add_points", "not a point", 3)
        assert isinstance(cause, ApplicationError)
        assert cause.message.startswith("Failed decoding arguments")


def _max_concurrency(path: Path) -> int:
    level = peak = 0
    for line in path.read_text().splitlines():
        level += 1 if line.startswith("+") else -1
        peak = max(peak, level)
    return peak


@pytest.mark.parametrize(("processes", "slots"), [(3, 2), (2, None)])
async def test_never_more_tasks_started_than_slots_or_children(
    client, task_queue, tmp_path, processes, slots, start_method
):
    log = tmp_path / "concurrency.log"
    async with pool.Worker(
        client,
        task_queue=task_queue,
        activities=[A.record_concurrency],
        workflows=[A.RunOne],
        pool_config=pool.PoolConfig(processes=processes, start_method=start_method),
        max_concurrent_activities=slots,
    ):
        handles = [
            await client.start_workflow(
                A.RunOne.run,
                args=["record_concurrency", [str(log), 0.2]],
                id=workflow_id(),
                task_queue=task_queue,
            )
            for _ in range(8)
        ]
        await asyncio.gather(*(h.result() for h in handles))
    limit = min(processes, slots or processes)
    assert _max_concurrency(log) == limit


async def test_shutdown_reports_in_flight_results_and_leaves_no_child(
    client, task_queue, start_method
):
    worker = pool.Worker(
        client,
        task_queue=task_queue,
        activities=[A.sleep_then_return],
        workflows=[A.RunOne],
        pool_config=pool.PoolConfig(processes=2, start_method=start_method),
        graceful_shutdown_timeout=__import__("datetime").timedelta(seconds=20),
    )
    run = asyncio.create_task(worker.run())
    handle = await client.start_workflow(
        A.RunOne.run,
        args=["sleep_then_return", [1.0, "done"]],
        id=workflow_id(),
        task_queue=task_queue,
    )

    def busy() -> bool:
        return worker.dispatcher is not None and worker.dispatcher.outstanding == 1

    await async_assert_eventually(busy, timeout=20)
    pids = list(worker.process_pool.pids)
    await worker.shutdown()
    await run
    # The result finished during the graceful period and was reported.
    completed = [
        event
        async for event in handle.fetch_history_events()
        if event.HasField("activity_task_completed_event_attributes")
    ]
    assert len(completed) == 1
    result = completed[0].activity_task_completed_event_attributes.result
    assert (await client.data_converter.decode(result.payloads)) == ["done"]
    assert worker.is_shutdown and not worker.is_running
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_unpicklable_activity_is_refused_at_construction(client, task_queue):
    import threading

    lock = threading.Lock()

    @__import__("temporalio").activity.defn(name="holds_a_lock")
    def holds_a_lock() -> None:
        with lock:
            pass

    with pytest.raises(pool.WorkerConfigError, match="holds_a_lock"):
        pool.Worker(client, task_queue=task_queue, activities=[holds_a_lock])


def test_bad_options_are_rejected_clearly(client, task_queue):
    with pytest.raises(pool.WorkerConfigError, match="processes must be at least 1"):
        pool.Worker(client, task_queue=task_queue, activities=[A.pid_and_square], processes=0)
    with pytest.raises(pool.WorkerConfigError, match="activity_executor"):
        pool.Worker(
            client,
            task_queue=task_queue,
            activities=[A.pid_and_square],
            activity_executor=object(),  # type: ignore[arg-type]
        )
    with pytest.raises(pool.WorkerConfigError, match="max_concurrent_activities"):
        pool.Worker(
            client,
            task_queue=task_queue,
            activities=[A.pid_and_square],
            max_concurrent_activities=0,
        )


async def test_members_match_the_stock_worker(client, task_queue):
    worker = pool.Worker(client, task_queue=task_queue, activities=[A.async_double])
    assert worker.task_queue == task_queue
    assert worker.client is client
    assert not worker.is_running and not worker.is_shutdown
    config = worker.config()
    assert config["task_queue"] == task_queue and config["activities"] == [A.async_double]
    stock_params = set(__import__("inspect").signature(temporalio.worker.Worker).parameters)
    ours = set(__import__("inspect").signature(pool.Worker).parameters)
    assert stock_params <= ours, f"missing: {stock_params - ours}"


async def test_replacing_the_client_moves_the_worker(client, dev_server, task_queue):
    async with pool.Worker(
        client, task_queue=task_queue, activities=[A.pid_and_square], workflows=[A.RunOne]
    ) as worker:
        other = await temporalio.client.Client.connect(dev_server.address)
        worker.client = other
        assert worker.client is other
        value, _ = await _run_one(client, task_queue, "pid_and_square", 12)
        assert value == 144


async def test_child_log_records_reach_the_parent_with_context(
    client, task_queue, caplog, start_method
):
    caplog.set_level(logging.INFO)
    async with pool.Worker(
        client,
        task_queue=task_queue,
        pool_config=pool.PoolConfig(start_method=start_method),
        activities=[A.describe_info],
        workflows=[A.RunOne],
    ):
        info = await _run_one(client, task_queue, "describe_info")

    def from_child():
        return [r for r in caplog.records if r.getMessage().startswith("describing info")]

    [record] = from_child()
    assert record.child_pid == info["in_child"] != os.getpid()
    assert record.temporal_activity["activity_type"] == "describe_info"
    assert record.temporal_activity["workflow_id"]


async def test_parent_log_records_about_a_task_carry_its_context(client, task_queue, caplog):
    caplog.set_level(logging.WARNING, logger="temporalio.activity")
    with concurrent.futures.ThreadPoolExecutor(2) as executor:
        async with pool.Worker(
            client,
            task_queue=task_queue,
            activities=[A.fail_application],
            workflows=[A.RunOne],
            activity_executor=executor,
        ):
            await _failure_of(client, task_queue, "fail_application", "plain")
    [record] = [
        r for r in caplog.records if r.getMessage().startswith("Completing activity as failed")
    ]
    assert record.temporal_activity["activity_type"] == "fail_application"
    assert record.temporal_activity["workflow_id"] and record.temporal_activity["attempt"] == 1


async def test_payload_codec_runs_in_the_parent(client, task_queue):
    import dataclasses

    from tests.pool._codec import ReversingCodec

    config = client.config()
    config["data_converter"] = dataclasses.replace(
        temporalio.converter.DataConverter.default, payload_codec=ReversingCodec()
    )
    coded = temporalio.client.Client(**config)
    async with pool.Worker(
        coded,
        task_queue=task_queue,
        activities=[A.add_points, A.fail_application],
        workflows=[A.RunOne],
    ):
        handle = await coded.start_workflow(
            A.RunOne.run,
            args=["add_points", [{"x": 1, "y": 2}, {"x": 10, "y": 20}], False],
            id=workflow_id(),
            task_queue=task_queue,
        )
        assert await handle.result() == {"x": 11, "y": 22}
        failing = await coded.start_workflow(
            A.RunOne.run,
            args=["fail_application", ["app"], False],
            id=workflow_id(),
            task_queue=task_queue,
        )
        with pytest.raises(WorkflowFailureError) as info:
            await failing.result()
    cause = info.value.cause.cause
    assert cause.type == "MyError" and list(cause.details) == [{"why": "test"}]
    # What reached the server was encoded by the codec (in the parent).
    completed = [
        e.activity_task_completed_event_attributes.result.payloads[0]
        async for e in handle.fetch_history_events()
        if e.HasField("activity_task_completed_event_attributes")
    ]
    assert completed[0].metadata["encoding"] == b"binary/reversed"
    failed = [
        e.activity_task_failed_event_attributes.failure
        async for e in failing.fetch_history_events()
        if e.HasField("activity_task_failed_event_attributes")
    ]
    details = failed[0].application_failure_info.details.payloads[0]
    assert details.metadata["encoding"] == b"binary/reversed"


async def test_a_workflow_module_that_imports_pool_runs_in_the_default_sandbox(client, task_queue):
    from tests.pool import _imports_pool as P

    async with pool.Worker(
        client, task_queue=task_queue, activities=[P.crunch], workflows=[P.Crunch]
    ):
        result = await client.execute_workflow(
            P.Crunch.run, 1000, id=workflow_id(), task_queue=task_queue
        )
    assert result == sum(i * i for i in range(1000))
