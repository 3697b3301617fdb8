"""Whole messages over the task pipe, framed exactly as ``Connection.send_bytes`` frames them.

``Connection.recv_bytes`` costs two system calls per message (the length, then the
body) and a few dozen lines of Python; on the task pipe, where every task crosses
twice, both ends use these instead: one ``write`` per message, and one ``read`` for
whatever has arrived (one message, or several at once).

The frame is the Connection's own: a 4-byte big-endian length, or -1 and an 8-byte
length from 2 GiB up. Either end may still use a Connection method on the same pipe.

Large messages are not copied on the way: a body given in parts (a small pickle and
the payload bytes beside it, ``runner.messages.dumps_frame``) goes out in one
``writev``, and a long body is read straight into the bytearray that the reader then
hands out (no ``bytes`` copy of it).
"""

from __future__ import annotations

import collections
import os
import struct

__all__ = ["FrameReader", "send_frame"]

_LENGTH = struct.Struct("!i")
_LONG_LENGTH = struct.Struct("!Q")
_LONG = 0x7FFFFFFF
# Up to this size the header and the body go out in one write (as Connection does).
_JOIN_BELOW = 16384
# What one read asks for when no longer message is half-way in.
_READ_SIZE = 65536


def send_frame(fd: int, *parts: bytes | memoryview) -> None:
    """Write one message, the concatenation of ``parts``, to the (blocking) ``fd``;
    the caller keeps writers apart."""
    size = sum(len(part) for part in parts)
    header = _LENGTH.pack(size) if size <= _LONG else _LENGTH.pack(-1) + _LONG_LENGTH.pack(size)
    if size < _JOIN_BELOW:
        frame = header + b"".join(parts)
        written = os.write(fd, frame)
        if written < len(frame):
            _write_all(fd, [memoryview(frame)[written:]])
    else:
        _write_all(fd, [memoryview(header), *(memoryview(part) for part in parts)])


def _write_all(fd: int, views: list[memoryview]) -> None:
    """``writev`` until every view is out (a blocking write may still stop short)."""
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if written:
            views[0] = views[0][written:]


class FrameReader:
    """Splits what arrives on a (blocking) ``fd`` into messages. One reader per fd."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        # Bytes read but not yet a whole message (less than one short frame).
        self._buffer = b""
        # A long message being read straight into place, and how much of it arrived.
        self._body: bytearray | None = None
        self._filled = 0
        self._ready: collections.deque[bytes | bytearray] = collections.deque()

    def feed(self) -> list[bytes | bytearray]:
        """One ``read``: the messages it completed (maybe none). ``EOFError`` at the end.

        After the fd polled readable this does not block.
        """
        body = self._body
        if body is not None:
            got = os.readv(self._fd, [memoryview(body)[self._filled :]])
            if not got:
                raise EOFError("the other end closed the pipe")
            self._filled += got
            if self._filled < len(body):
                return []
            self._body = None
            return [body]  # a new bytearray per message: no copy to hand it out
        chunk = os.read(self._fd, _READ_SIZE)
        if not chunk:
            raise EOFError("the other end closed the pipe")
        buffer = self._buffer + chunk if self._buffer else chunk
        messages: list[bytes | bytearray] = []
        start = 0
        size = len(buffer)
        while size - start >= 4:
            (length,) = _LENGTH.unpack_from(buffer, start)
            begin = start + 4
            if length == -1:
                if size - start < 12:
                    break
                (length,) = _LONG_LENGTH.unpack_from(buffer, begin)
                begin += 8
            end = begin + length
            if end > size:
                if length > _READ_SIZE:
                    # Too long to gather by concatenation: fill it in place.
                    self._body = bytearray(length)
                    self._body[: size - begin] = buffer[begin:]
                    self._filled = size - begin
                    start = size
                break
            messages.append(buffer[begin:end])
            start = end
        self._buffer = buffer[start:] if start < size else b""
        return messages

    def read(self) -> bytes | bytearray:
        """The next message, blocking until it is whole. ``EOFError`` at the end."""
        ready = self._ready
        while not ready:
            ready.extend(self.feed())
        return ready.popleft()
