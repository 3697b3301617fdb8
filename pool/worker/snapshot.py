"""What the worker's activity side has done and how it is, read on the worker's loop.

    ActivitySide ─▶ take_snapshot   slots + Dispatcher counters + ProcessPool.snapshot()
                                    (sampled first on request) ─▶ WorkerSnapshot (a frozen copy)
                 ─▶ side_checks     polling, children ─▶ {check: "ok" or what is wrong}

The CLI, the demo, the metrics and ``/readyz`` read these copies, never live internals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..supervisor import PoolSnapshot
from .activity_side import ActivitySide

__all__ = ["SlotsSnapshot", "WorkerSnapshot", "side_checks", "take_snapshot"]


@dataclass(frozen=True)
class SlotsSnapshot:
    """The activity slots at one moment."""

    used: int
    free: int | None  # None: a custom slot supplier's free slots are its own


@dataclass(frozen=True)
class WorkerSnapshot:
    """What the worker's activity side has done, read at one moment on its loop.

    The CLI, the demo and the metrics read this instead of the worker's internals.
    """

    # Whether this worker dispatches remote activity tasks (False: workflows only, or
    # not started yet); the counters below stay zero when it does not.
    dispatching: bool = False
    # The activity slots (None when this worker runs no remote activities).
    slots: SlotsSnapshot | None = None
    # Tasks in flight (received, not yet reported).
    running: int = 0
    # Tasks started, by activity type; tasks ended, by (activity type, outcome).
    started: Mapping[str, int] = field(default_factory=dict)
    outcomes: Mapping[tuple[str, str], int] = field(default_factory=dict)
    # RecordActivityTaskHeartbeat calls sent, and how many of them failed.
    heartbeat_rpcs: int = 0
    heartbeat_errors: int = 0
    # Completions that children sent to the server themselves (large results).
    sent_by_children: int = 0
    # The process pool's state (None when this worker runs no process pool).
    pool: PoolSnapshot | None = None

    @property
    def completed(self) -> int:
        """Tasks that completed successfully, over every activity type."""
        return sum(n for (_, outcome), n in self.outcomes.items() if outcome == "completed")


def take_snapshot(side: ActivitySide | None, *, sample: bool) -> WorkerSnapshot:
    """A copy of the activity side's counters and the pool's state; ``sample`` first
    refreshes each child's memory and CPU figures."""
    if side is None:
        return WorkerSnapshot()
    pool_snapshot = None
    if side.pool is not None and side.pool.started:
        if sample:
            side.pool.sample()
        pool_snapshot = side.pool.snapshot()
    slots = SlotsSnapshot(used=side.slots.used, free=side.slots.free)
    dispatcher = side.dispatcher
    if dispatcher is None:
        return WorkerSnapshot(slots=slots, pool=pool_snapshot)
    return WorkerSnapshot(
        dispatching=True,
        slots=slots,
        running=dispatcher.outstanding,
        started=dict(dispatcher.started),
        outcomes=dict(dispatcher.stats),
        heartbeat_rpcs=dispatcher.heartbeats.rpcs,
        heartbeat_errors=dispatcher.heartbeats.errors,
        sent_by_children=dispatcher.sent_by_children,
        pool=pool_snapshot,
    )


def side_checks(side: ActivitySide | None) -> dict[str, str]:
    """The activity side's readiness checks: polling, and a ready child when a pool runs."""
    checks: dict[str, str] = {}
    if side is None:
        return checks
    poller = side.poller
    if poller is None:
        checks["polling"] = "not started"
    elif poller.poll_failure is not None:
        checks["polling"] = f"activity polls fail: {poller.poll_failure}"
    else:
        checks["polling"] = "ok"
    if side.pool is not None:
        snapshot = side.pool.snapshot()
        up = snapshot.idle + snapshot.busy
        checks["children"] = "ok" if up else f"no child is ready (0 of {snapshot.size})"
    return checks
