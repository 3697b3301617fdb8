"""SharedStateManager against its real server process: events and heartbeats crossing
into multiprocess and stdlib children, coalescing, flush on unregister, security, and a
clean shutdown."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import stat
import threading
from collections.abc import Callable, Iterator
from typing import Any

import cloudpickle
import multiprocess
import multiprocess.connection
import psutil
import pytest
import temporalio.worker

from shared_state import (
    HeartbeatDetailsError,
    HeartbeatSender,
    SharedStateClosedError,
    SharedStateManager,
    SharedStateUnreachableError,
)
from tests.helpers import assert_eventually, async_assert_eventually
from tests.shared_state import _helpers

# Generous bound for "this happens promptly": a child process (spawn: ~0.5 s to import
# temporalio) or the drainer thread.
_WAIT = 30.0


@pytest.fixture(scope="module")
def manager() -> Iterator[SharedStateManager]:
    """One server for the tests that do not break it (each uses its own tokens)."""
    with SharedStateManager.create() as manager:
        yield manager


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class _Recorder:
    """A heartbeat function that records calls and can be made to block."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.called = threading.Event()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def block_next_call(self) -> None:
        self.release.clear()

    def __call__(self, *details: Any) -> None:
        self.entered.set()
        self.release.wait(_WAIT)
        self.calls.append(details)
        self.called.set()


# -- executors that run helpers in children ----------------------------------------------


def _in_multiprocess_spawn_child(fn: Callable[..., Any], *args: Any) -> Any:
    pool = multiprocess.get_context("spawn").Pool(1)
    try:
        return pool.apply(fn, args)
    finally:
        pool.close()
        pool.join()


def _in_stdlib_child(fn: Callable[..., Any], *args: Any) -> Any:
    # The stdlib's default start method, as a stock worker would use it.
    with concurrent.futures.ProcessPoolExecutor(1) as executor:
        return executor.submit(fn, *args).result(_WAIT)


def _in_stdlib_spawn_child(fn: Callable[..., Any], *args: Any) -> Any:
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as executor:
        return executor.submit(fn, *args).result(_WAIT)


_CHILDREN = pytest.mark.parametrize(
    "in_child",
    [_in_multiprocess_spawn_child, _in_stdlib_child, _in_stdlib_spawn_child],
    ids=["multiprocess-spawn", "stdlib-default", "stdlib-spawn"],
)


# -- shape --------------------------------------------------------------------------------


def test_is_a_temporalio_shared_state_manager(manager: SharedStateManager) -> None:
    assert isinstance(manager, temporalio.worker.SharedStateManager)
    assert isinstance(manager.heartbeat_sender(), temporalio.worker.SharedHeartbeatSender)


def test_listens_on_a_unix_socket_in_a_private_directory(manager: SharedStateManager) -> None:
    assert stat.S_ISSOCK(os.stat(manager.address).st_mode)
    directory = os.path.dirname(manager.address)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert os.stat(directory).st_uid == os.getuid()
    assert psutil.Process(manager.pid).is_running()


def test_repr_shows_live_state(manager: SharedStateManager) -> None:
    assert repr(manager).startswith(f"<SharedStateManager [address={manager.address}, alive | ")
    assert "heartbeaters: " in repr(manager)


def test_cannot_be_pickled(manager: SharedStateManager) -> None:
    with pytest.raises(TypeError, match="heartbeat_sender"):
        pickle.dumps(manager)


# -- security -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client", "refused"),
    [
        (multiprocess.connection.Client, multiprocess.AuthenticationError),
        (multiprocessing.connection.Client, multiprocessing.AuthenticationError),
    ],
    ids=["multiprocess", "stdlib"],
)
def test_a_wrong_authkey_is_refused(
    manager: SharedStateManager, client: Any, refused: type[Exception]
) -> None:
    with pytest.raises(refused):
        client(manager.address, authkey=os.urandom(32))


def test_a_sender_with_a_wrong_authkey_gets_a_clear_error(manager: SharedStateManager) -> None:
    sender = HeartbeatSender(manager.address, os.urandom(32), "0", timeout=2)
    with pytest.raises(SharedStateUnreachableError, match="refused our authentication key"):
        sender.send_heartbeat(b"t", 1)


# -- the sender ---------------------------------------------------------------------------


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
def test_sender_pickles_to_an_equal_sender_without_showing_its_key(
    manager: SharedStateManager, dumps: Callable[[Any], bytes]
) -> None:
    sender = manager.heartbeat_sender()
    copy = pickle.loads(dumps(sender))
    assert copy == sender and copy is not sender
    assert repr(copy) == repr(sender)
    assert manager.address in repr(copy)
    assert "authkey" not in repr(copy)


