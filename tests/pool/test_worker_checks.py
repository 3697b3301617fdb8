"""Checks the stock worker makes at construction and start: the thread pool's
max_workers warning, and no worker across a fork (the child reports through a pipe)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import os
import select
import signal
import time
import warnings
from collections.abc import Callable
from datetime import timedelta

import pytest
from temporalio.worker import ResourceBasedSlotConfig, WorkerTuner

import pool
from tests.pool import _activities as A

_FORK_DEADLINE = 30.0  # seconds for the forked child to report
_MAX_WORKERS_WARNING = "Worker max_concurrent_activities is {} but activity_executor's max_workers"


@pytest.fixture
def threads():
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as executor:
        yield executor


async def test_thread_pool_smaller_than_the_slots_warns_as_stock(client, task_queue, threads):
    with pytest.warns(UserWarning, match=_MAX_WORKERS_WARNING.format(5) + " is only 2") as rec:
        pool.Worker(
            client,
            task_queue=task_queue,
            activities=[A.pid_and_square],
            activity_executor=threads,
            max_concurrent_activities=5,
        )
    assert [w.filename for w in rec] == [__file__]  # points at the caller, as stock


async def test_thread_pool_warning_reads_the_tuners_maximum_once(client, task_queue, threads):
    resource = WorkerTuner.create_resource_based(
        target_memory_usage=0.5,
        target_cpu_usage=0.5,
        activity_config=ResourceBasedSlotConfig(ramp_throttle=timedelta(milliseconds=1)),
    )
    with pytest.warns(UserWarning, match=_MAX_WORKERS_WARNING.format(500)):
        pool.Worker(
            client,
            task_queue=task_queue,
            activities=[A.pid_and_square],
            activity_executor=threads,
            tuner=resource,
        )
    # With workflows the inner temporalio worker gets the activities too: still one warning.
    with pytest.warns(UserWarning, match=_MAX_WORKERS_WARNING.format(8)) as rec:
        pool.Worker(
            client,
            task_queue=task_queue,
            activities=[A.pid_and_square],
            workflows=[A.RunOne],
            activity_executor=threads,
            tuner=WorkerTuner.create_fixed(activity_slots=8),
        )
    assert len([w for w in rec if "max_workers" in str(w.message)]) == 1


def _no_warnings(build: Callable[[], object]) -> None:
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        build()
    assert [str(w.message) for w in rec if issubclass(w.category, UserWarning)] == []


async def test_no_max_workers_warning_when_threads_suffice_or_children_run(
    client, task_queue, threads
):
    _no_warnings(
        lambda: pool.Worker(
            client,
            task_queue=task_queue,
            activities=[A.pid_and_square],
            activity_executor=threads,
            max_concurrent_activities=2,
        )
    )
    # The process path polls only for tasks a child can start: nothing to warn about.
    with concurrent.futures.ProcessPoolExecutor(max_workers=2) as processes:
        _no_warnings(
            lambda: pool.Worker(
                client,
                task_queue=task_queue,
                activities=[A.pid_and_square],
                activity_executor=processes,
                max_concurrent_activities=5,
            )
        )


def _in_fork(child: Callable[[], object]) -> str:
    """Run ``child`` in a forked copy of this process; its outcome, reported on a pipe."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork of a threaded process
        pid = os.fork()
    if pid == 0:  # the child: report, then leave without running anything of the parent's
        try:
            os.close(read_end)
            try:
                child()
                outcome = "ok"
            except BaseException as err:
                outcome = f"{type(err).__name__}: {err}"
            os.write(write_end, outcome.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    outcome: str | None = None
    try:
        outcome = _read_until_eof(read_end, _FORK_DEADLINE)
    finally:
        os.close(read_end)
        if outcome is None:  # the child went on (no check stopped it): end it
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    assert outcome is not None, f"the forked child did not report within {_FORK_DEADLINE}s"
    assert os.waitstatus_to_exitcode(status) == 0
    return outcome


def _read_until_eof(fd: int, timeout: float) -> str | None:
    """Everything written to ``fd`` until its writer closed it; None after ``timeout``."""
    deadline = time.monotonic() + timeout
    chunks = []
    while (remaining := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            return b"".join(chunks).decode()
        chunks.append(chunk)
    return None


def test_creating_a_worker_in_a_fork_fails_as_stock(client, task_queue):
    parent = os.getpid()
    outcome = _in_fork(
        lambda: pool.Worker(client, task_queue=task_queue, activities=[A.async_double])
    )
    assert outcome.startswith(
        f"AssertionError: Cannot create worker across forks (original runtime PID is {parent}, "
    ), outcome


def test_running_a_worker_in_a_fork_fails_as_stock(client, task_queue):
    worker = pool.Worker(client, task_queue=task_queue, activities=[A.async_double])
    outcome = _in_fork(lambda: asyncio.run(worker.run()))
    assert outcome.startswith(
        f"AssertionError: Cannot use worker across forks (the worker was created in PID "
        f"{os.getpid()}, "
    ), outcome


async def test_the_fork_check_leaves_nothing_behind_in_the_creating_process(
    client, task_queue, caplog
):
    """In this process the bridge's check passes and its answer is consumed quietly."""
    caplog.set_level(logging.ERROR, logger="asyncio")
    # The answer (an instant error from the bridge) is in long before the worker is up.
    async with pool.Worker(client, task_queue=task_queue, activities=[A.async_double]):
        pass
    gc.collect()
    assert "never retrieved" not in caplog.text
