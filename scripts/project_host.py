#!/usr/bin/env python
"""Where one host ends: a model from measured per-activity CPU figures to many cores.

    loadtest --workflow-process --json F (pool, 1 and 2 processes, per workload)
        ─▶ per activity: w its own CPU, c each child's overhead beyond w, p the parent's
           CPU, s the server's, f the workflow worker's
        ─▶ one parent drives at most 1/p activities/s; (w + c) / p child cores saturate it
        ─▶ g: each child's idle time per task (the round trip lookahead does not hide),
           read off the 1-process run: g = w / E1 - w - c
        ─▶ efficiency (activity CPU / (wall x processes)) at N processes, two cases:
             dedicated cores   E = w/(w+c+g) x min(1, (w+c+g) / (N p))
             C shared cores    wall >= max((w+c+p+s+f) / C, (w+c+g) / N, p) per activity
           and activities/s at N processes: min(N / (w+c+g), 1/p)
        ─▶ the shared case checked against what 2 processes measured here (g comes
           from the 1-process run, so that one agrees by construction)

Assumptions of the projection (the dedicated case): each child has a core of its own;
the parent's asyncio loop is one core and nothing else runs on it; the server and the
workflow workers run elsewhere (a Temporal cluster scales apart from the worker host) and
keep up; per-activity costs stay what they are at 1-2 processes (no lock or memory
bandwidth contention between children, which a real many-core host adds for some
workloads). So the figures are upper bounds.

Usage:
    .venv/bin/python scripts/loadtest.py --worker pool --workflow-process --processes 1 \\
        --workload noop --workflows 1 --activities-per-workflow 200 --json noop-1.json
    ... (the same with --processes 2, and per workload)
    .venv/bin/python scripts/project_host.py noop-1.json noop-2.json cpu-1.json ...
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any

PROJECTED = (8, 16, 64)


@dataclass(frozen=True)
class PerActivity:
    """CPU seconds per activity, as one loadtest run of the pool measured them."""

    workload: str
    processes: int
    w: float  # the activity's own CPU
    c: float  # each child's CPU beyond it (dispatch, conversion, pickling)
    p: float  # the parent's
    s: float  # the server's
    f: float  # the workflow worker's
    measured_efficiency: float


def parent_rate(p: float) -> float:
    """Activities per second one parent can drive (p: parent CPU seconds per activity)."""
    return 1.0 / p


def saturating_cores(w: float, c: float, p: float) -> float:
    """Child cores at which one parent is saturated: each child needs w + c per activity."""
    return (w + c) / p


def efficiency(processes: int, w: float, c: float, p: float, g: float = 0.0) -> float:
    """Expected efficiency at ``processes`` children, each on a core of its own; a child
    spends w + c + g per task (g idle)."""
    per_task = w + c + g
    return min(1.0, per_task / p / processes) * w / per_task if w > 0 else 0.0


def rate(processes: int, w: float, c: float, p: float, g: float = 0.0) -> float:
    """Activities/s at ``processes`` children: the children's pace or the parent's."""
    return min(processes / (w + c + g), 1.0 / p)


def idle_gap(one_process: PerActivity) -> float:
    """A child's idle time per task, from a 1-process run that the shared cores did not
    bound (its wall per task is then w + c + g)."""
    r = one_process
    if r.measured_efficiency <= 0:
        return 0.0
    return max(0.0, r.w / r.measured_efficiency - r.w - r.c)


def shared_efficiency(run: PerActivity, cores: int, g: float = 0.0) -> float:
    """Expected efficiency when the children, the parent, the server and the workflow
    worker share ``cores`` cores (this machine): the wall per activity is bounded by the
    total CPU over the cores, by each child's share of the tasks, and by the parent's
    one core."""
    total = run.w + run.c + run.p + run.s + run.f
    wall = max(total / cores, (run.w + run.c + g) / run.processes, run.p)
    return run.w / (wall * run.processes) if wall > 0 else 0.0


def from_result(result: dict[str, Any], workload: str, processes: int) -> PerActivity:
    """One loadtest ``--json`` result row as per-activity figures."""
    n = max(int(result["completed"]), 1)
    w = float(result["activity_cpu_s"]) / n
    return PerActivity(
        workload=workload,
        processes=processes,
        w=w,
        c=max(0.0, float(result["children_cpu_s"]) / n - w),
        p=float(result["parent_cpu_s"]) / n,
        s=float(result.get("server_cpu_s") or 0.0) / n,
        f=float(result.get("workflow_process_cpu_s") or 0.0) / n,
        measured_efficiency=float(result["cpu_efficiency"]),
    )


def load(path: str) -> list[PerActivity]:
    with open(path) as fh:
        data = json.load(fh)
    params = data["params"]
    workload = params["workload"]
    if workload == "cpu":
        workload = f"cpu {params['work_ms']:g} ms"
    elif workload in ("payload", "records"):
        workload = f"{workload} {params['payload_kb']} KiB"
    return [
        from_result(r, workload, int(params["processes"]))
        for r in data["results"]
        if r["worker"] == "pool"
    ]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def report(runs: list[PerActivity], cores: int) -> str:
    gaps = {r.workload: idle_gap(r) for r in runs if r.processes == 1}
    lines = [
        f"measured (CPU ms per activity) and the model on this machine's {cores} shared cores:",
        "workload | processes | w | c | g | p | s | f | parent max act/s | child cores "
        "saturating one parent | efficiency measured | model (shared cores)",
    ]
    for r in runs:
        g = gaps.get(r.workload, 0.0)
        lines.append(
            f"{r.workload} | {r.processes} | {_ms(r.w)} | {_ms(r.c)} | {_ms(g)} | {_ms(r.p)} "
            f"| {_ms(r.s)} | {_ms(r.f)} | {parent_rate(r.p):.0f} "
            f"| {saturating_cores(r.w, r.c + g, r.p):.1f} "
            f"| {r.measured_efficiency:.1%} | {shared_efficiency(r, cores, g):.1%}"
        )
    lines += [
        "",
        "projection, each child on a core of its own, the server and workflows elsewhere "
        "(efficiency, activities/s):",
        "workload | " + " | ".join(f"{n} processes" for n in PROJECTED),
    ]
    seen: set[str] = set()
    for r in sorted(runs, key=lambda r: -r.processes):  # the 2-process figures first
        if r.workload in seen:
            continue
        seen.add(r.workload)
        g = gaps.get(r.workload, 0.0)
        cells = [
            f"{efficiency(n, r.w, r.c, r.p, g):.0%}, {rate(n, r.w, r.c, r.p, g):.0f}/s"
            for n in PROJECTED
        ]
        lines.append(f"{r.workload} | " + " | ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", nargs="+", help="loadtest --json outputs (pool runs)")
    parser.add_argument("--cores", type=int, default=2, help="cores of the measuring machine")
    args = parser.parse_args(argv)
    runs = [run for path in args.json for run in load(path)]
    if not runs:
        print("no pool results in these files", file=sys.stderr)
        return 1
    print(report(runs, args.cores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
