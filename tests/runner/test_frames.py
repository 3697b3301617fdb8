"""runner/frames.py speaks the Connection's framing, in both directions."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator

import pytest
from multiprocess import Pipe

from runner.frames import FrameReader, send_frame

pytestmark = pytest.mark.unit

# Around every size where the framing changes: joined header (< 16 KiB), one read
# (64 KiB), filled in place (longer), and a few reads' worth of pipe buffer.
SIZES = [0, 1, 3, 4, 5, 100, 16383, 16384, 65535, 65536, 65537, 300_000, 3_000_000]


@pytest.fixture
def pipe() -> Iterator[tuple]:
    a, b = Pipe(duplex=True)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def _in_thread(fn: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


def _messages() -> list[bytes]:
    return [os.urandom(size) for size in SIZES] + [b"tail"]


def test_send_frame_to_connection(pipe):
    a, b = pipe
    messages = _messages()
    writer = _in_thread(lambda: [send_frame(a.fileno(), m) for m in messages])
    assert [b.recv_bytes() for _ in messages] == messages
    writer.join(10)
    assert not writer.is_alive()


def test_connection_and_send_frame_to_reader(pipe):
    a, b = pipe
    messages = _messages()

    def write() -> None:
        for i, message in enumerate(messages):
            if i % 2:
                a.send_bytes(message)
            else:
                send_frame(a.fileno(), message)

    writer = _in_thread(write)
    reader = FrameReader(b.fileno())
    assert [reader.read() for _ in messages] == messages
    writer.join(10)
    assert not writer.is_alive()


def test_one_read_returns_every_whole_message_and_keeps_the_rest(pipe):
    a, b = pipe
    for message in (b"one", b"two", b"three"):
        send_frame(a.fileno(), message)
    reader = FrameReader(b.fileno())
    assert reader.feed() == [b"one", b"two", b"three"]
    # Half a frame: nothing yet, then the message once its end arrives.
    frame = len(b"partial").to_bytes(4, "big") + b"partial"
    os.write(a.fileno(), frame[:2])
    assert reader.feed() == []
    os.write(a.fileno(), frame[2:6])
    assert reader.feed() == []
    os.write(a.fileno(), frame[6:] + frame)
    assert reader.feed() == [b"partial", b"partial"]


def test_end_of_pipe(pipe):
    a, b = pipe
    send_frame(a.fileno(), b"last")
    a.close()
    reader = FrameReader(b.fileno())
    assert reader.read() == b"last"
    with pytest.raises(EOFError):
        reader.read()


@pytest.mark.parametrize("size", [0, 100, 16384, 65537, 3_000_000])
def test_a_message_in_parts_arrives_whole(pipe, size):
    a, b = pipe
    parts = [b"head", memoryview(os.urandom(size)), b"", b"tail"]
    writer = _in_thread(lambda: send_frame(a.fileno(), *parts))
    assert FrameReader(b.fileno()).read() == b"".join(parts)
    writer.join(10)
    assert not writer.is_alive()


def test_a_write_that_stops_short_goes_on_where_it_stopped(pipe, monkeypatch):
    a, b = pipe
    real_writev = os.writev
    calls = []

    def short_writev(fd: int, views: list) -> int:
        # At most 1000 bytes per call, the cut falling inside a part.
        calls.append(len(views))
        budget, capped = 1000, []
        for view in views:
            capped.append(view[:budget])
            budget -= len(capped[-1])
            if not budget:
                break
        return real_writev(fd, capped)

    monkeypatch.setattr("runner.frames.os.writev", short_writev)
    parts = [os.urandom(30_000), os.urandom(7), os.urandom(12_345)]
    writer = _in_thread(lambda: send_frame(a.fileno(), *parts))
    assert b.recv_bytes() == b"".join(parts)
    writer.join(10)
    assert len(calls) > 40  # it really did go out 1000 bytes at a time


def test_a_long_message_is_handed_out_without_a_copy(pipe):
    a, b = pipe
    message = os.urandom(300_000)
    writer = _in_thread(lambda: send_frame(a.fileno(), message))
    got = FrameReader(b.fileno()).read()
    writer.join(10)
    # The bytearray it was read into (a memoryview of it is what loads keeps).
    assert type(got) is bytearray and got == message
