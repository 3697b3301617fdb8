"""Activity slots from a user's ``temporalio.worker.CustomSlotSupplier``.

The poller and the dispatcher drive :class:`CustomSlots` through the
:class:`~pool._poller.Slots` calls; each becomes the supplier's method with the
context object stock temporalio passes:

    Poller      acquire         -> reserve_slot(ReserveContext)        before each poll
                mark_used       -> mark_slot_used(MarkUsedContext)     a poll brought a task
                release_unused  -> release_slot(slot_info=None)        a poll brought nothing
    Dispatcher  release(token)  -> release_slot(slot_info=ActivitySlotInfo)  that task is reported

``reserve_slot`` may block; when the worker shuts down the poller cancels it, and a
permit it still returns afterwards is released unused. A supplier that raises is
logged with stock's message on stock's logger (``temporalio.worker._tuning``):
``reserve_slot`` is retried after a short backoff, failing ``mark_slot_used`` and
``release_slot`` calls are skipped; the worker carries on either way.
``try_reserve_slot`` is sdk-core's eager-activity path, which pool.Worker keeps off:
it is never called.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Literal

from temporalio.common import WorkerDeploymentVersion
from temporalio.worker import (
    CustomSlotSupplier,
    SlotReleaseContext,
    WorkerDeploymentConfig,
)
from temporalio.worker._worker import load_default_build_id

from ._poller import Slots

__all__ = ["ActivitySlotInfo", "CustomSlots", "MarkUsedContext", "ReserveContext"]

logger = logging.getLogger("temporalio.worker._tuning")

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
