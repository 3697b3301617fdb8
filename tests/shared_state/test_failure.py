"""When the manager server dies or stops answering: the drainer says so to its error
listeners (never a quiet death), and senders fail fast with a clear error."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import multiprocess
import psutil
import pytest

from shared_state import (
    SharedStateClosedError,
    SharedStateError,
    SharedStateManager,
    SharedStateUnreachableError,
)
from tests.helpers import assert_eventually
from tests.shared_state import _owner

# The sender's default give-up time is 5 s; "fails fast" means within that plus slack.
_SENDER_BOUND = 7.0
_WAIT = 30.0


@pytest.fixture
def manager() -> Iterator[SharedStateManager]:
    manager = SharedStateManager.create()
    try:
        yield manager
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(manager.pid, signal.SIGCONT)
        manager.shutdown()


async def test_a_killed_manager_reaches_the_error_listeners_and_senders_fail_fast(
    manager: SharedStateManager, caplog: pytest.LogCaptureFixture
) -> None:
    told = threading.Event()
    errors: list[BaseException] = []

    def listener(error: BaseException) -> None:
        errors.append(error)
        told.set()

    manager.add_error_listener(listener)
    sender = await manager.register_heartbeater(b"token", lambda *details: None)
    sender.send_heartbeat(b"token", "before")

    with caplog.at_level(logging.ERROR, logger="shared_state"):
        os.kill(manager.pid, signal.SIGKILL)
        assert await asyncio.to_thread(told.wait, _WAIT), "no error listener was called"

    assert len(errors) == 1
    assert isinstance(errors[0], SharedStateUnreachableError)
    assert manager.error is errors[0]
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    assert "failed" in repr(manager)

    started = time.monotonic()
    with pytest.raises(SharedStateUnreachableError, match=r"unreachable.*probably exited"):
        sender.send_heartbeat(b"token", "after")
    assert time.monotonic() - started < _SENDER_BOUND

    # Late listeners hear about it at once; no new heartbeaters; unregister returns.
    late: list[BaseException] = []
    manager.add_error_listener(late.append)
    assert late == errors
    with pytest.raises(SharedStateClosedError):
        await manager.register_heartbeater(b"other", lambda *details: None)
    await asyncio.wait_for(manager.unregister_heartbeater(b"token"), _SENDER_BOUND)


async def test_unregister_waiting_on_a_dying_manager_returns(
    manager: SharedStateManager,
) -> None:
    entered, release = threading.Event(), threading.Event()

    def stuck(*details: Any) -> None:
        entered.set()
        release.wait(_WAIT)

    sender = await manager.register_heartbeater(b"busy", stuck)
    await manager.register_heartbeater(b"token", lambda *details: None)
    sender.send_heartbeat(b"busy", 1)
    assert await asyncio.to_thread(entered.wait, _WAIT)
    told = threading.Event()
    manager.add_error_listener(lambda error: told.set())
    unregister = asyncio.create_task(manager.unregister_heartbeater(b"token"))
    await asyncio.sleep(0)
    os.kill(manager.pid, signal.SIGKILL)
    release.set()  # the drainer's next drain() finds the server gone
    # Returns whether its flush request reached the server before the kill (released by
    # the drainer's failure) or not (the request itself fails).
    await asyncio.wait_for(unregister, _WAIT)
    # Either way the drainer then finds the server gone and says so.
    assert await asyncio.to_thread(told.wait, _WAIT), "no error listener was called"
    assert isinstance(manager.error, SharedStateError)


def test_a_stopped_manager_makes_senders_give_up_not_hang(manager: SharedStateManager) -> None:
    sender = manager.heartbeat_sender(timeout=0.5)
    sender.send_heartbeat(b"t", 1)  # connected and answered
    os.kill(manager.pid, signal.SIGSTOP)
    try:
        # SIGSTOP takes effect asynchronously: wait until the kernel reports it stopped.
        server = psutil.Process(manager.pid)
        deadline = time.monotonic() + 5
        while server.status() != psutil.STATUS_STOPPED and time.monotonic() < deadline:
            time.sleep(0.001)
        started = time.monotonic()
        with pytest.raises(SharedStateUnreachableError, match=r"did not answer within 0\.5 s"):
            sender.send_heartbeat(b"t", 2)
        assert time.monotonic() - started < 3
    finally:
        os.kill(manager.pid, signal.SIGCONT)
    sender.send_heartbeat(b"t", 3)  # reconnects once it answers again


def test_a_manager_whose_owner_dies_exits_too() -> None:
    """The owner is SIGKILLed (no shutdown runs): its manager server leaves as well."""
    ctx = multiprocess.get_context("spawn")
    reader, writer = ctx.Pipe(duplex=False)
    owner = ctx.Process(target=_owner.own_a_manager, args=(writer,))
    owner.start()
    writer.close()
    try:
        assert reader.poll(_WAIT)
        server_pid, address = reader.recv()
        os.kill(owner.pid, signal.SIGKILL)
        owner.join(_WAIT)

        def gone() -> bool:
            try:
                os.kill(server_pid, 0)
            except ProcessLookupError:
                return True
            return False

        assert_eventually(gone, timeout=_WAIT)
        assert not os.path.exists(os.path.dirname(address))
    finally:
        if owner.is_alive():
            owner.kill()
            owner.join()
