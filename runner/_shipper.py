"""Heartbeats in the child: kept in local memory, shipped by a helper thread.

    activity.heartbeat() ─▶ Beats.pending (newest details) ─▶ Shipper thread
                            (converts, throttles to one per interval) ─▶ sender ─▶ parent

``heartbeat()`` costs an attribute write and, when no ship is scheduled, one
``Event.set``; conversion and the manager call happen on the shipper's thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import temporalio.api.common.v1
import temporalio.converter

__all__ = ["Beats", "Shipper"]

logger = logging.getLogger("runner")


@dataclass(eq=False)
class Beats:
    """Heartbeat state of one running task; a fresh one per task."""

    token: bytes
    interval: float
    converter: temporalio.converter.PayloadConverter
    latest: tuple[Any, ...] | None = None
    pending: tuple[Any, ...] | None = None
    scheduled: bool = False
    ended: bool = False
    # What the shipper sleeps on between heartbeats, set by end(). The shipper makes
    # it: a task that never heartbeats (most) costs no Event.
    wakeup: threading.Event | None = None
    error: BaseException | None = None

    def end(self) -> None:
        # ended first, then wakeup: the shipper sets wakeup first, then reads ended,
        # so one of the two sees the other.
        self.ended = True
        wakeup = self.wakeup
        if wakeup is not None:
            wakeup.set()

    def convert(self, details: tuple[Any, ...]) -> bytes:
        message = temporalio.api.common.v1.Payloads()
        message.payloads.extend(self.converter.to_payloads(details))
        return message.SerializeToString()


class Shipper:
    """Ships the newest heartbeat details to the parent, at most once per interval.

    ``sender`` has ``send_heartbeat(token, data)`` (a manager proxy; None ships
    nothing); ``on_error(beats, err)`` hears of details that cannot be converted.
    """

    def __init__(self, sender: Any, on_error: Callable[[Beats, BaseException], None]) -> None:
        self._sender = sender
        self._on_error = on_error
        self._wake = threading.Event()
        self._current: Beats | None = None
        self._thread: threading.Thread | None = None

    def begin(self, beats: Beats) -> None:
        self._current = beats

    def heartbeat(self, beats: Beats, details: tuple[Any, ...]) -> None:
        """What ``activity.heartbeat(*details)`` does in the child."""
        beats.latest = details
        beats.pending = details
        if not beats.scheduled:
            beats.scheduled = True
            self._wake_thread()

    def _wake_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="heartbeat-shipper", daemon=True)
            self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            beats = self._current
            if beats is not None:
                self._ship(beats)

    def _ship(self, beats: Beats) -> None:
        wakeup = beats.wakeup
        if wakeup is None:
            wakeup = beats.wakeup = threading.Event()
        while not beats.ended:
            details = beats.pending
            if details is None:
                # Clear the flag, then look again: a heartbeat() that set pending
                # before seeing the flag cleared would otherwise be missed.
                beats.scheduled = False
                if beats.pending is None:
                    return
                beats.scheduled = True
                continue
            beats.pending = None
            try:
                data = beats.convert(details)
            except Exception as err:
                self._on_error(beats, err)
                return
            if self._sender is not None:
                try:
                    self._sender.send_heartbeat(beats.token, data)
                except Exception:
                    # The parent's side notices a dead manager and fails the worker;
                    # here we only say so and keep the activity running.
                    logger.exception("Could not ship a heartbeat to the parent")
            wakeup.wait(beats.interval)
