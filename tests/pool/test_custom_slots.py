"""A ``temporalio.worker.CustomSlotSupplier`` for activity slots: the SDK's contract
against the real server, and the shutdown and error paths on ``CustomSlots`` alone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import Any

import pytest
from temporalio.common import WorkerDeploymentVersion
from temporalio.worker import (
    ActivitySlotInfo,
    CustomSlotSupplier,
    FixedSizeSlotSupplier,
    SlotMarkUsedContext,
    SlotPermit,
    SlotReleaseContext,
    SlotReserveContext,
    WorkerDeploymentConfig,
    WorkerTuner,
)
from temporalio.worker._worker import load_default_build_id

import pool
from pool.activity.slots import CustomSlots, ReserveContext
from tests.helpers import async_assert_eventually, workflow_id
from tests.pool import _activities as A

_TUNING_LOGGER = "temporalio.worker._tuning"


class _Permit(SlotPermit):
    def __init__(self, number: int) -> None:
        super().__init__()
        self.number = number


class CappedSupplier(CustomSlotSupplier):
    """At most ``cap`` permits at a time; records every call and its context."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._free: asyncio.Semaphore | None = None
        self.contexts: list[SlotReserveContext] = []
        self.reserved: list[int] = []
        self.used: dict[int, str] = {}  # permit -> activity type
        self.released: list[tuple[int, str | None]] = []  # (permit, activity type or None)
        self.try_reserves = 0
        self.running = 0
        self.peak_running = 0

    async def reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit:
        self.contexts.append(ctx)
        if self._free is None:
            self._free = asyncio.Semaphore(self.cap)
        await self._free.acquire()
        self.reserved.append(len(self.reserved) + 1)
        return _Permit(self.reserved[-1])

    def try_reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit | None:
        self.try_reserves += 1
        return None

    def mark_slot_used(self, ctx: SlotMarkUsedContext) -> None:
        assert isinstance(ctx.permit, _Permit)
        assert isinstance(ctx.slot_info, ActivitySlotInfo)
        self.used[ctx.permit.number] = ctx.slot_info.activity_type
        self.running += 1
        self.peak_running = max(self.peak_running, self.running)

    def release_slot(self, ctx: SlotReleaseContext) -> None:
        assert isinstance(ctx.permit, _Permit)
        if ctx.slot_info is None:
            self.released.append((ctx.permit.number, None))
        else:
            assert isinstance(ctx.slot_info, ActivitySlotInfo)
            self.released.append((ctx.permit.number, ctx.slot_info.activity_type))
            self.running -= 1
        assert self._free is not None
        self._free.release()


def _tuner(activity_supplier: CustomSlotSupplier) -> WorkerTuner:
    fixed = FixedSizeSlotSupplier(10)
    return WorkerTuner.create_composite(
        workflow_supplier=fixed,
        activity_supplier=activity_supplier,
        local_activity_supplier=fixed,
        nexus_supplier=fixed,
    )


async def _run_all(client, task_queue: str, runs: list[tuple[str, list]]) -> list[Any]:
    handles = [
        await client.start_workflow(
            A.RunOne.run, args=[name, args], id=workflow_id(), task_queue=task_queue
        )
        for name, args in runs
    ]
    return list(await asyncio.gather(*(h.result() for h in handles)))


async def test_supplier_sees_reserve_mark_release_with_matching_permits(client, task_queue):
    supplier = CappedSupplier(cap=2)
    runs = [("sleep_then_return", [0.3, f"m{i}"]) for i in range(5)]
    runs += [("async_double", [i]) for i in range(3)]
    async with pool.Worker(
        client,
        task_queue=task_queue,
        activities=[A.sleep_then_return, A.async_double],
        workflows=[A.RunOne],
        processes=3,
        tuner=_tuner(supplier),
        identity="slots-test-worker",
        build_id="build-7",
    ) as worker:
        assert "CustomSlots [CappedSupplier" in repr(worker)
        results = await _run_all(client, task_queue, runs)
    assert results[:5] == [f"m{i}" for i in range(5)]
    assert [r[0] for r in results[5:]] == [0, 2, 4]

    # Each task used one permit, marked with its activity type.
    assert Counter(supplier.used.values()) == {"sleep_then_return": 5, "async_double": 3}
    # The supplier's cap held, though 3 children were free: it decides, not the pool.
    assert supplier.peak_running == 2
    # Every permit is released once: used ones with their task's type, the rest unused.
    await async_assert_eventually(lambda: len(supplier.released) == len(supplier.reserved))
    assert sorted(n for n, _ in supplier.released) == supplier.reserved
    for number, activity_type in supplier.released:
        assert activity_type == supplier.used.get(number)
    assert any(t is None for _, t in supplier.released)  # polls that brought nothing
    assert supplier.try_reserves == 0  # eager activities only: always off in pool.Worker
    # The context stock passes, for every reservation.
    assert supplier.contexts
    for ctx in supplier.contexts:
        assert ctx.slot_type == "activity"
        assert ctx.task_queue == task_queue
        assert ctx.worker_identity == "slots-test-worker"
        assert ctx.worker_build_id == "build-7"
        assert ctx.worker_deployment_version == WorkerDeploymentVersion("", "build-7")
        assert ctx.is_sticky is False


