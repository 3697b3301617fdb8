"""Misbehaving activities for ``bench_supervision.py`` (module level: they cross into
child processes)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from temporalio import activity


def _ready(path: str) -> None:
    Path(path).write_text("spinning")


@activity.defn
def swallows_cancellation(ready: str) -> None:
    """Catches every CancelledError and keeps burning CPU in Python."""
    _ready(ready)
    while True:
        try:
            while True:
                pass
        except BaseException:  # deliberately misbehaving
            continue


@activity.defn
def ignores_sigterm(ready: str) -> None:
    """Ignores SIGTERM and blocks the cancel signal (like a long C call): only SIGKILL
    stops it."""
    # SIGTERM ignored process-wide (any thread could take it); the cancel signal
    # blocked in this thread, as in a long C call.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    _ready(ready)
    while True:
        pass


def noop() -> None:
    return None


def spin_for(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass
