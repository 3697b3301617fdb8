"""Activity slots: how many tasks may be polled and run at once.

    Poller      acquire         before each poll: a slot's permit (waits while none is free)
                mark_used       the poll brought a task: the permit is that task's (its token)
                release_unused  the poll brought nothing: the permit goes back
    Dispatcher  release(token)  that task is reported: its slot goes back

Three kinds: :class:`Slots` counts a fixed number and hands a released slot straight
to the first waiter; :class:`ResourceSlots` grants one while system CPU and memory
stay under their targets (temporalio's resource-based tuner); :class:`CustomSlots`
turns each call into a user's ``temporalio.worker.CustomSlotSupplier`` method with
the context object stock temporalio passes:

    acquire         -> reserve_slot(ReserveContext)
    mark_used       -> mark_slot_used(MarkUsedContext)
    release_unused  -> release_slot(slot_info=None)
    release(token)  -> release_slot(slot_info=ActivitySlotInfo)

``reserve_slot`` may block; when the worker shuts down the poller cancels it, and a
permit it still returns afterwards is released unused. A supplier that raises is
logged with stock's message on stock's logger (``temporalio.worker._tuning``):
``reserve_slot`` is retried after a short backoff, failing ``mark_slot_used`` and
``release_slot`` calls are skipped; the worker carries on either way.
``try_reserve_slot`` is sdk-core's eager-activity path, which pool.Worker keeps off:
it is never called. :class:`RateLimiter` spaces task starts
(``max_activities_per_second``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import psutil
from temporalio.common import WorkerDeploymentVersion
from temporalio.worker import (
    CustomSlotSupplier,
    SlotReleaseContext,
    WorkerDeploymentConfig,
)
from temporalio.worker._worker import load_default_build_id

__all__ = [
    "ActivitySlotInfo",
    "CustomSlots",
    "MarkUsedContext",
    "RateLimiter",
    "ReserveContext",
    "ResourceSlots",
    "ResourceTargets",
    "Slots",
    "resources_allow",
]

logger = logging.getLogger("temporalio.worker._tuning")


class Slots:
    """Counts activity slots; ``acquire`` waits for a free one.

    A slot's life: ``acquire`` (before a poll) returns its permit; a poll that
    brings a task hands the permit to that task (``mark_used``, keyed by the task
    token) and the dispatcher ends it with ``release(token)``; a poll that brings
    nothing gives it back with ``release_unused(permit)``. Counting slots need no
    permit (None); a custom supplier's slots do (:class:`CustomSlots`).

    A released slot is handed to the first waiter (it stays counted as used); a
    waiter cancelled after it was handed one passes it on, so no wake-up is lost.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def __repr__(self) -> str:
        return f"<Slots [{self.used} used, {self.free} free, {len(self._waiters)} waiting]>"

    @property
    def free(self) -> int | None:
        """Slots that could be handed out now (None: only the supplier knows)."""
        return max(self.size - self.used, 0)

    async def acquire(self) -> Any:
        if self.used < self.size and not self._waiters:
            self.used += 1
            return None
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._hand_on()  # handed a slot, then cancelled: the next waiter's
            elif waiter in self._waiters:  # not yet skipped by a release
                self._waiters.remove(waiter)
            raise
        return None

    def mark_used(self, permit: Any, token: bytes, activity_type: str) -> None:
        """The slot of ``permit`` now runs the task ``token`` (nothing to do here)."""

    def release_unused(self, permit: Any) -> None:
        """Give back a slot whose poll brought no task."""
        self.release()

    def release(self, token: bytes = b"") -> None:
        """Give back the slot that ran task ``token`` (counting slots need no token)."""
        self._hand_on()

    def _hand_on(self) -> None:
        """A slot came free: the first waiter's, or free again when nobody waits."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.used -= 1


@dataclass(frozen=True)
class ResourceTargets:
    """A resource-based slot supplier's settings (from temporalio's tuner)."""

    minimum: int
    maximum: int
    ramp_throttle: float
    target_memory: float  # 0..1 of system memory
    target_cpu: float  # 0..1 of all cores


def resources_allow(
    used: int, since_last_grant: float, memory: float, cpu: float, targets: ResourceTargets
) -> bool:
    """Whether one more slot may be handed out now (pure; the caller samples psutil)."""
    if used < targets.minimum:
        return True
    if used >= targets.maximum or since_last_grant < targets.ramp_throttle:
        return False
    return memory < targets.target_memory and cpu < targets.target_cpu


class ResourceSlots(Slots):
    """Slots handed out while system CPU and memory stay under their targets.

    A slot is only granted when a task could start at once, so the poller never
    takes a task the machine cannot run now. Usage is sampled with psutil while
    somebody waits (every ``SAMPLE_INTERVAL``): there is no event for "the CPU
    calmed down".
    """

    SAMPLE_INTERVAL = 0.1

    def __init__(self, targets: ResourceTargets) -> None:
        super().__init__(targets.maximum)
        self.targets = targets
        self._last_grant = 0.0
        psutil.cpu_percent(interval=None)  # prime the CPU counter

    def __repr__(self) -> str:
        return (
            f"<ResourceSlots [{self.used} used | cpu < {self.targets.target_cpu:.0%}, "
            f"memory < {self.targets.target_memory:.0%}, max {self.targets.maximum}]>"
        )

    def _allowed(self) -> bool:
        memory = psutil.virtual_memory().percent / 100
        cpu = psutil.cpu_percent(interval=None) / 100
        return resources_allow(
            self.used, time.monotonic() - self._last_grant, memory, cpu, self.targets
        )

    async def acquire(self) -> None:
        while not self._allowed():
            await asyncio.sleep(self.SAMPLE_INTERVAL)
        self.used += 1
        self._last_grant = time.monotonic()


class RateLimiter:
    """At most ``per_second`` task starts per second, spaced evenly."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second
        self._next = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        at = max(now, self._next)
        self._next = at + self.interval
        if at > now:
            await asyncio.sleep(at - now)


