"""Native thread pools sized to the child: the variables and OpenBLAS's real pool size,
a value the user set kept, the limit off, and CPU pinning; against the real server."""

from __future__ import annotations

import os

import pytest
import temporalio.client

import pool
from runner._native import THREAD_VARIABLES
from tests.helpers import workflow_id
from tests.pool import _native_activities as N


async def _read(client: temporalio.client.Client, task_queue: str, config: pool.PoolConfig):
    async with pool.Worker(
        client,
        task_queue=task_queue,
        activities=[N.native_threads],
        workflows=[N.ReadNativeThreads],
        pool_config=config,
    ):
        return await client.execute_workflow(
            N.ReadNativeThreads.run, id=workflow_id(), task_queue=task_queue
        )


@pytest.fixture(autouse=True)
def _no_inherited_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("processes", [1, 2])
async def test_auto_gives_each_child_its_share_of_the_cores(client, task_queue, processes):
    # spawn: the children get this test's environment (a fork server keeps its own).
    seen = await _read(
        client, task_queue, pool.PoolConfig(processes=processes, start_method="spawn")
    )
    expected = str(max(1, (os.cpu_count() or 1) // processes))
    assert seen["env"] == {name: expected for name in THREAD_VARIABLES}
    assert seen["blas_threads"] and set(seen["blas_threads"]) == {int(expected)}


async def test_a_value_the_user_set_is_kept(client, task_queue, monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")  # OpenBLAS caps it at the CPU count
    seen = await _read(
        client, task_queue, pool.PoolConfig(processes=2, start_method="spawn", native_threads=1)
    )
    assert seen["env"]["OPENBLAS_NUM_THREADS"] == "2"
    assert seen["env"]["OMP_NUM_THREADS"] == "1"
    assert seen["blas_threads"] == [2]


async def test_no_limit_leaves_the_libraries_alone(client, task_queue):
    seen = await _read(
        client,
        task_queue,
        pool.PoolConfig(processes=2, start_method="spawn", native_threads=None),
    )
    assert seen["env"] == {name: None for name in THREAD_VARIABLES}


async def test_cpu_affinity_pins_the_child_to_one_core(client, task_queue):
    allowed = sorted(os.sched_getaffinity(0))
    seen = await _read(client, task_queue, pool.PoolConfig(processes=1, cpu_affinity=True))
    assert seen["affinity"] == [allowed[0]]


@pytest.mark.unit
@pytest.mark.parametrize("bad", [-1, "lots", 1.5])
def test_a_bad_native_threads_value_is_rejected(bad):
    with pytest.raises(pool.WorkerConfigError, match="native_threads must be"):
        pool.PoolConfig(native_threads=bad)
