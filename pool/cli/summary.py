"""The demo's report, printed once every result is in.

ids + per-workflow BurnResults ──▶ print_who_ran_what ──▶ activity indexes per child pid
BurnResults + pool snapshot    ──▶ print_summary      ──▶ totals (CPU efficiency,
                                                          throughput), a per-child table,
                                                          the pool's start/death counts
"""

from __future__ import annotations

import argparse
import collections
from collections.abc import Sequence
from typing import Any, TextIO

__all__ = ["print_summary", "print_who_ran_what"]


def print_who_ran_what(out: TextIO, ids: Sequence[str], per_workflow: Sequence[Any]) -> None:
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


def print_summary(
    out: TextIO,
    args: argparse.Namespace,
    wall: float,
    processes: int,
    per_workflow: Sequence[Any],
    snapshot: Any,
) -> None:
    """The totals, the table of children, then the pool's counters."""
    flat = [r for results in per_workflow for r in results]
    _print_totals(out, args, wall, processes, flat)
    cpu_by_pid: dict[int, float] = collections.defaultdict(float)
    for r in flat:
        cpu_by_pid[r.pid] += r.cpu_seconds
    _print_children(out, snapshot, cpu_by_pid)
    print(
        f"\n  pool: {snapshot.starts} child starts, {snapshot.deaths} deaths, "
        f"{snapshot.recycles} recycles, {snapshot.kills} kills",
        file=out,
        flush=True,
    )


def _print_totals(
    out: TextIO, args: argparse.Namespace, wall: float, processes: int, flat: Sequence[Any]
) -> None:
    cpu = sum(r.cpu_seconds for r in flat)
    span = max(r.finished_at for r in flat) - min(r.started_at for r in flat) if flat else 0.0

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


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB" if n else "-"


def _print_children(out: TextIO, snapshot: Any, cpu_by_pid: dict[int, float]) -> None:
    """One row per child, alive, dead or retired: tasks, CPU, peak RSS."""
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
