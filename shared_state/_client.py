"""A deadline-bounded client for objects hosted in our manager server.

It speaks the ``multiprocess.managers`` wire protocol directly (authenticate, then
``accept_connection``, then ``(ident, method, args, kwds)`` requests), because a stock
proxy (a) needs the authkey of the process that made it and (b) waits forever for a
server that stopped answering. Here every connect and every reply has a deadline, and
each call is exactly one round trip.

Connections are cached per (process, thread, address): a sender unpickled for every task
reuses its thread's connection, and a forked child never touches its parent's sockets.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import struct
import threading
from typing import Any

from multiprocess.connection import Connection, answer_challenge, deliver_challenge
from multiprocess.managers import convert_to_error

from ._errors import SharedStateUnreachableError

__all__ = ["CALL_TIMEOUT", "HubClient", "close_connections", "connect_and_dispatch"]

# The longest a caller waits to connect, authenticate, or get one reply. A live manager on
# this machine answers in well under a millisecond; seconds only pass when its process is
# stopped or wedged, and then the caller must get an error rather than hang (sdk-python #476).
CALL_TIMEOUT = 5.0

_PROTOCOL = pickle.HIGHEST_PROTOCOL


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000))


class _Channel:
    """One authenticated connection to the manager server.

    Deadlines are kernel socket timeouts (SO_RCVTIMEO / SO_SNDTIMEO): a read or write
    that waits longer fails with EAGAIN. Unlike a poll() before each read, that costs
    nothing per call (poll added ~40 us to a ~60 us round trip here).
    """

    __slots__ = ("conn", "pid", "timeout")

    def __init__(self, conn: Connection, timeout: float) -> None:
        self.conn = conn
        self.pid = os.getpid()
        self.timeout = timeout

    def set_timeout(self, timeout: float) -> None:
        if timeout == self.timeout:
            return
        sock = socket.socket(fileno=os.dup(self.conn.fileno()))
        try:
            _set_socket_timeouts(sock, timeout)
        finally:
            sock.close()
        self.timeout = timeout

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.close()


def _set_socket_timeouts(sock: socket.socket, timeout: float) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(timeout))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(timeout))


# (address, thread ident) -> channel. Plain dict operations are atomic under the GIL; the
# lock only guards whole-table walks.
_channels: dict[tuple[str, int], _Channel] = {}
_channels_lock = threading.Lock()
_channels_pid = os.getpid()


def _forget_inherited_channels() -> None:
    """In a forked child: drop (and close our copies of) the parent's connections, which
    the parent keeps using. Closing a child's copy of a socket leaves the parent's alone.
    Runs as an at-fork hook; the pid check in HubClient covers forks made outside Python."""
    global _channels_lock, _channels_pid
    _channels_lock = threading.Lock()  # another thread may have held it at fork time
    inherited = list(_channels.values())  # in the child only this thread is left
    _channels.clear()
    _channels_pid = os.getpid()
    for channel in inherited:
        channel.close()


os.register_at_fork(after_in_child=_forget_inherited_channels)


def close_connections(address: str) -> None:
    """Close every cached connection of this process to ``address`` (all threads)."""
    with _channels_lock:
        # list() copies in one step; other threads may add their channels meanwhile.
        dropped = [_channels.pop(key, None) for key in list(_channels) if key[0] == address]
    for channel in dropped:
        if channel is not None:
            channel.close()


def _open(address: str, authkey: bytes, timeout: float) -> _Channel:
    """Connect and authenticate (both ways); every wait bounded by ``timeout``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # A stopped server with a full backlog would make a blocking connect() wait forever.
        sock.settimeout(timeout)
        sock.connect(address)
        sock.setblocking(True)
        _set_socket_timeouts(sock, timeout)
        channel = _Channel(Connection(sock.detach()), timeout)
    finally:
        sock.close()
    try:
        answer_challenge(channel.conn, authkey)
        deliver_challenge(channel.conn, authkey)
    except BaseException:
        channel.close()
        raise
    return channel


