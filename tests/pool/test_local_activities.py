"""Sync local activities run in the pool's children (pool/_local.py), against the real
server: CPU-heavy ones leave the worker's loop free, a dead child is a retryable attempt,
and a workflow's cancel raises CancelledError in the child (or kills it after
cancel_grace)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import inspect
import os
import signal
import time
from pathlib import Path

import pytest
import temporalio.activity
import temporalio.converter
import temporalio.worker._activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, TimeoutType
from temporalio.exceptions import TimeoutError as TemporalTimeoutError
from temporalio.testing import ActivityEnvironment

import pool
from pool._local import EXECUTE_PARAMETERS, LocalActivityExecutor
from pool.supervisor import Reservation
from runner import RunTask, TaskDone
from tests.helpers import async_assert_eventually, workflow_id
from tests.pool import _activities as A
from tests.pool import _local_acts as L

_ACTIVITIES = [
    L.burn_cpu,
    L.noop,
    L.blocked_on_first_attempt,
    L.wait_for_cancel,
    L.ignore_cancel,
    L.hold,
    L.die,
    A.fail_application,
]
_WORKFLOWS = [L.Local, L.LocalFanOut, L.Remote]
# A no-op remote activity (and its workflow) takes ~50 ms here; a stalled loop, seconds.
_PROMPT = 1.0


def _worker(client: Client, task_queue: str, **options: object) -> pool.Worker:
    return pool.Worker(
        client, task_queue=task_queue, activities=_ACTIVITIES, workflows=_WORKFLOWS, **options
    )


async def _local(client: Client, task_queue: str, name: str, *args: object, attempts: int = 1):
    return await client.execute_workflow(
        L.Local.run, args=[name, list(args), attempts], id=workflow_id(), task_queue=task_queue
    )


async def _start_local(client: Client, task_queue: str, name: str, *args: object):
    return await client.start_workflow(
        L.Local.run, args=[name, list(args), 1], id=workflow_id(), task_queue=task_queue
    )


def _child_running(worker: pool.Worker, activity_type: str) -> int | None:
    """The pid of the child running ``activity_type`` now, if any."""
    assert worker.process_pool is not None
    for child in worker.process_pool.snapshot().children:
        if child.state == "busy" and child.activity_type == activity_type:
            return child.pid
    return None


async def _wait_running(worker: pool.Worker, activity_type: str) -> int:
    pid = await async_assert_eventually(lambda: _child_running(worker, activity_type))
    assert pid is not None
    return pid


async def _remote_still_runs(client: Client, task_queue: str, worker: pool.Worker) -> None:
    """Remote activities run in a child: the worker goes on, and every child a local
    activity claimed was taken or given back. A leaked claim would stop the polls once
    the one already in flight (promised before) has brought its task: hence two."""
    for _ in range(2):
        run = client.execute_workflow(L.Remote.run, id=workflow_id(), task_queue=task_queue)
        pid = await asyncio.wait_for(run, timeout=10)
        assert pid in worker.process_pool.pids


def _activity_failure(error: WorkflowFailureError) -> BaseException | None:
    """What the local activity failed with (the workflow failed with it, maybe wrapped)."""
    cause = error.cause
    return cause.cause if isinstance(cause, ActivityError) else cause


@pytest.mark.unit
def test_temporalio_still_submits_the_call_the_adapter_reads():
    parameters = inspect.signature(temporalio.worker._activity._execute_sync_activity).parameters
    assert set(EXECUTE_PARAMETERS) <= set(parameters)
    assert parameters["args"].kind is inspect.Parameter.VAR_POSITIONAL


# -- the adapter against a fake pool (no processes, no server) ---------------------------


class _FakePool:
    """Records what the adapter asks of a ProcessPool; ``free`` children start tasks at
    once, later ones wait until the test calls ``free_one()``."""

    def __init__(self, free: int = 1) -> None:
        self.free = free
        self.claims = 0
        self.tasks: list[RunTask] = []
        self.done: dict[int, asyncio.Future[TaskDone]] = {}
        self.cancels: list[tuple[int, int, object, str]] = []
        self.shutdowns = 0
        self._freed = asyncio.Event()

    def claim(self) -> Reservation:
        self.claims += 1
        return Reservation(self._claim_ended)

    def _claim_ended(self, released: bool) -> None:
        self.claims -= 1

    async def run(
        self, task: RunTask, *, reservation: Reservation | None = None
    ) -> tuple[int, asyncio.Future[TaskDone]]:
        assert reservation is not None and reservation.held
        while self.free == 0:
            self._freed.clear()
            try:
                await self._freed.wait()
            except asyncio.CancelledError:
                reservation.use()  # the real pool ends the promise either way
                raise
        self.free -= 1
        reservation.use()
        self.tasks.append(task)
        self.done[task.task_id] = asyncio.get_running_loop().create_future()
        return 4242, self.done[task.task_id]

    def free_one(self) -> None:
        self.free += 1
        self._freed.set()

    def cancel(self, pid: int, task_id: int, details: object, reason: str) -> None:
        self.cancels.append((pid, task_id, details, reason))

    def broadcast_shutdown(self) -> None:
        self.shutdowns += 1


@dataclasses.dataclass
class _Call:
    """One call temporalio would make: its events, details holder and future."""

    executor: LocalActivityExecutor
    cancelled: object
    shutdown: object
    holder: temporalio.activity._ActivityCancellationDetailsHolder
    future: asyncio.Future


def _submit(executor: LocalActivityExecutor, *args: object, cancel_first: bool = False) -> _Call:
    info = dataclasses.replace(ActivityEnvironment.default_info(), activity_type="noop")
    cancelled = executor.shared_state.new_event()
    if cancel_first:
        cancelled.set()  # a cancel that came while temporalio decoded the arguments
    shutdown = executor.shared_state.new_event()
    holder = temporalio.activity._ActivityCancellationDetailsHolder()
    future = asyncio.get_running_loop().run_in_executor(
        executor,
        temporalio.worker._activity._execute_sync_activity,
        info,
        None,  # heartbeat sender
        None,  # thread raiser
        cancelled,
        shutdown,
        temporalio.converter.DataConverter.default.payload_converter_class,
        None,  # metric meter
        holder,
        L.noop,
        *args,
    )
    return _Call(executor, cancelled, shutdown, holder, future)


def _executor(fake: _FakePool) -> LocalActivityExecutor:
    return LocalActivityExecutor(fake, temporalio.converter.DataConverter.default)  # type: ignore[arg-type]


async def _until(condition) -> None:
    await async_assert_eventually(condition, timeout=5, interval=0.001)


async def test_adapter_sends_the_task_and_returns_its_value():
    fake = _FakePool()
    call = _submit(_executor(fake), 1, "two")
    await _until(lambda: fake.tasks)
    assert call.executor.running == 1
    [task] = fake.tasks
    assert (task.activity_type, task.args) == ("noop", (1, "two"))
    fake.done[task.task_id].set_result(TaskDone(task_id=task.task_id, outcome="completed", value=7))
    assert await call.future == 7
    assert fake.claims == 0
    assert call.executor.running == 0


async def test_adapter_cancel_event_cancels_the_running_child_task():
    fake = _FakePool()
    call = _submit(_executor(fake))
    await _until(lambda: fake.tasks)
    details = temporalio.activity.ActivityCancellationDetails(cancel_requested=True)
    call.holder.details = details
    call.cancelled.set()
    await _until(lambda: fake.cancels)
    assert fake.cancels == [(4242, fake.tasks[0].task_id, details, "its workflow cancelled it")]


async def test_adapter_cancelling_the_future_cancels_the_child_task():
    fake = _FakePool()
    call = _submit(_executor(fake))
    await _until(lambda: fake.tasks)
    call.future.cancel()
    await _until(lambda: fake.cancels)
    assert fake.cancels[0][:2] == (4242, fake.tasks[0].task_id)


async def test_adapter_cancel_while_waiting_for_a_child_gives_the_claim_back():
    fake = _FakePool(free=0)
    call = _submit(_executor(fake))
    await _until(lambda: fake.claims == 1)
    assert repr(call.executor) == (
        "<LocalActivityExecutor [Local activities: 0 running, 1 waiting for a child]>"
    )
    call.cancelled.set()
    with pytest.raises(CancelledError):
        await call.future
    assert fake.claims == 0 and fake.tasks == [] and fake.cancels == []
    fake.free_one()  # nothing left to take it


async def test_adapter_cancel_before_start_claims_nothing():
    fake = _FakePool()
    executor = _executor(fake)
    call = _submit(executor, cancel_first=True)
    with pytest.raises(CancelledError):
        await call.future
    assert fake.claims == 0 and fake.tasks == []


async def test_adapter_worker_shutdown_event_reaches_the_children():
    fake = _FakePool()
    call = _submit(_executor(fake))
    call.shutdown.set()
    await _until(lambda: fake.shutdowns == 1)
    await _until(lambda: fake.tasks)
    fake.done[fake.tasks[0].task_id].set_result(
        TaskDone(task_id=fake.tasks[0].task_id, outcome="completed")
    )
    assert await call.future is None


async def test_adapter_refuses_other_callables():
    executor = _executor(_FakePool())
    with pytest.raises(TypeError, match="sync local activities only"):
        executor.submit(print, "hello")


async def test_cpu_heavy_local_activity_leaves_remote_activities_prompt(
    client, task_queue, tmp_path: Path
):
    marker = tmp_path / "burning"
    async with _worker(client, task_queue, processes=2) as worker:
        # Warm up both workflow types, so the measurements below are steady-state.
        await client.execute_workflow(L.Remote.run, id=workflow_id(), task_queue=task_queue)
        await _local(client, task_queue, "noop")

        burner = await _start_local(client, task_queue, "burn_cpu", 2.0, str(marker))
        await async_assert_eventually(marker.exists)
        burned = asyncio.ensure_future(burner.result())
        latencies = []
        while not burned.done() and len(latencies) < 10:  # each one starts during the burn
            began = time.monotonic()
            await client.execute_workflow(L.Remote.run, id=workflow_id(), task_queue=task_queue)
            latencies.append(time.monotonic() - began)
        burner_pid = await burned
        assert max(latencies) < _PROMPT, f"no-op latencies during the burn: {latencies}"
        assert len(latencies) >= 3, f"only {len(latencies)} no-ops started during a 2 s burn"
        assert burner_pid != os.getpid() and burner_pid in worker.process_pool.pids


async def test_local_activity_whose_child_is_killed_is_retried(client, task_queue):
    async with _worker(client, task_queue, processes=1) as worker:
        run = asyncio.ensure_future(
            _local(client, task_queue, "blocked_on_first_attempt", attempts=3)
        )
        killed = await _wait_running(worker, "blocked_on_first_attempt")
        os.kill(killed, signal.SIGKILL)
        attempt, pid = await run
        assert attempt == 2
        assert pid != killed and pid in worker.process_pool.pids
        assert worker.process_pool.snapshot().deaths == 1
        # The worker goes on: remote activities still run.
        assert (
            await client.execute_workflow(L.Remote.run, id=workflow_id(), task_queue=task_queue)
            in worker.process_pool.pids
        )


async def test_dead_child_fails_the_attempt_with_child_process_died(client, task_queue):
    async with _worker(client, task_queue, processes=1) as worker:
        run = asyncio.ensure_future(_local(client, task_queue, "blocked_on_first_attempt"))
        killed = await _wait_running(worker, "blocked_on_first_attempt")
        os.kill(killed, signal.SIGKILL)
        with pytest.raises(WorkflowFailureError) as failure:
            await run
        error = _activity_failure(failure.value)
        assert isinstance(error, ApplicationError)
        assert error.type == "ChildProcessDied"
        assert not error.non_retryable
        assert f"Child process {killed} died" in error.message
        assert "SIGKILL" in error.message


async def test_workflow_cancel_raises_cancelled_error_in_the_child(
    client, task_queue, tmp_path: Path
):
    marker = tmp_path / "cancelled"
    async with _worker(client, task_queue, processes=1) as worker:
        handle = await _start_local(client, task_queue, "wait_for_cancel", str(marker))
        pid = await _wait_running(worker, "wait_for_cancel")
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        assert isinstance(failure.value.cause, CancelledError)
        assert marker.read_text() == f"{pid} cancel_requested"
        snapshot = worker.process_pool.snapshot()
        assert snapshot.kills == 0 and snapshot.deaths == 0
        assert worker.process_pool.pids == [pid]  # the child lives on


async def test_local_activity_timeout_raises_cancelled_error_in_the_child(
    client, task_queue, tmp_path: Path
):
    marker = tmp_path / "cancelled"
    async with _worker(client, task_queue, processes=1) as worker:
        with pytest.raises(WorkflowFailureError) as failure:
            await client.execute_workflow(
                L.Local.run,
                args=["wait_for_cancel", [str(marker)], 1, 1.0],
                id=workflow_id(),
                task_queue=task_queue,
            )
        error = _activity_failure(failure.value)
        assert isinstance(error, TemporalTimeoutError)
        assert error.type == TimeoutType.START_TO_CLOSE
        [pid] = worker.process_pool.pids
        await async_assert_eventually(marker.exists)
        assert marker.read_text() == f"{pid} timed_out"
        assert worker.process_pool.snapshot().kills == 0


async def test_local_activity_ignoring_cancel_is_killed_after_cancel_grace(
    client, task_queue, tmp_path: Path
):
    marker = tmp_path / "cancelled"
    config = pool.PoolConfig(cancel_grace=0.3)
    async with _worker(client, task_queue, processes=1, pool_config=config) as worker:
        handle = await _start_local(client, task_queue, "ignore_cancel", str(marker))
        pid = await _wait_running(worker, "ignore_cancel")
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        assert isinstance(failure.value.cause, CancelledError)
        assert marker.read_text() == str(pid)  # CancelledError reached it first
        assert worker.process_pool.snapshot().kills == 1
        await async_assert_eventually(lambda: pid not in worker.process_pool.pids)


async def test_local_activities_beyond_the_children_wait_for_one(client, task_queue):
    async with _worker(client, task_queue, processes=1) as worker:
        pids = await client.execute_workflow(
            L.LocalFanOut.run,
            args=["hold", [[0.2]] * 3],
            id=workflow_id(),
            task_queue=task_queue,
        )
        assert pids == worker.process_pool.pids * 3
        snapshot = worker.process_pool.snapshot()
        assert snapshot.tasks_waited >= 1  # the child was busy: they queued for it
        await _remote_still_runs(client, task_queue, worker)


async def test_local_activity_cancelled_while_waiting_for_a_child_never_runs(
    client, task_queue, tmp_path: Path
):
    first, second = tmp_path / "first", tmp_path / "second"
    async with _worker(client, task_queue, processes=1) as worker:
        handle = await client.start_workflow(
            L.LocalFanOut.run,
            # The one that runs takes 1 s to stop: the cancel of the other, which temporalio
            # delivers on its own, reaches it while it still waits for the child.
            args=["wait_for_cancel", [[str(first), 1.0], [str(second), 1.0]]],
            id=workflow_id(),
            task_queue=task_queue,
        )
        pid = await _wait_running(worker, "wait_for_cancel")
        await async_assert_eventually(lambda: worker.process_pool.snapshot().tasks_waited == 1)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        assert isinstance(failure.value.cause, CancelledError)
        # The workflow ends with the cancel of the one that never ran; once the other has
        # stopped, two remote activities run on the same child.
        await async_assert_eventually(
            lambda: [child.tasks_done for child in worker.process_pool.snapshot().children] == [1]
        )
        await _remote_still_runs(client, task_queue, worker)
        ran = [path for path in (first, second) if path.exists()]
        assert len(ran) == 1 and ran[0].read_text() == f"{pid} cancel_requested"
        snapshot = worker.process_pool.snapshot()
        assert [(child.pid, child.tasks_done) for child in snapshot.children] == [(pid, 3)]


async def test_crash_loop_fails_the_worker_with_local_activities_waiting(
    client, task_queue, tmp_path: Path
):
    # The first attempt kills the only child, and no replacement can start: the worker
    # fails with CrashLoopError rather than wait for a child for the second attempt.
    config = pool.PoolConfig(
        crash_loop_max_deaths=1,
        initializer=L.start_once,
        initargs=(str(tmp_path / "started"),),
    )
    worker = _worker(client, task_queue, processes=1, pool_config=config)
    run = asyncio.ensure_future(worker.run())
    await worker.wait_ready()
    await client.start_workflow(
        L.Local.run, args=["die", [], 5], id=workflow_id(), task_queue=task_queue
    )
    with pytest.raises(pool.CrashLoopError):
        await asyncio.wait_for(run, timeout=30)
    assert worker.is_shutdown


async def test_failure_raised_in_the_child_reaches_the_workflow_whole(client, task_queue):
    async with _worker(client, task_queue, processes=1):
        with pytest.raises(WorkflowFailureError) as failure:
            await _local(client, task_queue, "fail_application", "app")
        error = _activity_failure(failure.value)
        assert isinstance(error, ApplicationError)
        assert (error.type, error.message, error.non_retryable) == ("MyError", "boom", True)
        assert error.details == ({"why": "test"},)
        assert "fail_application" in error.failure.stack_trace  # the child's stack


@pytest.mark.parametrize("executor", ["none", "process_pool_executor", "thread_pool_executor"])
async def test_local_activity_runs_in_threads_only_with_a_thread_pool(client, task_queue, executor):
    given: concurrent.futures.Executor | None = None
    if executor == "process_pool_executor":
        given = concurrent.futures.ProcessPoolExecutor(1)
    elif executor == "thread_pool_executor":
        given = concurrent.futures.ThreadPoolExecutor(2)
    try:
        async with _worker(client, task_queue, activity_executor=given) as worker:
            pid = await _local(client, task_queue, "noop")
            if executor == "thread_pool_executor":
                assert pid == os.getpid()
            else:
                assert pid in worker.process_pool.pids
    finally:
        if given is not None:
            given.shutdown()
