"""pool._changes.Changes: wait until a predicate holds, woken by plain notify() calls."""

from __future__ import annotations

import asyncio

import pytest

from pool._changes import Changes

pytestmark = pytest.mark.unit


async def _parked(changes: Changes, count: int) -> None:
    """Yield to the loop until ``count`` waiters have parked (within a deadline)."""

    async def parked() -> None:
        while changes.waiting < count:
            await asyncio.sleep(0)

    await asyncio.wait_for(parked(), timeout=10)


async def test_a_predicate_that_holds_returns_at_once() -> None:
    changes = Changes()
    assert await changes.until(lambda: True, timeout=0)
    assert changes.waiting == 0


async def test_notify_wakes_every_waiter_and_each_rechecks_its_own_predicate() -> None:
    changes = Changes()
    state = {"n": 0}
    first = asyncio.create_task(changes.until(lambda: state["n"] >= 1))
    second = asyncio.create_task(changes.until(lambda: state["n"] >= 2))
    await _parked(changes, 2)
    state["n"] = 1
    changes.notify()
    assert await first
    await _parked(changes, 1)  # the second looked, and parked again
    assert not second.done()
    state["n"] = 2
    changes.notify()
    assert await second
    assert changes.waiting == 0


async def test_a_timeout_returns_false_and_leaves_no_waiter_behind() -> None:
    changes = Changes()
    assert not await changes.until(lambda: False, timeout=0.01)
    assert changes.waiting == 0


async def test_a_cancelled_waiter_takes_no_wake_up_from_the_others() -> None:
    changes = Changes()
    ready = {"v": False}
    doomed = asyncio.create_task(changes.until(lambda: ready["v"]))
    survivor = asyncio.create_task(changes.until(lambda: ready["v"]))
    await _parked(changes, 2)
    ready["v"] = True
    changes.notify()
    doomed.cancel()
    assert await survivor
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert changes.waiting == 0