def _request(channel: _Channel, ident: str | None, method: str, args: tuple[Any, ...]) -> Any:
    channel.conn.send_bytes(pickle.dumps((ident, method, args, {}), _PROTOCOL))
    kind, result = pickle.loads(channel.conn.recv_bytes())
    if kind != "#RETURN":
        raise convert_to_error(kind, result)
    return result


def _connect(address: str, authkey: bytes, timeout: float) -> _Channel:
    """A connection served by its own server thread, ready for object method calls."""
    channel = _open(address, authkey, timeout)
    try:
        name = f"pid-{os.getpid()}|{threading.current_thread().name}"
        _request(channel, None, "accept_connection", (name,))
    except BaseException:
        channel.close()
        raise
    return channel


def connect_and_dispatch(address: str, authkey: bytes, request: str, timeout: float) -> Any:
    """Send one server-level request (``shutdown``, ``dummy``...) on a fresh connection,
    with the same deadlines as everything else."""
    channel = _open(address, authkey, timeout)
    try:
        return _request(channel, None, request, ())
    finally:
        channel.close()


def _describe(error: BaseException, timeout: float) -> str:
    if isinstance(error, TimeoutError | BlockingIOError):
        return f"it did not answer within {timeout:g} s"
    if isinstance(error, FileNotFoundError | ConnectionRefusedError):
        return f"nothing is listening on its socket any more ({type(error).__name__})"
    if isinstance(error, EOFError | ConnectionResetError | BrokenPipeError):
        return f"it closed the connection ({type(error).__name__})"
    if type(error).__name__ == "AuthenticationError":
        return (
            "it refused our authentication key, so this sender or event belongs to a "
            "different manager that used the same address"
        )
    return f"{type(error).__name__}: {error}"


class HubClient:
    """Calls methods of one object (``ident``) in the manager server at ``address``."""

    __slots__ = ("_address", "_authkey", "_ident", "_timeout")

    def __init__(
        self, address: str, authkey: bytes, ident: str, timeout: float = CALL_TIMEOUT
    ) -> None:
        self._address = address
        self._authkey = authkey
        self._ident = ident
        self._timeout = timeout

    @property
    def address(self) -> str:
        return self._address

    def _channel(self) -> _Channel:
        if _channels_pid != os.getpid():
            _forget_inherited_channels()
        key = (self._address, threading.get_ident())
        channel = _channels.get(key)
        if channel is None:
            try:
                channel = _connect(self._address, self._authkey, self._timeout)
            except Exception as e:  # OSError, EOFError, AuthenticationError, garbage
                raise SharedStateUnreachableError(self._address, _describe(e, self._timeout)) from e
            _channels[key] = channel
        return channel

    def _drop(self, channel: _Channel) -> None:
        key = (self._address, threading.get_ident())
        if _channels.get(key) is channel:
            del _channels[key]
        channel.close()

    def call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        """One round trip: ``ident.method(*args)`` in the server, its result returned.

        Raises SharedStateUnreachableError when the server cannot be reached or does not
        answer within ``timeout`` (default: the client's), and the server-side exception
        when the method itself raised.
        """
        channel = self._channel()
        wait = self._timeout if timeout is None else timeout
        try:
            channel.set_timeout(wait)
            channel.conn.send_bytes(pickle.dumps((self._ident, method, args, {}), _PROTOCOL))
            kind, result = pickle.loads(channel.conn.recv_bytes())
        except (OSError, EOFError, pickle.UnpicklingError) as e:
            # The connection is in an unknown state (a late reply may still come): never
            # reuse it.
            self._drop(channel)
            raise SharedStateUnreachableError(self._address, _describe(e, wait)) from e
        except BaseException:
            # Interrupted between request and reply (a signal handler that raises, say, to
            # cancel an activity): the reply would be read by the next call. Drop it.
            self._drop(channel)
            raise
        if kind == "#RETURN":
            return result
        raise convert_to_error(kind, result)