@_CHILDREN
async def test_heartbeats_from_a_child_reach_the_registered_function(
    manager: SharedStateManager, in_child: Callable[..., Any]
) -> None:
    token = os.urandom(16)
    recorder = _Recorder()
    sender = await manager.register_heartbeater(token, recorder)
    try:
        child_pid = await asyncio.to_thread(in_child, _helpers.send_once, sender, token, 7, "x")
        assert child_pid != os.getpid()
        await async_assert_eventually(lambda: recorder.calls == [(7, "x")], timeout=_WAIT)
    finally:
        await manager.unregister_heartbeater(token)


async def test_posts_coalesce_while_the_drainer_is_busy(manager: SharedStateManager) -> None:
    token = os.urandom(16)
    recorder = _Recorder()
    recorder.block_next_call()
    sender = await manager.register_heartbeater(token, recorder)
    try:
        sender.send_heartbeat(token, "first")
        assert await asyncio.to_thread(recorder.entered.wait, _WAIT)  # drainer is stuck
        # 1001 posts from a child (a warm-up one, then 0..999), all while it is stuck.
        await asyncio.to_thread(
            _in_multiprocess_spawn_child, _helpers.send_many, sender, token, 1000
        )
        assert manager.stats()["hub_pending"] >= 1
        recorder.release.set()
        await async_assert_eventually(lambda: len(recorder.calls) == 2, timeout=_WAIT)
    finally:
        recorder.release.set()
        await manager.unregister_heartbeater(token)
    assert recorder.calls == [("first",), (999, {"step": 999})]


async def test_each_token_gets_its_own_newest_details(manager: SharedStateManager) -> None:
    tokens = [os.urandom(16) for _ in range(3)]
    recorders = [_Recorder() for _ in tokens]
    for token, recorder in zip(tokens, recorders, strict=True):
        sender = await manager.register_heartbeater(token, recorder)
    for round_ in range(3):
        for n, token in enumerate(tokens):
            sender.send_heartbeat(token, n, round_)
    for token in tokens:
        await manager.unregister_heartbeater(token)
    for n, recorder in enumerate(recorders):
        assert recorder.calls, n
        assert recorder.calls[-1] == (n, 2)
        assert all(call[0] == n for call in recorder.calls)


async def test_unregister_delivers_what_was_posted_before_it(manager: SharedStateManager) -> None:
    for i in range(20):
        token = os.urandom(16)
        recorder = _Recorder()
        sender = await manager.register_heartbeater(token, recorder)
        sender.send_heartbeat(token, "last", i)
        await manager.unregister_heartbeater(token)
        assert recorder.calls == [("last", i)]


async def test_unregister_flushes_a_heartbeat_still_in_the_hub_without_blocking_the_loop(
    manager: SharedStateManager,
) -> None:
    busy_token, token = os.urandom(16), os.urandom(16)
    busy, recorder = _Recorder(), _Recorder()
    busy.block_next_call()
    sender = await manager.register_heartbeater(busy_token, busy)
    await manager.register_heartbeater(token, recorder)
    try:
        sender.send_heartbeat(busy_token, "hold the drainer")
        await asyncio.to_thread(busy.entered.wait, _WAIT)
        sender.send_heartbeat(token, "pending")  # stays in the hub: the drainer is busy
        unregister = asyncio.create_task(manager.unregister_heartbeater(token))
        ticks = 0
        while ticks < 5:  # the loop keeps running while unregister waits
            await asyncio.sleep(0)
            ticks += 1
        assert not unregister.done() and recorder.calls == []
        busy.release.set()
        await asyncio.wait_for(unregister, _WAIT)
        assert recorder.calls == [("pending",)]
    finally:
        busy.release.set()
        await manager.unregister_heartbeater(busy_token)


async def test_unregister_of_an_unknown_token_returns_at_once(manager: SharedStateManager) -> None:
    await asyncio.wait_for(manager.unregister_heartbeater(b"never registered"), 1)


async def test_a_raising_heartbeat_function_is_logged_and_the_drainer_goes_on(
    manager: SharedStateManager, caplog: pytest.LogCaptureFixture
) -> None:
    bad_token, good_token = os.urandom(16), os.urandom(16)
    recorder = _Recorder()

    def bad(*details: Any) -> None:
        raise ValueError("heartbeat function bug")

    sender = await manager.register_heartbeater(bad_token, bad)
    await manager.register_heartbeater(good_token, recorder)
    with caplog.at_level(logging.ERROR, logger="shared_state"):
        sender.send_heartbeat(bad_token, 1)
        await manager.unregister_heartbeater(bad_token)
        sender.send_heartbeat(good_token, 2)
        await manager.unregister_heartbeater(good_token)
    assert recorder.calls == [(2,)]
    assert manager.error is None
    assert any("heartbeat function bug" in (r.exc_text or "") for r in caplog.records)


