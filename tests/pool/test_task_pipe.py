"""The task pipe's socket buffers are widened so a large task or result goes out in
one write (pool.supervisor.children.widen_buffer)."""

from __future__ import annotations

import os
import socket

import pytest

from pool.supervisor.children import TASK_PIPE_BUFFER, widen_buffer

pytestmark = pytest.mark.unit

WMEM_MAX = "/proc/sys/net/core/wmem_max"


@pytest.mark.skipif(not os.path.exists(WMEM_MAX), reason="Linux's socket buffer limit")
def test_a_task_pipe_holds_as_much_as_the_kernel_allows():
    with open(WMEM_MAX) as f:
        allowed = min(TASK_PIPE_BUFFER, int(f.read()))
    a, b = socket.socketpair()
    with a, b:
        before = a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        widen_buffer(a.fileno())
        after = a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        assert after >= max(before, allowed)  # Linux reports twice what was set
        # The socket object is still ours: widen_buffer only borrowed the fd.
        a.sendall(b"still open")
        assert b.recv(64) == b"still open"


def test_a_buffer_already_larger_is_not_lowered():
    a, b = socket.socketpair()
    with a, b:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, TASK_PIPE_BUFFER * 2)
        before = a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        widen_buffer(a.fileno())
        assert a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == before


def test_a_plain_pipe_is_left_alone_and_open():
    read_end, write_end = os.pipe()
    try:
        widen_buffer(write_end)
        os.write(write_end, b"x")
        assert os.read(read_end, 1) == b"x"
    finally:
        os.close(read_end)
        os.close(write_end)