class FlakySupplier(CustomSlotSupplier):
    """``reserve_slot`` fails ``failures`` times, then hands out plain permits; marking
    and releasing always fail."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.reserve_calls = 0

    async def reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit:
        self.reserve_calls += 1
        if self.reserve_calls <= self.failures:
            raise ValueError(f"reserve failure {self.reserve_calls}")
        return SlotPermit()

    def try_reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit | None:
        raise ValueError("never called")

    def mark_slot_used(self, ctx: SlotMarkUsedContext) -> None:
        raise ValueError("mark failure")

    def release_slot(self, ctx: SlotReleaseContext) -> None:
        raise ValueError("release failure")


async def test_a_supplier_that_raises_is_logged_and_retried(client, task_queue, caplog):
    caplog.set_level(logging.WARNING, logger=_TUNING_LOGGER)
    supplier = FlakySupplier(failures=3)
    async with pool.Worker(
        client,
        task_queue=task_queue,
        activities=[A.pid_and_square],
        workflows=[A.RunOne],
        processes=1,
        max_concurrent_activity_task_polls=1,
        tuner=_tuner(supplier),
    ):
        results = await _run_all(client, task_queue, [("pid_and_square", [7])] * 2)
    assert [square for square, _ in results] == [49, 49]
    messages = Counter(
        (r.getMessage(), str(r.exc_info[1]) if r.exc_info else None)
        for r in caplog.records
        if r.name == _TUNING_LOGGER
    )
    for n in (1, 2, 3):
        assert messages["Error in custom slot supplier `reserve_slot`", f"reserve failure {n}"] == 1
    assert messages["Error in custom slot supplier `mark_slot_used`", "mark failure"] == 2
    assert messages["Error in custom slot supplier `release_slot`", "release failure"] >= 2


def _context() -> ReserveContext:
    return ReserveContext.for_worker("q", "me", "b", None)


@pytest.mark.unit
async def test_a_blocked_reserve_is_cancelled_on_shutdown_and_a_late_permit_released():
    """A reserve that ignores its cancellation does not hold up the poll loop; the
    permit it still returns is released unused."""
    reserve_started = asyncio.Event()
    may_return = asyncio.Event()
    released: list[SlotReleaseContext] = []

    class Stubborn(CustomSlotSupplier):
        async def reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit:
            reserve_started.set()
            while not may_return.is_set():
                with contextlib.suppress(asyncio.CancelledError):
                    await may_return.wait()
            return _Permit(1)

        def try_reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit | None:
            return None

        def mark_slot_used(self, ctx: SlotMarkUsedContext) -> None:
            raise AssertionError("never used")

        def release_slot(self, ctx: SlotReleaseContext) -> None:
            released.append(ctx)

    slots = CustomSlots(Stubborn(), _context())
    acquiring = asyncio.create_task(slots.acquire())
    await reserve_started.wait()
    acquiring.cancel()
    with pytest.raises(asyncio.CancelledError):
        await acquiring  # returns at once, though the supplier keeps going
    assert not released and slots.used == 0
    may_return.set()
    await async_assert_eventually(lambda: len(released) == 1)
    assert released[0].slot_info is None
    assert isinstance(released[0].permit, _Permit)
    assert slots.used == 0


@pytest.mark.unit
async def test_a_reserve_that_honours_cancellation_hands_out_nothing():
    started, cancelled = asyncio.Event(), asyncio.Event()

    class Blocking(CustomSlotSupplier):
        async def reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit:
            started.set()
            try:
                await asyncio.get_running_loop().create_future()
            except asyncio.CancelledError:
                cancelled.set()
                raise
            raise AssertionError("unreachable")

        def try_reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit | None:
            return None

        def mark_slot_used(self, ctx: SlotMarkUsedContext) -> None:
            return None

        def release_slot(self, ctx: SlotReleaseContext) -> None:
            raise AssertionError("nothing to release")

    slots = CustomSlots(Blocking(), _context())
    acquiring = asyncio.create_task(slots.acquire())
    await started.wait()
    acquiring.cancel()
    with pytest.raises(asyncio.CancelledError):
        await acquiring
    await asyncio.wait_for(cancelled.wait(), 5)
    assert slots.used == 0


async def test_blocking_supplier_does_not_hold_up_worker_shutdown(client, task_queue):
    """sdk-python's test_blocking_slot_supplier: reserve never returns."""

    class Blocking(CustomSlotSupplier):
        async def reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit:
            await asyncio.get_running_loop().create_future()
            raise AssertionError("unreachable")

        def try_reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit | None:
            return None

        def mark_slot_used(self, ctx: SlotMarkUsedContext) -> None:
            return None

        def release_slot(self, ctx: SlotReleaseContext) -> None:
            return None

    worker = pool.Worker(
        client,
        task_queue=task_queue,
        activities=[A.pid_and_square],
        processes=1,
        tuner=_tuner(Blocking()),
    )

    async def start_and_stop() -> None:
        async with worker:
            assert worker.activity_slots is not None and worker.activity_slots.free is None

    await asyncio.wait_for(start_and_stop(), 30)
    assert worker.is_shutdown


@pytest.mark.unit
def test_reserve_context_carries_the_workers_version_as_sdk_core_does():
    deployment = WorkerDeploymentConfig(
        version=WorkerDeploymentVersion("orders", "v3"), use_worker_versioning=True
    )
    ctx = ReserveContext.for_worker("q", "me", None, deployment)
    assert (ctx.worker_build_id, ctx.worker_deployment_version) == (
        "v3",
        WorkerDeploymentVersion("orders", "v3"),
    )
    # No build id given: temporalio's default one (a hash of the loaded code).
    ctx = ReserveContext.for_worker("q", "me", None, None)
    assert ctx.worker_build_id == load_default_build_id()
    assert ctx.worker_deployment_version == WorkerDeploymentVersion("", ctx.worker_build_id)
    assert (ctx.slot_type, ctx.task_queue, ctx.worker_identity, ctx.is_sticky) == (
        "activity",
        "q",
        "me",
        False,
    )