def test_unpicklable_details_raise_a_clear_error(manager: SharedStateManager) -> None:
    with pytest.raises(HeartbeatDetailsError, match="cannot be pickled"):
        manager.heartbeat_sender().send_heartbeat(b"t", threading.Lock())


async def test_details_that_only_cloudpickle_handles_still_arrive(
    manager: SharedStateManager,
) -> None:
    token = os.urandom(16)
    recorder = _Recorder()
    sender = await manager.register_heartbeater(token, recorder)
    sender.send_heartbeat(token, lambda: "from a lambda")
    await manager.unregister_heartbeater(token)
    assert recorder.calls[0][0]() == "from a lambda"


def test_send_heartbeat_cost_from_a_child(manager: SharedStateManager) -> None:
    """Not a benchmark gate: one post is one round trip, so it stays well under 1 ms."""
    per_call_us = _in_stdlib_child(_helpers.send_many, manager.heartbeat_sender(), b"cost", 2000)
    print(f"send_heartbeat from a stdlib child: {per_call_us:.1f} us per call")
    assert per_call_us < 1000


# -- events -------------------------------------------------------------------------------


@_CHILDREN
def test_an_event_set_in_the_parent_is_seen_in_a_child(
    manager: SharedStateManager, in_child: Callable[..., Any]
) -> None:
    event = manager.new_event()
    event.set()
    assert in_child(_helpers.wait_event, event, _WAIT) is True


@_CHILDREN
def test_an_event_set_in_a_child_is_seen_in_the_parent(
    manager: SharedStateManager, in_child: Callable[..., Any]
) -> None:
    event = manager.new_event()
    assert not event.is_set()
    assert in_child(_helpers.set_event, event) != os.getpid()
    assert event.wait(_WAIT)


def test_a_forked_stdlib_child_does_not_reuse_the_parents_connections(
    manager: SharedStateManager,
) -> None:
    event = manager.new_event()
    event.set()  # gives this thread a proxy connection
    manager.heartbeat_sender().send_heartbeat(b"fork", 1)  # and a sender connection
    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as executor:
        inherited = executor.submit(_helpers.inherited_connections, manager.address).result(_WAIT)
        assert inherited == {"proxy": False, "sender": False}
        assert executor.submit(_helpers.use_event_after_fork, event).result(_WAIT) is True
    assert event.is_set()


def test_events_the_owner_drops_are_released_in_the_server(manager: SharedStateManager) -> None:
    manager.new_event()  # releases whatever earlier tests dropped
    before = manager.stats()["server_objects"]
    for _ in range(50):
        manager.new_event()  # dropped at once
    manager.new_event()
    assert manager.stats()["server_objects"] <= before + 1


# -- lifecycle ----------------------------------------------------------------------------


def test_shutdown_stops_the_server_removes_the_socket_and_is_idempotent() -> None:
    manager = SharedStateManager.create()
    directory = os.path.dirname(manager.address)
    pid = manager.pid
    manager.shutdown()
    assert _gone(pid)
    assert not os.path.exists(directory)
    assert repr(manager).startswith(f"<SharedStateManager [address={manager.address}, shut down")
    manager.shutdown()
    with pytest.raises(SharedStateClosedError):
        manager.new_event()


async def test_shutdown_with_a_running_drainer_and_registrations_after_it() -> None:
    with SharedStateManager.create() as manager:
        recorder = _Recorder()
        sender = await manager.register_heartbeater(b"t", recorder)
        sender.send_heartbeat(b"t", 1)
        await async_assert_eventually(lambda: recorder.calls == [(1,)], timeout=_WAIT)
        assert "heartbeaters: 1" in repr(manager)
        pid = manager.pid
    assert _gone(pid)
    with pytest.raises(SharedStateClosedError):
        await manager.register_heartbeater(b"u", recorder)
    await manager.unregister_heartbeater(b"t")  # nothing to flush any more: returns


def test_a_garbage_collected_manager_shuts_down() -> None:
    manager = SharedStateManager.create()
    pid, directory = manager.pid, os.path.dirname(manager.address)
    del manager
    assert_eventually(lambda: _gone(pid) and not os.path.exists(directory), timeout=_WAIT)


async def test_forget_heartbeater_drops_a_registration_without_a_flush(
    manager: SharedStateManager,
) -> None:
    await manager.register_heartbeater(b"quiet", lambda *details: None)
    assert manager.stats()["heartbeaters"] == 1
    manager.forget_heartbeater(b"quiet")
    assert manager.stats()["heartbeaters"] == 0
    await manager.unregister_heartbeater(b"quiet")  # already gone: returns at once
