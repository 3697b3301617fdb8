"""``python -m pool demo``: the bundled CPU-heavy sample, end to end, with a summary.

    DevServer (unless --address) ──▶ Client ──▶ pool.Worker(burn_cpu, FanOutWorkflow)
      ──▶ start --workflows FanOutWorkflow runs, each fanning out burn_cpu activities
      ──▶ progress (dispatcher outcome counts, pool snapshot) until every result is in
      ──▶ pool.sample() + snapshot() ──▶ who ran what, summary table ──▶ stop the server

CPU efficiency is the activities' own CPU time (each returns its ``time.process_time()``
delta) over the CPU the pool could have given them: wall time x processes. It is shown
over the activity span (first activity start to last activity end) and end to end (first
workflow start to last result, so including child start-up and workflow scheduling).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from .checks import check_demo_args
from .connection import Connection, connect
from .errors import EXIT_CONFIG, EXIT_FATAL, EXIT_INTERRUPTED, EXIT_OK, LaunchError, one_line
from .progress import ProgressBar
from .summary import print_summary, print_who_ran_what

__all__ = ["demo_command", "run_demo"]

# Redraw period of the progress line on a terminal, and of the progress lines otherwise
# (a log file or a CI console should not get ten lines a second).
_TTY_REFRESH = 0.1
_PIPE_REFRESH = 1.0


def demo_command(args: argparse.Namespace) -> int:
    """``python -m pool demo``: check the flags, then run the sample."""
    check_demo_args(args)
    return run_demo(args)


def run_demo(args: argparse.Namespace) -> int:
    """Start a dev server unless ``--address``, run the sample, stop the server."""
    from ..testing import DevServer, DevServerError, find_temporal_binary

    out = sys.stdout
    server = None
    address = args.address
    if address is None:
        try:
            find_temporal_binary()
        except DevServerError as err:
            raise LaunchError(EXIT_CONFIG, one_line(err)) from None
        server = DevServer(namespaces=(args.namespace,))
        print("Starting the embedded Temporal dev server...", file=out, flush=True)
        try:
            server.start()
        except DevServerError as err:
            raise LaunchError(EXIT_FATAL, one_line(err, 2000)) from None
        address = server.address
        print(
            f"Dev server ready at {address} in {server.startup_seconds or 0:.1f} s",
            file=out,
            flush=True,
        )
    try:
        return asyncio.run(_demo(args, address, out))
    except asyncio.CancelledError:
        print("\ndemo interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    finally:
        if server is not None:
            with _signals_ignored():
                server.stop()


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """While the dev server stops (at most ~10 s), a second Ctrl-C must not orphan it."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _cancel_on_signals() -> None:
    """SIGINT / SIGTERM cancel the running task: the demo stops waiting and reports."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, main.cancel)


async def _demo(args: argparse.Namespace, address: str, out: TextIO) -> int:
    """Connect, start the worker and the workflows, wait for every result, report."""
    from .. import Worker
    from .demo_activities import FanOutInput, FanOutWorkflow, burn_cpu

    _cancel_on_signals()
    client = await connect(Connection(address=address, namespace=args.namespace))
    task_queue = f"pool-demo-{uuid.uuid4().hex[:8]}"
    worker = Worker(
        client,
        task_queue=task_queue,
        activities=[burn_cpu],
        workflows=[FanOutWorkflow],
        processes=args.processes,
    )
    pool = worker.process_pool
    assert pool is not None
    print(
        f"Running {args.workflows} workflows x {args.activities_per_workflow} activities x "
        f"{args.work_ms} ms of CPU on {pool.size} child processes "
        f"({pool.config.start_method}), task queue {task_queue}",
        file=out,
        flush=True,
    )
    total = args.workflows * args.activities_per_workflow
    progress = _Progress(total=total, processes=pool.size, out=out)
    async with worker:
        began = time.monotonic()
        handles = [
            await client.start_workflow(
                FanOutWorkflow.run,
                FanOutInput(activities=args.activities_per_workflow, work_ms=args.work_ms),
                id=f"{task_queue}-{i + 1}",
                task_queue=task_queue,
            )
            for i in range(args.workflows)
        ]
        per_workflow = await _results(worker, handles, progress, began)
        wall = time.monotonic() - began
        progress.show(_completed(worker), pool.snapshot().busy, wall)
        pool.sample()
        snapshot = pool.snapshot()
    progress.finish()
    print_who_ran_what(out, [h.id for h in handles], per_workflow)
    print_summary(out, args, wall, pool.size, per_workflow, snapshot)
    return EXIT_OK


async def _results(
    worker: Any, handles: Sequence[Any], progress: _Progress, began: float
) -> list[Any]:
    """Every workflow's result, showing progress meanwhile; a failed workflow is EXIT_FATAL."""
    pool = worker.process_pool
    results = asyncio.ensure_future(asyncio.gather(*(h.result() for h in handles)))
    try:
        while True:
            await asyncio.wait({results}, timeout=progress.refresh)
            if results.done():
                break
            progress.show(_completed(worker), pool.snapshot().busy, time.monotonic() - began)
    except asyncio.CancelledError:  # SIGINT / SIGTERM: stop waiting, shut down, report
        progress.finish()
        results.cancel()
        with contextlib.suppress(BaseException):
            await results
        raise
    try:
        return list(results.result())
    except Exception as err:
        progress.finish()
        raise LaunchError(
            EXIT_FATAL, f"a demo workflow failed: {type(err).__name__}: {one_line(err)}"
        ) from None


def _completed(worker: Any) -> int:
    completed: int = worker.snapshot().completed
    return completed


class _Progress:
    """The demo's progress: activities done, children busy, seconds."""

    def __init__(self, *, total: int, processes: int, out: TextIO) -> None:
        self.processes = processes
        self._bar = ProgressBar(total=total, label="activities", out=out)
        self.refresh = _TTY_REFRESH if self._bar.tty else _PIPE_REFRESH

    def show(self, done: int, busy: int, elapsed: float) -> None:
        self._bar.update(done, f"| {busy}/{self.processes} children busy | {elapsed:.1f} s")

    def finish(self) -> None:
        self._bar.finish()
