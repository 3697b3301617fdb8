"""The drainer: the one thread in the owning process that empties the heartbeat hub.

Its loop:

    hub.drain(timeout) ──> [(token, details)...], [flush token...]
        for each heartbeat: registered fn(*details)   (an exception is logged, loop goes on)
        for each flush:     the heartbeater is unregistered, its waiter released
    a failure of the loop itself (manager gone, connection broken, a bug)
        ──> logged at ERROR and handed to every error listener; never a quiet death
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from ._client import CALL_TIMEOUT, HubClient
from ._errors import SharedStateClosedError, SharedStateError
from ._sender import decode_details

__all__ = ["DRAIN_TIMEOUT", "Drainer", "ErrorListener"]

logger = logging.getLogger("shared_state")

# How long one drain() waits in the server when nothing is pending. This only bounds how
# often an idle drainer wakes (once a second): posts and shutdown wake it at once.
DRAIN_TIMEOUT = 1.0

ErrorListener = Callable[[BaseException], None]


class Drainer:
    """Registrations, flush waiters, error listeners and the drain thread."""

    def __init__(self, client: HubClient, *, drain_timeout: float = DRAIN_TIMEOUT) -> None:
        self._client = client
        self._drain_timeout = drain_timeout
        self._lock = threading.Lock()
        self._heartbeaters: dict[bytes, Callable[..., None]] = {}
        self._flush_waiters: dict[bytes, list[Callable[[], None]]] = {}
        self._listeners: list[ErrorListener] = []
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._failure: BaseException | None = None
        self._in_hand = 0
        self._delivered = 0

    # -- read-only snapshot ---------------------------------------------------------------

    @property
    def failure(self) -> BaseException | None:
        return self._failure

    @property
    def heartbeaters(self) -> int:
        return len(self._heartbeaters)

    @property
    def in_hand(self) -> int:
        """Heartbeats taken from the hub and not yet handed to their function."""
        return self._in_hand

    @property
    def delivered(self) -> int:
        return self._delivered

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- registrations ---------------------------------------------------------------------

    def register(self, token: bytes, fn: Callable[..., None]) -> None:
        with self._lock:
            self._check_open()
            self._heartbeaters[token] = fn
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="shared-state-heartbeat-drainer", daemon=True
                )
                self._thread.start()

    def is_registered(self, token: bytes) -> bool:
        return token in self._heartbeaters

    def add_flush_waiter(self, token: bytes, release: Callable[[], None]) -> bool:
        """Arrange for ``release()`` once the flush of ``token`` comes out of the hub.
        False (and nothing arranged) when the channel is closed or failed."""
        with self._lock:
            if self._stopping or self._failure is not None:
                return False
            self._flush_waiters.setdefault(token, []).append(release)
            return True

    def request_flush(self, token: bytes) -> None:
        """One round trip (blocking: call it off the event loop)."""
        self._client.call("flush", token)

    def forget(self, token: bytes, release: Callable[[], None] | None = None) -> None:
        with self._lock:
            self._heartbeaters.pop(token, None)
            waiters = self._flush_waiters.get(token)
            if waiters is not None and release is not None:
                if release in waiters:
                    waiters.remove(release)
                if not waiters:
                    del self._flush_waiters[token]

    # -- error listeners -------------------------------------------------------------------

    def add_error_listener(self, listener: ErrorListener) -> None:
        with self._lock:
            failure = self._failure
            if failure is None:
                self._listeners.append(listener)
        if failure is not None:
            # Too late to be told: tell now, in the caller's thread.
            _call_listener(listener, failure)

    def remove_error_listener(self, listener: ErrorListener) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        """Mark stopping and release every flush waiter; the caller then wakes drain() (or
        shuts the server down) and joins."""
        with self._lock:
            self._stopping = True
            waiters = self._take_all_waiters()
        _release_all(waiters)

    def join(self, timeout: float) -> bool:
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _check_open(self) -> None:
        if self._failure is not None:
            raise SharedStateClosedError(
                f"the heartbeat channel has failed ({self._failure}); this shared state "
                "manager takes no new heartbeaters"
            ) from self._failure
        if self._stopping:
            raise SharedStateClosedError("the shared state manager has been shut down")

    def _take_all_waiters(self) -> list[Callable[[], None]]:
        waiters = [w for ws in self._flush_waiters.values() for w in ws]
        self._flush_waiters.clear()
        return waiters

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping:
                beats, flushes = self._client.call(
                    "drain",
                    self._drain_timeout,
                    # The server answers drain() after at most drain_timeout; past that
                    # plus the usual grace it is stuck, and we must say so.
                    timeout=self._drain_timeout + CALL_TIMEOUT,
                )
                self._deliver(beats)
                self._finish_flushes(flushes)
        except BaseException as e:
            if self._stopping:
                return
            self._fail(e)

    def _deliver(self, beats: list[tuple[bytes, Any]]) -> None:
        self._in_hand = len(beats)
        for token, data in beats:
            fn = self._heartbeaters.get(token)
            if fn is None:
                # Posted after its heartbeater was unregistered: nobody wants it.
                self._in_hand -= 1
                continue
            try:
                fn(*decode_details(data))
            except Exception:
                logger.exception(
                    "A heartbeat function raised (task token %s); the drainer goes on",
                    token.hex()[:16],
                )
            self._in_hand -= 1
            self._delivered += 1

    def _finish_flushes(self, flushes: list[bytes]) -> None:
        if not flushes:
            return
        released: list[Callable[[], None]] = []
        with self._lock:
            for token in flushes:
                self._heartbeaters.pop(token, None)
                released.extend(self._flush_waiters.pop(token, ()))
        _release_all(released)

    def _fail(self, error: BaseException) -> None:
        if not isinstance(error, SharedStateError):
            wrapped = SharedStateError(
                f"the heartbeat drainer of the shared state manager at "
                f"{self._client.address} failed: {type(error).__name__}: {error}"
            )
            wrapped.__cause__ = error
            error = wrapped
        with self._lock:
            self._failure = error
            listeners = list(self._listeners)
            waiters = self._take_all_waiters()
        logger.error(
            "The shared state heartbeat drainer stopped: %s (%d error listener(s) told)",
            error,
            len(listeners),
            exc_info=error,
        )
        for listener in listeners:
            _call_listener(listener, error)
        _release_all(waiters)


def _call_listener(listener: ErrorListener, error: BaseException) -> None:
    try:
        listener(error)
    except Exception:
        logger.exception("A shared state error listener raised")


def _release_all(waiters: list[Callable[[], None]]) -> None:
    for release in waiters:
        try:
            release()
        except Exception:
            logger.exception("Could not release an unregister_heartbeater() waiter")
