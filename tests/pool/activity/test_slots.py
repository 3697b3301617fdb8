"""Counting slots: a released slot goes to the first waiter and is never lost."""

from __future__ import annotations

import asyncio

import pytest

from pool.activity.slots import Slots

pytestmark = pytest.mark.unit


async def _waiting(slots: Slots) -> asyncio.Task[None]:
    task = asyncio.ensure_future(slots.acquire())
    await asyncio.sleep(0)  # one loop step: it is now queued (no time passes)
    assert not task.done()
    return task


async def test_a_free_slot_is_taken_at_once_and_a_full_set_waits():
    slots = Slots(1)
    await slots.acquire()
    waiter = await _waiting(slots)
    assert repr(slots) == "<Slots [1 used, 0 free, 1 waiting]>"
    slots.release()
    await asyncio.wait_for(waiter, 1)
    assert slots.used == 1  # the released slot is now the waiter's


async def test_waiters_get_released_slots_first_come_first_served():
    slots = Slots(1)
    await slots.acquire()
    first, second = await _waiting(slots), await _waiting(slots)
    slots.release()
    await asyncio.wait_for(first, 1)
    assert not second.done()
    slots.release()
    await asyncio.wait_for(second, 1)
    assert slots.used == 1


async def test_a_waiter_cancelled_after_it_was_handed_a_slot_passes_it_on():
    slots = Slots(1)
    await slots.acquire()
    first, second = await _waiting(slots), await _waiting(slots)
    slots.release()  # hands the slot to `first` ...
    first.cancel()  # ... which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)  # the wake-up was not lost
    assert slots.used == 1


async def test_a_handed_slot_with_nobody_else_waiting_becomes_free():
    slots = Slots(1)
    await slots.acquire()
    only = await _waiting(slots)
    slots.release()
    only.cancel()
    with pytest.raises(asyncio.CancelledError):
        await only
    assert (slots.used, slots.free) == (0, 1)
    await asyncio.wait_for(slots.acquire(), 1)


async def test_a_waiter_cancelled_while_waiting_leaves_the_queue():
    slots = Slots(1)
    await slots.acquire()
    gone, stays = await _waiting(slots), await _waiting(slots)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert repr(slots) == "<Slots [1 used, 0 free, 1 waiting]>"
    slots.release()
    await asyncio.wait_for(stays, 1)
    assert slots.used == 1
