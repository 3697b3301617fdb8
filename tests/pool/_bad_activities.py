"""Misbehaving activities for the supervision table (module level: they cross into
child processes)."""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import sys
import threading
import time
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy

_held: list[bytes] = []


@activity.defn
def exits_with_os_exit() -> None:
    os._exit(3)


@activity.defn
def exits_with_sys_exit() -> None:
    sys.exit(4)


@activity.defn
def kills_itself() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@activity.defn
def segfaults() -> None:
    faulthandler.disable()  # no dump on stderr
    faulthandler._sigsegv()


@activity.defn
def returns_unpicklable() -> Any:
    return threading.Lock()


class LockedError(Exception):
    def __init__(self) -> None:
        super().__init__("an error holding a lock")
        self.lock = threading.Lock()


@activity.defn
def raises_unpicklable() -> None:
    raise LockedError()


@activity.defn
def returns_too_much() -> str:
    return "x" * (3 * 1024 * 1024)  # over the dev server's 2 MiB blob limit


@activity.defn
def ignores_signals_forever(ready_path: str = "") -> None:
    """Ignores SIGTERM and blocks the cancel signal, then spins: only SIGKILL stops it."""
    # SIGTERM ignored process-wide (any thread could take it); the cancel signal
    # blocked in this thread, as in a long C call.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    if ready_path:
        with open(ready_path, "w") as f:
            f.write("blocking")
    while True:
        pass


@activity.defn
def ignores_cancellation(seconds: float) -> str:
    """Swallows every CancelledError and keeps burning CPU."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(0.01)
        except BaseException:  # deliberately misbehaving
            continue
    return "finished"


@activity.defn
def floods_output(megabytes: int) -> int:
    chunk = "y" * 1023 + "\n"
    for _ in range(megabytes * 1024):
        sys.stdout.write(chunk)
        sys.stderr.write(chunk)
    sys.stdout.flush()
    sys.stderr.flush()
    return megabytes


@activity.defn
def allocate_and_hold(megabytes: int, hold: float) -> int:
    _held.append(b"z" * (megabytes * 1024 * 1024))
    time.sleep(hold)
    return os.getpid()


@activity.defn
def pid_of_child() -> int:
    return os.getpid()


@activity.defn
def info_in_child() -> tuple[activity.Info, bool]:
    """The child's ``activity.info()``, and whether a second call returns the same one."""
    return activity.info(), activity.info() is activity.info()


@activity.defn
def burn(ms: int, n: int) -> list[int]:
    """Burns CPU for ``ms`` milliseconds; returns [n, n*n]."""
    deadline = time.process_time() + ms / 1000
    while time.process_time() < deadline:
        pass
    return [n, n * n]


@activity.defn
def timed_cancel_probe(ready_path: str) -> float:
    """Spins until cancelled; returns when CancelledError landed (CLOCK_MONOTONIC)."""
    try:
        with open(ready_path, "w") as f:
            f.write("spinning")
        while True:
            pass
    except BaseException:  # the cancel itself
        return time.monotonic()


@workflow.defn
class RunBounded:
    """One activity with a given start-to-close timeout and attempt count."""

    @workflow.run
    async def run(self, name: str, args: list, start_to_close: float, attempts: int) -> Any:
        return await workflow.execute_activity(
            name,
            args=args,
            start_to_close_timeout=timedelta(seconds=start_to_close),
            retry_policy=RetryPolicy(
                maximum_attempts=attempts,
                initial_interval=timedelta(milliseconds=50),
                backoff_coefficient=1.0,
            ),
        )


@workflow.defn
class BurnFanOut:
    """``count`` burn activities of ``ms`` each, retried quickly (for chaos tests)."""

    @workflow.run
    async def run(self, count: int, ms: int) -> list:
        return list(
            await asyncio.gather(
                *[
                    workflow.execute_activity(
                        "burn",
                        args=[ms, i],
                        start_to_close_timeout=timedelta(seconds=30),
                        retry_policy=RetryPolicy(
                            initial_interval=timedelta(milliseconds=50), backoff_coefficient=1.0
                        ),
                    )
                    for i in range(count)
                ]
            )
        )


@activity.defn
def echo(value: Any) -> Any:
    return value
