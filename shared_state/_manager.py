"""``SharedStateManager``: events and a heartbeat channel backed by a manager server.

    owning process                                  manager server process (multiprocess)
    ───────────────                                 ─────────────────────────────────────
    new_event() ─────────── create ───────────────▶ threading.Event  ◀── EventHandle in any
                                                                          process (pickles
                                                                          address + authkey)
    register_heartbeater(token, fn)                 HeartbeatHub
        └─ starts the drainer thread (once)           newest details per token
    drainer: drain(1 s) ◀────────────────────────── drain()  ◀──────── post(token, details)
        └─ fn(*details) for each token                                   HeartbeatSender.
    unregister_heartbeater(token)                                        send_heartbeat()
        └─ flush(token) ───────────────────────────▶ marker after      in any child process
           waits (off the loop) until the drainer     earlier posts
           has delivered everything before it

The server listens only on an AF_UNIX socket inside a fresh 0700 directory, with a random
32-byte authkey: children on this machine that were handed a sender or an event can reach
it; nothing on the network can.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any, cast

import multiprocess
import multiprocess.util
import temporalio.worker
from multiprocess.managers import Token

from ._client import HubClient, close_connections, connect_and_dispatch
from ._drainer import Drainer, ErrorListener
from ._errors import SharedStateClosedError, SharedStateError
from ._sender import HeartbeatSender
from ._server import SERIALIZER, EventHandle, OwnerHandle, ServerManager, serve_init

__all__ = ["SharedStateManager"]

logger = logging.getLogger("shared_state")

# Polite shutdown: how long the server gets to answer "shutdown" and then to exit before
# it is terminated (it normally exits within milliseconds).
_SHUTDOWN_ANSWER_TIMEOUT = 2.0
_SHUTDOWN_EXIT_TIMEOUT = 2.0
# How long shutdown() waits for the drainer thread. It may be inside a heartbeat function
# (the stock worker's waits up to 10 s for its event loop, which may be the very thread
# calling shutdown()); it is a daemon thread and exits on its own once it returns.
_DRAINER_JOIN_TIMEOUT = 2.0
# AF_UNIX socket paths are limited to 107 bytes on Linux (103 on macOS).
_MAX_SOCKET_PATH = 100


def _socket_directory() -> str:
    directory = tempfile.mkdtemp(prefix="shared-state-")
    if len(os.path.join(directory, "sock").encode()) > _MAX_SOCKET_PATH and os.path.isdir("/tmp"):
        os.rmdir(directory)
        directory = tempfile.mkdtemp(prefix="shared-state-", dir="/tmp")
    os.chmod(directory, 0o700)  # mkdtemp already does; say it where it matters
    return directory


class _Runtime:
    """Everything a manager owns. It holds no reference to the facade, so a forgotten
    manager can be garbage-collected, and its finalizer shuts this down."""

    def __init__(self, mp_context: Any) -> None:
        self.directory = _socket_directory()
        self.address = os.path.join(self.directory, "sock")
        self.authkey = os.urandom(32)
        self.server = ServerManager(
            address=self.address, authkey=self.authkey, serializer=SERIALIZER, ctx=mp_context
        )
        self.closed = False
        self.lock = threading.Lock()
        try:
            self.server.start(serve_init, (self.address,))
            self.pid: int = self.server._process.pid
            self.hub: OwnerHandle | None = self.server.HeartbeatHub()
            self.factory: OwnerHandle | None = self.server.EventFactory()
        except BaseException as e:
            try:
                self._stop_server()
            finally:
                shutil.rmtree(self.directory, ignore_errors=True)
            if isinstance(e, Exception):
                raise SharedStateError(
                    f"could not start the shared state manager server process: "
                    f"{type(e).__name__}: {e}"
                ) from e
            raise
        self.hub_ident = self.hub.ident
        self.hub_client = HubClient(self.address, self.authkey, self.hub_ident)
        self.events = HubClient(self.address, self.authkey, self.factory.ident)
        # Server-side idents of events whose owner proxy was garbage-collected; the next
        # new_event() drops the server's references to them.
        self.released_events: list[str] = []
        self.drainer = Drainer(self.hub_client)
        self.sender = HeartbeatSender(self.address, self.authkey, self.hub_ident)

    def new_event(self) -> EventHandle:
        release: list[str] = []
        with contextlib.suppress(IndexError):
            while True:
                release.append(self.released_events.pop())
        ident, exposed = self.events.call("new_event", tuple(release))
        # The server counted one reference for us when it made the event; this proxy owns
        # it (so no incref round trip), and gives it back through released_events.
        event = EventHandle(
            Token("Event", self.address, ident),
            SERIALIZER,
            authkey=self.authkey,
            exposed=exposed,
            incref=False,
        )
        weakref.finalize(event, self.released_events.append, ident).atexit = False
        return event

    def server_alive(self) -> bool:
        process = getattr(self.server, "_process", None)
        return process is not None and process.is_alive()

    def shutdown(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        self.drainer.stop()
        if self.drainer.running:
            with contextlib.suppress(SharedStateError):
                # Wake the drainer's pending drain() now rather than in a second.
                self.hub_client.call("close", timeout=_SHUTDOWN_ANSWER_TIMEOUT)
            if not self.drainer.join(_DRAINER_JOIN_TIMEOUT):
                logger.warning(
                    "The heartbeat drainer is still inside a heartbeat function; "
                    "shutting the manager down anyway"
                )
        self.hub = self.factory = None
        self._stop_server()
        close_connections(self.address)
        shutil.rmtree(self.directory, ignore_errors=True)

    def _stop_server(self) -> None:
        process = getattr(self.server, "_process", None)
        if process is not None and process.is_alive():
            # Our own deadline-bounded "shutdown" request: the stock one blocks forever on
            # a stopped server.
            with contextlib.suppress(Exception):
                connect_and_dispatch(
                    self.address, self.authkey, "shutdown", timeout=_SHUTDOWN_ANSWER_TIMEOUT
                )
            process.join(_SHUTDOWN_EXIT_TIMEOUT)
            if process.is_alive():
                process.terminate()
                process.join(_SHUTDOWN_EXIT_TIMEOUT)
            if process.is_alive():
                process.kill()
                process.join()
        # Bookkeeping only now (the process is gone): marks the state SHUTDOWN so proxies
        # skip their decref, and forgets the address's proxy connections. It exists only
        # once start() has succeeded.
        finalize_server = getattr(self.server, "shutdown", None)
        if finalize_server is not None:
            finalize_server()


class SharedStateManager(temporalio.worker.SharedStateManager):
    """A ``temporalio.worker.SharedStateManager`` whose events and heartbeat channel live
    in a ``multiprocess`` manager server process it starts and owns.

    Works with our worker and with the stock ``temporalio.worker.Worker`` and a
    ``concurrent.futures.ProcessPoolExecutor``. Heartbeats go through a hub that keeps the
    newest details per task token, so the channel never fills and senders never wait for
    room; a failure of the drainer thread is logged and handed to error listeners.

    Create with ``SharedStateManager.create()``; end with ``shutdown()`` (or ``with``).
    """

    def __init__(self, *, mp_context: Any = None) -> None:
        super().__init__()
        self._rt = _Runtime(mp_context or multiprocess.get_context("spawn"))
        # Runs shutdown when the manager is garbage-collected, and at interpreter exit
        # before multiprocess stops the manager process (exitpriority 0), so the drainer
        # never sees its server vanish and reports a failure that is not one. It does
        # nothing in a forked child.
        self._finalizer = multiprocess.util.Finalize(self, self._rt.shutdown, exitpriority=20)

    @classmethod
    def create(cls, *, mp_context: Any = None) -> SharedStateManager:
        """Start a manager server process and return the manager that owns it.

        ``mp_context``: a ``multiprocess`` context for the server process (default:
        ``multiprocess.get_context("spawn")``; never plain fork of a process that holds
        gRPC state).
        """
        return cls(mp_context=mp_context)

    # -- read-only state -------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The server's AF_UNIX socket path."""
        return self._rt.address

    @property
    def pid(self) -> int:
        """The manager server process id."""
        return self._rt.pid

    @property
    def error(self) -> BaseException | None:
        """Why the heartbeat channel failed, or None."""
        return self._rt.drainer.failure

    @property
    def closed(self) -> bool:
        return self._rt.closed

    def heartbeat_sender(self, *, timeout: float | None = None) -> HeartbeatSender:
        """The picklable sender register_heartbeater returns; with ``timeout``, one that
        gives up after that many seconds instead (default 5 s)."""
        if timeout is None:
            return self._rt.sender
        return HeartbeatSender(self.address, self._rt.authkey, self._rt.hub_ident, timeout)

    def stats(self) -> dict[str, int]:
        """A snapshot for metrics and tests (two round trips to the server): heartbeaters
        registered, heartbeats delivered, heartbeats posted to and pending in the hub,
        flushes pending, and shared objects held by the server."""
        self._check_open()
        rt = self._rt
        stats = {"heartbeaters": rt.drainer.heartbeaters, "delivered": rt.drainer.delivered}
        stats.update(rt.hub_client.call("stats"))
        stats["server_objects"] = rt.events.call("objects")
        return stats

    # -- temporalio.worker.SharedStateManager ----------------------------------------------

    def new_event(self) -> threading.Event:
        """A manager Event proxy, usable in any process it is pickled to (the pickle
        carries the address and authkey). One round trip to make.

        Raises SharedStateUnreachableError when the server is gone."""
        self._check_open()
        return cast(threading.Event, self._rt.new_event())

    async def register_heartbeater(
        self, task_token: bytes, heartbeat: Callable[..., None]
    ) -> HeartbeatSender:
        """Deliver heartbeats posted for ``task_token`` to ``heartbeat(*details)``, called
        from the drainer thread. Starts the drainer on first use."""
        self._check_open()
        self._rt.drainer.register(task_token, heartbeat)
        return self._rt.sender

    async def unregister_heartbeater(self, task_token: bytes) -> None:
        """Deliver whatever was posted for ``task_token`` before this call, then forget it.

        Waits without blocking the event loop. When the channel is closed or has failed
        there is nothing left to deliver (the failure went to the error listeners), so
        this just forgets the token.
        """
        drainer = self._rt.drainer
        if not drainer.is_registered(task_token):
            return
        loop = asyncio.get_running_loop()
        flushed: asyncio.Future[None] = loop.create_future()

        def release() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(_resolve, flushed)

        try:
            if not drainer.add_flush_waiter(task_token, release):
                return
            try:
                await loop.run_in_executor(None, drainer.request_flush, task_token)
            except SharedStateError as e:
                logger.debug("Could not flush heartbeats of an unregistered task: %s", e)
                return
            await flushed
        finally:
            drainer.forget(task_token, release)

    def forget_heartbeater(self, task_token: bytes) -> None:
        """Forget ``task_token`` without a flush: for a caller that knows nothing was
        posted for it (the task never heartbeated). Saves the flush round trip."""
        self._rt.drainer.forget(task_token)

    # -- error listeners -------------------------------------------------------------------

    def add_error_listener(self, listener: ErrorListener) -> None:
        """Call ``listener(error)`` from the drainer thread if the heartbeat channel fails
        (manager gone, connection broken). Called at once if it already has."""
        self._rt.drainer.add_error_listener(listener)

    def remove_error_listener(self, listener: ErrorListener) -> None:
        self._rt.drainer.remove_error_listener(listener)

    # -- lifecycle -------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop the drainer and the server process; remove the socket directory.
        Idempotent; does nothing in a forked child."""
        self._finalizer()

    def __enter__(self) -> SharedStateManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    def _check_open(self) -> None:
        if self._rt.closed:
            raise SharedStateClosedError(
                f"the shared state manager at {self.address} has been shut down"
            )

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError(
            "a SharedStateManager owns its server process and cannot be pickled; send "
            "heartbeat_sender() or an event from new_event() to other processes instead"
        )

    def __repr__(self) -> str:
        rt = self._rt
        drainer = rt.drainer
        if rt.closed:
            state = "shut down"
        elif drainer.failure is not None:
            state = "failed"
        elif not rt.server_alive():
            state = "server gone"
        else:
            state = "alive"
        return (
            f"<SharedStateManager [address={rt.address}, {state} | "
            f"heartbeaters: {drainer.heartbeaters}, pending: {drainer.in_hand}, "
            f"delivered: {drainer.delivered}]>"
        )


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
