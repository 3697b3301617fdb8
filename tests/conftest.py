"""Shared fixtures: one real Temporal dev server per session, a client, a task queue per
test, and an autouse check that no test leaves a child process behind.

Every test is in one layer (``scripts/test -m unit`` runs the first alone, in seconds):

    unit         marked so (module ``pytestmark`` or on the test): pure decisions; it may
                 start no process (guarded: starting one fails the test) and use no server
    integration  uses the ``dev_server`` fixture (marked here at collection), or marked so
                 because it starts a Temporal server of its own
    process      the rest, marked here: it starts child processes, a manager or a
                 subprocess, and no Temporal server

A test marked ``unit`` that uses the dev server is a collection error.
"""

from __future__ import annotations

import contextlib
import multiprocessing.process
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import multiprocess.process
import psutil
import pytest
import temporalio.client

from pool.testing import DevServer

# A test's children get this long to exit after the test returns: enough for a pool to
# finish SIGTERM -> join, short enough that a real leak fails quickly.
_LEAK_GRACE_SECONDS = 5.0

# Long-lived helpers that (multi)process starts once and keeps until the interpreter exits.
# Only the helper itself is ignored, never its children (the fork server's children are
# the pool's workers).
_LONG_LIVED_HELPERS = (
    "from multiprocess.forkserver import main",
    "from multiprocessing.forkserver import main",
    "from multiprocess.resource_tracker import main",
    "from multiprocessing.resource_tracker import main",
)

LAYERS = ("unit", "process", "integration")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wrong = []
    for item in items:
        uses_server = "dev_server" in getattr(item, "fixturenames", ())
        marked = [m.name for m in item.iter_markers() if m.name in LAYERS]
        layer = marked[0] if marked else ("integration" if uses_server else "process")
        if uses_server and layer != "integration":
            wrong.append(f"{item.nodeid} is marked {layer} but uses the dev server")
        if not marked:
            item.add_marker(layer)
    if wrong:
        raise pytest.UsageError("tests in the wrong layer:\n  " + "\n  ".join(wrong))


def _no_process(*args: Any, **kwargs: Any) -> None:
    raise AssertionError(
        "a test marked unit started a process: make it pure, or drop the unit mark (it is "
        "then a process test)"
    )


@pytest.fixture(autouse=True)
def unit_tests_start_no_process(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("unit") is None:
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess.Popen, "__init__", _no_process)
        patch.setattr(multiprocess.process.BaseProcess, "start", _no_process)
        patch.setattr(multiprocessing.process.BaseProcess, "start", _no_process)
        patch.setattr(os, "fork", _no_process)
        yield


# Servers owned by session-scoped fixtures; their current pid is never a leak (a test may
# restart one, which changes the pid).
_session_servers: list[DevServer] = []


@pytest.fixture(scope="session")
def dev_server() -> Iterator[DevServer]:
    server = DevServer()
    server.start()
    _session_servers.append(server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def client(dev_server: DevServer) -> temporalio.client.Client:
    return await temporalio.client.Client.connect(dev_server.address)


@pytest.fixture
def task_queue(request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-")[:60]
    return f"tq-{name}-{uuid.uuid4().hex[:8]}"


def _children() -> list[psutil.Process]:
    return psutil.Process().children(recursive=True)


def _describe(proc: psutil.Process) -> str | None:
    """'pid=.. name=.. cmdline=..' of a live process; None if it is gone, a zombie, or a
    long-lived (multi)process helper."""
    try:
        with proc.oneshot():
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            cmdline = " ".join(proc.cmdline())
            name = proc.name()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        cmdline, name = "?", "?"
    if any(helper in cmdline for helper in _LONG_LIVED_HELPERS):
        return None
    return f"pid={proc.pid} name={name} cmdline={cmdline!r}"


def _leaked(before: set[int]) -> dict[psutil.Process, str]:
    ignored = before | {s.pid for s in _session_servers if s.pid is not None}
    found = {}
    for proc in _children():
        if proc.pid not in ignored and (described := _describe(proc)) is not None:
            found[proc] = described
    return found


@pytest.fixture(autouse=True)
def no_leaked_processes() -> Iterator[None]:
    before = {p.pid for p in _children()}
    yield
    deadline = time.monotonic() + _LEAK_GRACE_SECONDS
    leaked = _leaked(before)
    while leaked and (remaining := deadline - time.monotonic()) > 0:
        # Block on the processes themselves (psutil reaps our direct children) rather
        # than sleeping blind; re-scan often, as new grandchildren may appear.
        psutil.wait_procs(list(leaked), timeout=min(0.1, remaining))
        leaked = _leaked(before)
    if not leaked:
        return
    # Kill what leaked (by pid, all of them descendants of this test) so the leak cannot
    # slow down or confuse later tests, then fail this one.
    for proc in leaked:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(list(leaked), timeout=_LEAK_GRACE_SECONDS)
    pytest.fail(
        f"{len(leaked)} child process(es) still alive {_LEAK_GRACE_SECONDS:.0f}s after the "
        "test ended (now killed):\n  " + "\n  ".join(leaked.values()),
        pytrace=False,
    )
