"""Module-level functions that run in child processes (spawned or forked, stdlib or
multiprocess): they must be importable as ``tests.shared_state._helpers``."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from shared_state import HeartbeatSender


def send_many(sender: HeartbeatSender, token: bytes, count: int) -> float:
    """Post ``(i, {"step": i})`` for i in range(count); return microseconds per call."""
    sender.send_heartbeat(token, -1, {"step": -1})  # connect outside the timing
    started = time.perf_counter()
    for i in range(count):
        sender.send_heartbeat(token, i, {"step": i})
    return (time.perf_counter() - started) / count * 1e6


def send_once(sender: HeartbeatSender, token: bytes, *details: Any) -> int:
    sender.send_heartbeat(token, *details)
    return os.getpid()


def wait_event(event: threading.Event, timeout: float) -> bool:
    return event.wait(timeout)


def set_event(event: threading.Event) -> int:
    event.set()
    return os.getpid()


def inherited_connections(address: str) -> dict[str, bool]:
    """In a forked child, before any use: does it still hold its parent's connections to
    the manager at ``address``?"""
    from multiprocess.managers import BaseProxy

    from shared_state import _client

    tls_idset = BaseProxy._address_to_local.get(address)
    return {
        "proxy": tls_idset is not None and hasattr(tls_idset[0], "connection"),
        "sender": any(key[0] == address for key in _client._channels),
    }


def use_event_after_fork(event: threading.Event) -> bool:
    return event.is_set()
