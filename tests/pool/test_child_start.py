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
from runner import ActivitySpec
from tests.helpers import async_assert_eventually, workflow_id
from tests.pool import _bad_activities as B
from tests.pool import _hb_activities as H
from tests.pool import _start_activities as S
from tests.pool.test_supervisor import _task

FAST_BACKOFF = {"respawn_backoff": 0.01, "respawn_backoff_max": 0.05}


class _Pool:
    """A started ProcessPool running this module's activities; fatal errors collected."""

    def __init__(self, **config: Any) -> None:
        config.setdefault("processes", 1)
        self.pool = pool.ProcessPool(config=pool.PoolConfig(**config))
        self.fatal: list[BaseException] = []
        self.ids = iter(range(1, 1_000_000))

    async def __aenter__(self) -> _Pool:
        activities = {
            fn.__name__: ActivitySpec(fn=fn, no_thread_cancel_exception=False)
            for fn in (S.initialized_state, S.child_pid, B.exits_with_os_exit)
        }
        await self.pool.start(
            activities=activities,
            converter=temporalio.converter.DataConverter.default,
            heartbeat_sender=None,
            on_fatal=self.fatal.append,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.stop()

    async def run(self, name: str) -> Any:
        reservation = await self.pool.reserve()
        _, future = await self.pool.run(_task(next(self.ids), name), reservation=reservation)
        done = await future
        assert done.outcome == "completed", done
        return done.value


# -- the stock documented setup: ProcessPoolExecutor + a stdlib Manager -------------------


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
async def test_the_stdlib_manager_carries_heartbeats_and_cancellation(
    client, task_queue, tmp_path, start_method
):
    notes = str(tmp_path / "notes.jsonl")
    manager = multiprocessing.Manager()
    stock = temporalio.worker.SharedStateManager.create_from_multiprocessing(manager)
    context = multiprocessing.get_context(start_method)
    try:
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as executor:
            async with pool.Worker(
                client,
                task_queue=task_queue,
                activities=[H.heartbeat_until_cancelled],
                workflows=[H.CancelAfterSignal],
                activity_executor=executor,
                shared_state_manager=stock,
            ) as worker:
                assert worker.process_pool.config.start_method == start_method
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


# -- start failures: reported once, with the child's own error ---------------------------


async def test_an_initializer_that_raises_fails_the_worker_once(client, task_queue, caplog):
    worker = pool.Worker(
        client,
        task_queue=task_queue,
        activities=[S.child_pid],
        pool_config=pool.PoolConfig(
            processes=2, initializer=S.fail_to_initialize, initargs=("no database here",)
        ),
    )
    with pytest.raises(pool.ChildStartError) as caught:
        await worker.run()
    err = caught.value
    assert (err.error_type, err.error_message) == ("RuntimeError", "no database here")
    assert "in fail_to_initialize" in err.child_traceback
    assert str(err).startswith(f"Child process {err.pid} failed before it was ready: RuntimeError")
    assert isinstance(err.__cause__, pool.ChildTraceback)  # printed with the error
    assert err.__cause__.text == err.child_traceback
    assert worker.process_pool.snapshot().starts == 2  # no replacement was tried
    # Reported once: one record with the child's traceback, none blaming an activity.
    [record] = [r for r in caplog.records if r.name == "pool.supervisor"]
    assert record.levelname == "ERROR" and "in fail_to_initialize" in record.getMessage()


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
async def test_an_activity_module_that_fails_to_import_in_the_child(
    client, task_queue, monkeypatch, start_method
):
    monkeypatch.setattr(sys, "_pool_test_import_allowed", True, raising=False)
    from tests.pool import _fails_in_child

    with pytest.raises(pool.ChildStartError) as caught:
        async with pool.Worker(
            client,
            task_queue=task_queue,
            activities=[_fails_in_child.never_runs],
            pool_config=pool.PoolConfig(processes=1, start_method=start_method),
        ):
            pass
    err = caught.value
    assert err.error_type == "ImportError"
    assert "imports only in the test process" in err.error_message
    assert "_fails_in_child.py" in err.child_traceback


# -- initializers and ProcessPoolExecutor options ---------------------------------------


async def test_initializer_state_is_seen_by_the_activities():
    async with _Pool(processes=2, initializer=S.remember, initargs=("model", "loaded")) as p:
        state = await p.run("initialized_state")
        assert state["model"] == "loaded"
        assert state["initialized_in"] == state["pid"]


async def test_the_process_pool_executor_options_are_honoured(client, task_queue):
    executor = concurrent.futures.ProcessPoolExecutor(
        1,
        initializer=S.remember,
        initargs=("model", "from the executor"),
        max_tasks_per_child=2,
        mp_context=multiprocessing.get_context("spawn"),
    )
    with executor:
        async with pool.Worker(
            client,
            task_queue=task_queue,
            activities=[S.initialized_state],
            workflows=[B.RunBounded],
            activity_executor=executor,
        ) as worker:
            assert worker.process_pool.config.start_method == "spawn"
            states = [
                await client.execute_workflow(
                    B.RunBounded.run,
                    args=["initialized_state", [], 30, 1],
                    id=workflow_id(),
                    task_queue=task_queue,
                )
                for _ in range(3)
            ]
            assert worker.process_pool.snapshot().recycles >= 1
    assert all(s["model"] == "from the executor" for s in states)
    assert all(s["initialized_in"] == s["pid"] for s in states)
    first, second, third = (s["pid"] for s in states)
    assert first == second != third  # recycled after max_tasks_per_child=2


def test_executor_fork_context_is_replaced_by_forkserver(client, caplog):
    caplog.set_level(logging.INFO, logger="pool.worker")
    executor = concurrent.futures.ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("fork")
    )
    worker = pool.Worker(
        client, task_queue="unused", activities=[S.child_pid], activity_executor=executor
    )
    assert worker.process_pool.config.start_method == "forkserver"
    assert "'fork' start method becomes 'forkserver'" in caplog.text


