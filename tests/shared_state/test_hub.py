"""The heartbeat hub on its own, in-process: coalescing, timeouts, flush order, close."""

from __future__ import annotations

import threading
import time

import pytest

from shared_state._hub import HeartbeatHub

pytestmark = pytest.mark.unit


def test_posting_many_times_for_one_token_keeps_only_the_newest() -> None:
    hub = HeartbeatHub()
    for i in range(1000):
        hub.post(b"a", i)
    assert hub.drain(0) == ([(b"a", 999)], [])
    assert hub.stats() == {"hub_pending": 0, "hub_flushes": 0, "hub_posted": 1000}


def test_drain_times_out_empty() -> None:
    hub = HeartbeatHub()
    started = time.monotonic()
    assert hub.drain(0.05) == ([], [])
    assert 0.04 <= time.monotonic() - started < 2


def test_many_tokens_come_out_together_each_with_its_newest() -> None:
    hub = HeartbeatHub()
    hub.post(b"a", 1)
    hub.post(b"b", 1)
    hub.post(b"a", 2)
    hub.post(b"c", 1)
    beats, flushes = hub.drain(0)
    assert dict(beats) == {b"a": 2, b"b": 1, b"c": 1}
    assert flushes == []
    assert hub.drain(0) == ([], [])


def test_a_flush_comes_out_with_or_after_the_posts_before_it() -> None:
    hub = HeartbeatHub()
    hub.post(b"a", 1)
    hub.flush(b"a")
    hub.post(b"b", 1)
    hub.flush(b"b")
    assert hub.drain(0) == ([(b"a", 1), (b"b", 1)], [b"a", b"b"])


def test_a_post_from_another_thread_wakes_a_blocked_drain() -> None:
    hub = HeartbeatHub()
    draining = threading.Event()
    result: list[object] = []

    def drain() -> None:
        draining.set()
        result.append(hub.drain(None))

    thread = threading.Thread(target=drain)
    thread.start()
    assert draining.wait(5)
    hub.post(b"a", "x")
    thread.join(5)
    assert result == [([(b"a", "x")], [])]


def test_close_wakes_drain_now_and_later() -> None:
    hub = HeartbeatHub()
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(hub.drain(30)))
    thread.start()
    hub.close()
    thread.join(5)
    assert not thread.is_alive()
    assert result == [([], [])]
    started = time.monotonic()
    assert hub.drain(30) == ([], [])
    assert time.monotonic() - started < 1