RETRY_FIRST = 0.05  # seconds before the first retry of a failed reserve_slot
RETRY_MAX = 1.0  # the backoff doubles up to this


# Plain (not frozen) dataclasses: temporalio's protocols declare settable attributes.
@dataclass
class ReserveContext:
    """What ``reserve_slot`` receives (``temporalio.worker.SlotReserveContext``)."""

    slot_type: Literal["workflow", "activity", "local-activity"]
    task_queue: str
    worker_identity: str
    worker_build_id: str
    worker_deployment_version: WorkerDeploymentVersion | None
    is_sticky: bool = False

    @classmethod
    def for_worker(
        cls,
        task_queue: str,
        identity: str,
        build_id: str | None,
        deployment_config: WorkerDeploymentConfig | None,
    ) -> ReserveContext:
        """The context sdk-core builds for this worker's activity slots."""
        if deployment_config is not None:
            version = deployment_config.version
        else:
            # sdk-core: a build id without a deployment is a version with no name.
            version = WorkerDeploymentVersion("", build_id or load_default_build_id())
        return cls(
            slot_type="activity",
            task_queue=task_queue,
            worker_identity=identity,
            worker_build_id=version.build_id,
            worker_deployment_version=version,
        )


@dataclass
class ActivitySlotInfo:
    """The task a slot runs (``temporalio.worker.ActivitySlotInfo``)."""

    activity_type: str


@dataclass
class MarkUsedContext:
    """What ``mark_slot_used`` receives (``temporalio.worker.SlotMarkUsedContext``)."""

    slot_info: ActivitySlotInfo
    permit: Any


class CustomSlots(Slots):
    """Slots handed out by a ``CustomSlotSupplier``; ``used`` counts its live permits."""

    def __init__(self, supplier: CustomSlotSupplier, context: ReserveContext) -> None:
        super().__init__(0)
        self.supplier = supplier
        self.context = context
        self._running: dict[bytes, tuple[Any, ActivitySlotInfo]] = {}  # token -> slot

    def __repr__(self) -> str:
        return (
            f"<CustomSlots [{type(self.supplier).__name__}: {self.used} reserved, "
            f"{len(self._running)} running]>"
        )

    @property
    def free(self) -> int | None:
        return None

    async def acquire(self) -> Any:
        delay = RETRY_FIRST
        while True:
            try:
                permit = await self._reserve()
            except Exception:  # not CancelledError: shutdown ends the loop
                logger.warning("Error in custom slot supplier `reserve_slot`", exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            self.used += 1
            return permit

    async def _reserve(self) -> Any:
        # Shielded: a cancelled poll loop returns at once even if the supplier's
        # coroutine is slow to honour its own cancellation.
        reserving = asyncio.ensure_future(self.supplier.reserve_slot(self.context))
        try:
            return await asyncio.shield(reserving)
        except asyncio.CancelledError:
            reserving.cancel()
            reserving.add_done_callback(self._release_late)
            raise

    def _release_late(self, reserving: asyncio.Future[Any]) -> None:
        """A reservation that ended after its poll loop was cancelled."""
        if reserving.cancelled() or reserving.exception() is not None:
            return
        self._call("release_slot", SlotReleaseContext(slot_info=None, permit=reserving.result()))

    def mark_used(self, permit: Any, token: bytes, activity_type: str) -> None:
        info = ActivitySlotInfo(activity_type=activity_type)
        self._running[token] = (permit, info)
        self._call("mark_slot_used", MarkUsedContext(slot_info=info, permit=permit))

    def release_unused(self, permit: Any) -> None:
        self.used -= 1
        self._call("release_slot", SlotReleaseContext(slot_info=None, permit=permit))

    def release(self, token: bytes = b"") -> None:
        permit, info = self._running.pop(token)
        self.used -= 1
        self._call("release_slot", SlotReleaseContext(slot_info=info, permit=permit))

    def _call(self, method: str, ctx: Any) -> None:
        try:
            getattr(self.supplier, method)(ctx)
        except Exception:
            logger.warning("Error in custom slot supplier `%s`", method, exc_info=True)
