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
import collections
import contextlib
import signal
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from ._launcher import (
    EXIT_CONFIG,
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    Connection,
    LaunchError,
    connect,
    one_line,
)
from ._progress import ProgressBar

__all__ = ["run_demo"]

# Redraw period of the progress line on a terminal, and of the progress lines otherwise
# (a log file or a CI console should not get ten lines a second).
_TTY_REFRESH = 0.1
_PIPE_REFRESH = 1.0


def run_demo(args: argparse.Namespace) -> int:
    """Start a dev server unless ``--address``, run the sample, stop the server."""
    from ._devserver import DevServer, DevServerError, find_temporal_binary

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


async def _demo(args: argparse.Namespace, address: str, out: TextIO) -> int:
    from ._worker import Worker
    from .demo_activities import FanOutInput, FanOutWorkflow, burn_cpu

    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, main.cancel)

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
    total = args.workflows * args.activities_per_workflow
    print(
        f"Running {args.workflows} workflows x {args.activities_per_workflow} activities x "
        f"{args.work_ms} ms of CPU on {pool.size} child processes "
        f"({pool.config.start_method}), task queue {task_queue}",
        file=out,
        flush=True,
    )
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
            per_workflow = results.result()
        except Exception as err:
            progress.finish()
            raise LaunchError(
                EXIT_FATAL, f"a demo workflow failed: {type(err).__name__}: {one_line(err)}"
            ) from None
        wall = time.monotonic() - began
        progress.show(_completed(worker), pool.snapshot().busy, wall)
        pool.sample()
        snapshot = pool.snapshot()
    progress.finish()
    ids = [h.id for h in handles]
    _print_who_ran_what(out, ids, per_workflow)
    _print_summary(out, args, wall, pool.size, per_workflow, snapshot)
    return EXIT_OK


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


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB" if n else "-"


def _print_who_ran_what(out: TextIO, ids: Sequence[str], per_workflow: Sequence[Any]) -> None:
    print("\nWhich child process ran what (activity indexes per pid):", file=out)
    width = max(len(i) for i in ids)
    for workflow_id, results in zip(ids, per_workflow, strict=True):
        by_pid: dict[int, list[int]] = collections.defaultdict(list)
        for r in results:
            by_pid[r.pid].append(r.index)
        parts = [
            f"pid {pid} x{len(ix)} ({' '.join(f'#{i}' for i in sorted(ix))})"
            for pid, ix in sorted(by_pid.items())
        ]
        print(f"  {workflow_id:<{width}}  {'  '.join(parts)}", file=out)


def _print_summary(
    out: TextIO,
    args: argparse.Namespace,
    wall: float,
    processes: int,
    per_workflow: Sequence[Any],
    snapshot: Any,
) -> None:
    flat = [r for results in per_workflow for r in results]
    cpu = sum(r.cpu_seconds for r in flat)
    span = max(r.finished_at for r in flat) - min(r.started_at for r in flat) if flat else 0.0
    cpu_by_pid: dict[int, float] = collections.defaultdict(float)
    for r in flat:
        cpu_by_pid[r.pid] += r.cpu_seconds

    def efficiency(seconds: float) -> str:
        return f"{100 * cpu / (seconds * processes):.1f} %" if seconds > 0 else "-"

    rows = [
        (
            "activities",
            f"{len(flat)} ({args.workflows} workflows x {args.activities_per_workflow}, "
            f"{args.work_ms} ms of CPU each), all completed",
        ),
        ("wall time", f"{wall:.2f} s end to end (first workflow start -> last result)"),
        ("activity span", f"{span:.2f} s (first activity start -> last activity end)"),
        ("activity CPU", f"{cpu:.2f} s (sum of each activity's own process_time)"),
        (
            "CPU efficiency",
            f"{efficiency(span)} over the activity span, {efficiency(wall)} end to end "
            f"(activity CPU / (time x {processes} processes))",
        ),
        ("throughput", f"{len(flat) / wall:.1f} activities/s" if wall > 0 else "-"),
    ]
    print("\nSummary", file=out)
    for label, value in rows:
        print(f"  {label:<15} {value}", file=out)

    children = [(c, "alive" if c.state != "dead" else "dead") for c in snapshot.children]
    children += [(c, "retired") for c in snapshot.retired]
    header = ("child", "pid", "state", "tasks", "activity CPU", "process CPU", "peak RSS")
    table = [header]
    for child, state in children:
        table.append(
            (
                str(child.index),
                str(child.pid),
                state if state != "alive" else child.state,
                str(child.tasks_done),
                f"{cpu_by_pid.get(child.pid, 0.0):.2f} s",
                f"{child.cpu_seconds:.2f} s",
                _mib(child.peak_rss),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    print("", file=out)
    for row in table:
        cells = [
            cell.ljust(w) if i < 3 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  " + "  ".join(cells), file=out)
    print(
        f"\n  pool: {snapshot.starts} child starts, {snapshot.deaths} deaths, "
        f"{snapshot.recycles} recycles, {snapshot.kills} kills",
        file=out,
        flush=True,
    )