@pytest.mark.parametrize(
    ("executor_options", "config_options", "named"),
    [
        ({"initializer": S.remember}, {"initializer": S.fail_to_initialize}, "initializer"),
        ({"max_tasks_per_child": 2}, {"max_tasks_per_child": 3}, "max_tasks_per_child"),
        (
            {"mp_context": multiprocessing.get_context("spawn")},
            {"start_method": "spawn", "max_tasks_per_child": 1},
            None,  # no conflict: the same start method
        ),
    ],
)
def test_executor_and_pool_config_conflicts_name_both(
    client, executor_options, config_options, named
):
    executor = concurrent.futures.ProcessPoolExecutor(1, **executor_options)

    def make() -> pool.Worker:
        return pool.Worker(
            client,
            task_queue="unused",
            activities=[S.child_pid],
            activity_executor=executor,
            pool_config=pool.PoolConfig(**config_options),
        )

    if named is None:
        assert make().process_pool.config.start_method == "spawn"
        return
    with pytest.raises(
        pool.WorkerConfigError,
        match=f"activity_executor .* sets {named}=.* and pool_config sets {named}=",
    ):
        make()


async def test_an_initializer_that_cannot_be_pickled_is_a_config_error():
    lock = __import__("threading").Lock()
    with pytest.raises(pool.WorkerConfigError, match=r"initializer .* cannot be serialised"):
        async with _Pool(initializer=S.remember, initargs=("lock", lock)):
            pass


# -- the crash-loop policy ------------------------------------------------------------


async def test_replacements_that_fail_to_start_stop_the_worker(client, task_queue, tmp_path):
    marker = tmp_path / "broken"
    worker = pool.Worker(
        client,
        task_queue=task_queue,
        activities=[S.child_pid],
        pool_config=pool.PoolConfig(
            processes=1,
            initializer=S.fail_when_file_exists,
            initargs=(str(marker),),
            crash_loop_max_deaths=2,
            **FAST_BACKOFF,
        ),
    )
    run = asyncio.create_task(worker.run())
    await worker.wait_ready()
    marker.touch()
    [pid] = worker.process_pool.pids
    os.kill(pid, signal.SIGKILL)  # a ready child dies: its replacements cannot start
    with pytest.raises(pool.CrashLoopError, match="3 child processes failed to start") as caught:
        await asyncio.wait_for(run, timeout=60)
    cause = caught.value.__cause__
    assert isinstance(cause, pool.ChildStartError)
    assert cause.error_message == f"refusing to start: {marker} exists"
    snapshot = worker.process_pool.snapshot()
    assert (snapshot.deaths, snapshot.start_failures) == (1, 3)


async def test_a_child_killed_while_starting_is_a_death_not_a_start_failure(tmp_path):
    fifo = tmp_path / "hold"
    async with _Pool(
        initializer=S.block_while_fifo_exists,
        initargs=(str(fifo),),
        crash_loop_max_deaths=1,
        **FAST_BACKOFF,
    ) as p:
        os.mkfifo(fifo)  # from now on a new child stays starting
        killed = []

        def starting_child() -> int | None:
            [child] = p.pool.snapshot().children
            return child.pid if child.state == "starting" and child.pid not in killed else None

        for _ in range(3):  # the ready child, then two replacements while they start
            [pid] = p.pool.pids
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            await async_assert_eventually(starting_child)
        fifo.unlink()
        os.kill(starting_child(), signal.SIGKILL)
        assert await p.run("child_pid") not in killed
        snapshot = p.pool.snapshot()
    assert p.fatal == []
    assert (snapshot.deaths, snapshot.start_failures) == (4, 0)


async def test_repeated_deaths_back_off_the_respawn(caplog):
    async with _Pool(respawn_backoff=0.2, respawn_backoff_max=0.4) as p:
        for _ in range(4):
            with pytest.raises(pool.ChildProcessDied):
                await p.run("exits_with_os_exit")
        await p.run("child_pid")  # waits for the fourth replacement
        snapshot = p.pool.snapshot()
    # The first replacement starts at once; then 0.2, 0.4, and 0.4 s (the cap).
    assert snapshot.respawns_delayed == 3
    assert snapshot.respawn_delay_seconds == pytest.approx(1.0)
    first, *later = snapshot.replacement_seconds
    assert first < 0.2
    assert [round(s, 1) >= d for s, d in zip(later, (0.2, 0.4, 0.4), strict=True)] == [True] * 3
    delays = [r.getMessage() for r in caplog.records if "replacement of child" in r.getMessage()]
    assert [d.split("starts in ")[1] for d in delays] == ["0.20 s", "0.40 s", "0.40 s"]
