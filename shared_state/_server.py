"""The manager server: a ``multiprocess`` BaseManager hosting Events and the heartbeat hub.

Its proxies pickle with the address *and* the authkey, so they work in children of any
pool (a stock ``concurrent.futures.ProcessPoolExecutor`` child has a different process
authkey, and stock proxies only carry the key while a process is being spawned).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import threading
from typing import Any

import multiprocess
import multiprocess.connection
from multiprocess.connection import Client, ConnectionWrapper, Listener
from multiprocess.managers import (
    BaseManager,
    BaseProxy,
    EventProxy,
    RebuildProxy,
    Token,
    listener_client,
)

from ._hub import HeartbeatHub

__all__ = [
    "SERIALIZER",
    "EventFactory",
    "EventHandle",
    "OwnerHandle",
    "ServerManager",
    "serve_init",
]

# The manager's wire format: the stdlib C pickler, not multiprocess's pure-Python dill
# pickler (~3x cheaper per call on both ends). Requests and replies are plain tuples;
# heartbeat details cross as bytes the sender pickled itself.
SERIALIZER = "shared-state-pickle"


def _dumps(obj: object) -> bytes:
    return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)


class _StdPickleListener(Listener):  # type: ignore[misc]
    def accept(self) -> ConnectionWrapper:
        return ConnectionWrapper(Listener.accept(self), _dumps, pickle.loads)


def _std_pickle_client(*args: Any, **kwds: Any) -> ConnectionWrapper:
    return ConnectionWrapper(Client(*args, **kwds), _dumps, pickle.loads)


# Registered wherever this module is imported: in the owner, in the server process (it
# imports this module to unpickle the registry), and in any child that unpickles an
# EventHandle (it imports this module to find the class).
listener_client.setdefault(SERIALIZER, (_StdPickleListener, _std_pickle_client))


class EventHandle(EventProxy):  # type: ignore[misc]
    """A manager Event proxy that stays usable wherever it is unpickled."""

    def __reduce__(self) -> tuple[Any, ...]:
        token: Token = self._token
        kwds = {"authkey": bytes(self._authkey)}
        return (RebuildProxy, (type(self), token, self._serializer, kwds))


class OwnerHandle(BaseProxy):  # type: ignore[misc]
    """The owner's reference to an object in the server (the hub, the event factory): keeps
    it alive there and names it (``ident``). Calls go through ``HubClient``, which has
    deadlines."""

    _exposed_ = ("post", "flush", "drain", "close", "stats", "new_event", "objects")

    @property
    def ident(self) -> str:
        return str(self._token.id)

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("this handle stays in the owning process; pickle the sender instead")


class EventFactory:
    """Hosted in the server: makes an Event in one round trip on an existing connection
    (the stock way opens three connections, ~2.4 ms), and drops the owner's references to
    events it has let go, in the same round trip."""

    def new_event(self, release: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
        server = multiprocess.current_process()._manager_server
        for ident in release:
            with contextlib.suppress(Exception):  # already gone: nothing to drop
                server.decref(None, ident)
        ident, exposed = server.create(None, "Event")
        return ident, tuple(exposed)

    def objects(self) -> int:
        """How many shared objects the server holds (a leak shows here)."""
        server = multiprocess.current_process()._manager_server
        return len(server.id_to_obj) - 1  # minus the server's '0' placeholder


class ServerManager(BaseManager):  # type: ignore[misc]
    """Our manager type; only the types below are served."""


ServerManager.register("Event", threading.Event, EventHandle)
ServerManager.register("HeartbeatHub", HeartbeatHub, OwnerHandle)
ServerManager.register("EventFactory", EventFactory, OwnerHandle)


def serve_init(address: str) -> None:
    """Runs first in the server process (SIGINT is already ignored there by
    ``BaseManager._run_server``): leave with the parent, so a SIGKILLed owner leaves no
    orphan manager and no socket behind. A terminal's hangup, which reaches the owner's
    whole process group, is the owner's to handle: ignored here."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    parent = multiprocess.parent_process()
    sentinel = getattr(parent, "sentinel", None)
    if sentinel is None:
        return
    threading.Thread(
        target=_exit_with_parent, args=(sentinel, address), name="exit-with-parent", daemon=True
    ).start()


def _exit_with_parent(sentinel: int, address: str) -> None:
    multiprocess.connection.wait([sentinel])
    with contextlib.suppress(OSError):
        os.unlink(address)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(address))
    os._exit(0)


def _forget_inherited_proxy_connections() -> None:
    """A child forked by anything but ``multiprocess`` (say, a stdlib
    ProcessPoolExecutor with ``fork``) inherits the parent's per-thread proxy connections,
    and multiprocess's own after-fork hooks do not run there: a proxy used in the child
    would then talk on the parent's socket. Drop them; proxies reconnect on next use."""
    for tls, idset in list(BaseProxy._address_to_local.values()):
        tls.__dict__.clear()
        idset.clear()


os.register_at_fork(after_in_child=_forget_inherited_proxy_connections)
