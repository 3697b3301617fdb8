#!/usr/bin/env python
"""Dispatch micro-benchmark: the pool's own machinery, no Temporal server.

    parent (asyncio) ── ProcessPool.reserve() / run(RunTask) ──▶ child ──▶ TaskDone ──▶ parent
    parent (asyncio) ── loop.run_in_executor(ProcessPoolExecutor) ──▶ child ──▶ parent
    parent ── Pipe.send_bytes ──▶ bare echo child ──▶ parent        (the floor)

Measures, with the targets of issue 6 beside each figure:

* round trip of a no-op with a small payload through ``pool.ProcessPool`` (median
  over ``--calls`` sequential calls), side by side with a stdlib
  ``ProcessPoolExecutor`` of the same size and a bare pipe echo, run in
  alternating blocks so the shared machine's noise hits all of them alike, with
  the parent's and the children's CPU per call;
* per-call cost of ``activity.heartbeat()`` and ``activity.is_cancelled()`` in a
  tight loop inside a pool child (the children heartbeat through our
  ``SharedStateManager``, as in ``pool.Worker``);
* replacement time of a SIGKILLed child: from ``os.kill`` until the replacement
  reported ready (and the pool's own ``replacement_seconds``, which starts when
  the parent noticed the death);
* idle child RSS (and USS) against a bare ``python -c "import temporalio"``.

Usage:
    .venv/bin/python scripts/bench_dispatch.py [--processes 2] [--calls 2000]
        [--rounds 10] [--loop-calls 200000] [--kills 7] [--payload-bytes 64]
        [--timeout 600] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import _common
import psutil
import temporalio.converter
import workloads
from _common import environment, fmt, table, write_json
from temporalio.testing import ActivityEnvironment

from pool import PoolConfig, ProcessPool
from runner import ActivitySpec, RunTask
from shared_state import SharedStateManager

# Every wait in this script is bounded by one of these.
_START_TIMEOUT = 60.0  # a pool or executor starting its children
_REPLACEMENT_TIMEOUT = 10.0  # one killed child coming back
_HEARTBEAT_INTERVAL = 30.0  # the stock default throttle: children ship at most this often

TARGETS = {
    "dispatch_us": 150.0,
    "heartbeat_us": 5.0,
    "is_cancelled_us": 2.0,
    "replacement_ms": 100.0,
    "idle_rss_ratio": 1.3,
}

_BARE_RSS = (
    "import os, {modules}\n"
    "print(int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE'))"
)


def bare_rss(modules: str) -> int:
    """RSS of a fresh interpreter that imported ``modules`` (the /proc/self/statm figure)."""
    out = subprocess.run(
        [sys.executable, "-c", _BARE_RSS.format(modules=modules)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(out.stdout.strip())


def _info(activity_type: str) -> Any:
    return replace(
        ActivityEnvironment.default_info(),
        activity_type=activity_type,
        task_queue="bench",
        task_token=b"bench-token",
    )


class PoolBench:
    """A started ProcessPool plus the shared state its children heartbeat through."""

    def __init__(self, processes: int) -> None:
        self.pool = ProcessPool(
            processes,
            # The replacement benchmark kills children on purpose: time each replacement
            # without the respawn backoff that repeated deaths bring.
            config=PoolConfig(respawn_backoff=0),
        )
        self.manager: SharedStateManager | None = None
        self.fatal: list[BaseException] = []
        self._ids = 0
        self._infos: dict[str, Any] = {}

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.manager = await loop.run_in_executor(None, SharedStateManager.create)
        specs = {
            defn.name: ActivitySpec(fn=defn.fn, no_thread_cancel_exception=False)
            for defn in map(_definition, workloads.BENCH_ACTIVITIES)
        }
        await asyncio.wait_for(
            self.pool.start(
                activities=specs,
                converter=temporalio.converter.DataConverter.default,
                heartbeat_sender=self.manager.heartbeat_sender(),
                on_fatal=self.fatal.append,
            ),
            _START_TIMEOUT,
        )

    async def stop(self) -> None:
        if self.pool.started:
            await self.pool.stop()
        if self.manager is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.manager.shutdown)

    async def call(self, activity_type: str, *args: Any) -> Any:
        """One task through reserve() -> run() -> TaskDone; returns the activity's value."""
        self._ids += 1
        info = self._infos.get(activity_type)
        if info is None:
            info = self._infos[activity_type] = _info(activity_type)
        reservation = await self.pool.reserve()
        _pid, future = await self.pool.run(
            RunTask(
                task_id=self._ids,
                activity_type=activity_type,
                args=args,
                info=info,
                heartbeat_interval=_HEARTBEAT_INTERVAL,
            ),
            reservation=reservation,
        )
        done = await future  # bounded by --timeout around the whole run
        if done.outcome != "completed":
            raise RuntimeError(f"{activity_type} ended {done.outcome}")
        return done.value


def _definition(fn: Any) -> Any:
    import temporalio.activity

    return temporalio.activity._Definition.must_from_callable(fn)


@dataclass(eq=False)
class _Mechanism:
    """One way to run a no-op in another process, and what it cost."""

    name: str
    call: Callable[[], Awaitable[None]]
    pids: Callable[[], list[int]]
    times: list[float] = field(default_factory=list)
    parent_cpu: float = 0.0
    child_cpu: float = 0.0

    def summary(self) -> dict[str, Any]:
        us = [t * 1e6 for t in self.times]
        n = max(len(us), 1)
        return {
            "median_us": _median(us),
            "p90_us": _common.percentile(us, 90),
            "p99_us": _common.percentile(us, 99),
            "parent_cpu_us": self.parent_cpu / n * 1e6,
            "child_cpu_us": self.child_cpu / n * 1e6,
            "samples_us": us,
        }


def _children_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


async def _interleaved(mechs: list[_Mechanism], calls: int, warmup: int, rounds: int) -> None:
    """Time ``calls`` round trips of each mechanism, in ``rounds`` alternating blocks.

    The machine is shared: alternating spreads its noise over every mechanism
    instead of charging it to whichever one ran during a busy second.
    """
    for mech in mechs:
        for _ in range(warmup):
            await mech.call()
    per_round = max(1, calls // rounds)
    clock = time.perf_counter
    for _ in range(rounds):
        for mech in mechs:
            pids = mech.pids()
            child0 = _children_cpu(pids)
            parent0 = time.process_time()  # every thread: the executor pickles on its own
            for _ in range(per_round):
                start = clock()
                await mech.call()
                mech.times.append(clock() - start)
            mech.parent_cpu += time.process_time() - parent0
            mech.child_cpu += _children_cpu(pids) - child0


class _EchoChild:
    """A bare stdlib Pipe echo child: the floor any dispatch pays."""

    def __init__(self, start_method: str) -> None:
        ctx = multiprocessing.get_context(start_method)
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=workloads.pipe_echo, args=(child,), daemon=True)
        self.proc.start()
        child.close()

    def roundtrip(self, payload: bytes) -> None:
        self.conn.send_bytes(payload)
        if not self.conn.poll(_START_TIMEOUT):
            raise TimeoutError("the echo child did not answer")
        self.conn.recv_bytes()

    def close(self) -> None:
        self.conn.close()  # EOF: the echo child returns
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()  # our own child, through its Process handle
            self.proc.join(5)


def _executor_pids(executor: concurrent.futures.ProcessPoolExecutor) -> list[int]:
    return list(getattr(executor, "_processes", None) or {})  # private, read only here


async def bench_all(args: argparse.Namespace, payload: bytes) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    ctx = multiprocessing.get_context(args.start_method)
    bench = PoolBench(args.processes)
    executor = concurrent.futures.ProcessPoolExecutor(args.processes, mp_context=ctx)
    echo: _EchoChild | None = None
    try:
        print("bench_dispatch: starting the ProcessPool ...", file=sys.stderr)
        await bench.start()
        print("bench_dispatch: starting the stdlib executor and an echo child ...", file=sys.stderr)
        warm = [executor.submit(workloads.bench_noop, payload) for _ in range(args.processes * 4)]
        for f in warm:
            f.result(timeout=_START_TIMEOUT)
        echo = _EchoChild(args.start_method)

        async def pool_call() -> None:
            await bench.call("bench_noop", payload)

        async def executor_loop() -> None:
            await loop.run_in_executor(executor, workloads.bench_noop, payload)

        async def executor_sync() -> None:
            executor.submit(workloads.bench_noop, payload).result(timeout=_START_TIMEOUT)

        async def pipe_call() -> None:
            assert echo is not None
            echo.roundtrip(payload)

        def stdlib_pids() -> list[int]:
            return _executor_pids(executor)

        mechs = [
            _Mechanism(POOL, pool_call, lambda: bench.pool.pids),
            _Mechanism(RUN_IN_EXECUTOR, executor_loop, stdlib_pids),
            _Mechanism(SUBMIT_RESULT, executor_sync, stdlib_pids),
            _Mechanism(PIPE, pipe_call, lambda: [echo.proc.pid] if echo else []),
        ]
        print(
            f"bench_dispatch: {args.calls} round trips each, in {args.rounds} rounds ...",
            file=sys.stderr,
        )
        await _interleaved(mechs, args.calls, args.warmup, args.rounds)
        result: dict[str, Any] = {"round_trips": {m.name: m.summary() for m in mechs}}

        # Tight loops inside a child: the child times itself.
        print("bench_dispatch: heartbeat() / is_cancelled() loops ...", file=sys.stderr)
        await bench.call("bench_heartbeat_loop", 1000)
        hb = [await bench.call("bench_heartbeat_loop", args.loop_calls) for _ in range(3)]
        result["heartbeat_us"] = statistics.median(hb) * 1e6
        await bench.call("bench_is_cancelled_loop", 1000)
        ic = [await bench.call("bench_is_cancelled_loop", args.loop_calls) for _ in range(3)]
        result["is_cancelled_us"] = statistics.median(ic) * 1e6

        # Idle children: RSS as the pool reads it (psutil), and USS (pages only they own).
        bench.pool.sample()
        result["idle_rss"] = [c.rss for c in bench.pool.snapshot().children]
        uss = []
        for pid in bench.pool.pids:
            with contextlib.suppress(psutil.Error):
                uss.append(psutil.Process(pid).memory_full_info().uss)
        result["idle_uss"] = uss

        print(f"bench_dispatch: {args.kills} x SIGKILL and replacement ...", file=sys.stderr)
        result["replacement"] = await _kill_children(bench, args.kills)
        result["fatal"] = [repr(e) for e in bench.fatal]
        return result
    finally:
        if echo is not None:
            echo.close()
        await loop.run_in_executor(None, executor.shutdown)
        await bench.stop()


async def _kill_children(bench: PoolBench, kills: int) -> dict[str, list[float]]:
    """SIGKILL an idle child ``kills`` times; time until its replacement is ready."""
    pool = bench.pool
    external: list[float] = []
    internal: list[float] = []
    for _ in range(kills):
        # Wait (bounded) until every child is idle, so each kill hits a ready pool.
        deadline = time.monotonic() + _REPLACEMENT_TIMEOUT
        while pool.free() < pool.size and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        before = len(pool.snapshot().replacement_seconds)
        victim = pool.pids[0]
        start = time.perf_counter()
        os.kill(victim, signal.SIGKILL)  # a child of our own pool, by pid
        deadline = time.monotonic() + _REPLACEMENT_TIMEOUT
        while len(pool.snapshot().replacement_seconds) == before:
            if time.monotonic() > deadline:
                raise TimeoutError(f"child {victim} not replaced in {_REPLACEMENT_TIMEOUT:g} s")
            # The pool sees the death and the new child's ready message on this loop;
            # a short sleep yields to it (bounded by the deadline above).
            await asyncio.sleep(0.0005)
        external.append(time.perf_counter() - start)
        internal.append(pool.snapshot().replacement_seconds[-1])
    return {"kill_to_ready_s": external, "pool_replacement_s": internal}


# -- report ------------------------------------------------------------------------------

POOL = "pool.ProcessPool reserve/run/TaskDone"
RUN_IN_EXECUTOR = "stdlib ProcessPoolExecutor, run_in_executor"
SUBMIT_RESULT = "stdlib ProcessPoolExecutor, submit().result()"
PIPE = "bare Pipe echo (the floor)"


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _verdict(value: float | None, target: float) -> str:
    if value is None:
        return "-"
    return "PASS" if value <= target else "MISS"


def report(args: argparse.Namespace, raw: dict[str, Any], bare: dict[str, int]) -> dict[str, Any]:
    trips = raw["round_trips"]
    dispatch = trips[POOL]["median_us"]
    rep = raw["replacement"]
    kill_ms = _median([s * 1000 for s in rep["kill_to_ready_s"]])
    pool_ms = _median([s * 1000 for s in rep["pool_replacement_s"]])
    idle_rss = max(raw["idle_rss"]) if raw["idle_rss"] else None
    idle_uss = max(raw["idle_uss"]) if raw["idle_uss"] else None
    ratio = idle_rss / bare["import temporalio"] if idle_rss else None
    figures = {
        "dispatch_us": dispatch,
        "round_trips": {
            k: {n: v for n, v in s.items() if n != "samples_us"} for k, s in trips.items()
        },
        "dispatch_vs_stdlib": dispatch / trips[RUN_IN_EXECUTOR]["median_us"],
        "dispatch_vs_pipe": dispatch / trips[PIPE]["median_us"],
        "heartbeat_us": raw["heartbeat_us"],
        "is_cancelled_us": raw["is_cancelled_us"],
        "replacement_ms": kill_ms,
        "pool_replacement_ms": pool_ms,
        "idle_rss_bytes": idle_rss,
        "idle_uss_bytes": idle_uss,
        "bare_temporalio_rss_bytes": bare["import temporalio"],
        "bare_child_imports_rss_bytes": bare["child imports"],
        "idle_rss_ratio": ratio,
    }
    print()
    print(
        f"bench_dispatch: {args.processes} processes, {args.calls} round trips each "
        f"({args.rounds} alternating rounds), {args.payload_bytes}-byte payload"
    )
    print(
        table(
            ["round trip of a no-op", "median", "p90", "p99", "parent CPU", "child CPU"],
            [
                [
                    name,
                    fmt(s["median_us"], ".1f", " us"),
                    fmt(s["p90_us"], ".1f", " us"),
                    fmt(s["p99_us"], ".1f", " us"),
                    fmt(s["parent_cpu_us"], ".1f", " us"),
                    fmt(s["child_cpu_us"], ".1f", " us"),
                ]
                for name, s in trips.items()
            ],
        )
    )
    print()
    rows = [
        [
            "dispatch round trip (median)",
            fmt(dispatch, ".1f", " us"),
            f"<= {TARGETS['dispatch_us']:g} us",
            _verdict(dispatch, TARGETS["dispatch_us"]),
        ],
        [
            "  / stdlib run_in_executor, / bare pipe",
            f"{figures['dispatch_vs_stdlib']:.2f}x, {figures['dispatch_vs_pipe']:.1f}x",
            "",
            "",
        ],
        [
            f"activity.heartbeat() per call ({args.loop_calls} calls)",
            fmt(raw["heartbeat_us"], ".3f", " us"),
            f"<= {TARGETS['heartbeat_us']:g} us",
            _verdict(raw["heartbeat_us"], TARGETS["heartbeat_us"]),
        ],
        [
            f"activity.is_cancelled() per call ({args.loop_calls} calls)",
            fmt(raw["is_cancelled_us"], ".3f", " us"),
            f"<= {TARGETS['is_cancelled_us']:g} us",
            _verdict(raw["is_cancelled_us"], TARGETS["is_cancelled_us"]),
        ],
        [
            f"SIGKILL -> replacement ready (median of {args.kills})",
            fmt(kill_ms, ".1f", " ms"),
            f"<= {TARGETS['replacement_ms']:g} ms",
            _verdict(kill_ms, TARGETS["replacement_ms"]),
        ],
        ["  pool's replacement_seconds (death seen -> ready)", fmt(pool_ms, ".1f", " ms"), "", ""],
        [
            "idle child RSS (largest child)",
            _common.mib(idle_rss),
            f"<= {TARGETS['idle_rss_ratio']:g}x bare",
            _verdict(ratio, TARGETS["idle_rss_ratio"]),
        ],
        [
            "  / bare `python -c 'import temporalio'`",
            f"{fmt(ratio, '.2f', 'x')} of {_common.mib(bare['import temporalio'])}",
            "",
            "",
        ],
        ["  bare python with the child's imports", _common.mib(bare["child imports"]), "", ""],
        ["  idle child USS (pages it alone owns)", _common.mib(idle_uss), "", ""],
    ]
    print(table(["figure", "value", "target", ""], rows))
    if raw["fatal"]:
        print(f"the pool reported fatal errors: {raw['fatal']}")
    return figures


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    payload = os.urandom(args.payload_bytes)
    raw = await asyncio.wait_for(bench_all(args, payload), args.timeout)
    bare = {
        "import temporalio": bare_rss("temporalio"),
        "child imports": bare_rss("temporalio.activity, temporalio.converter, cloudpickle"),
    }
    figures = report(args, raw, bare)
    return {
        "environment": environment(),
        "params": vars(args),
        "targets": TARGETS,
        "figures": figures,
        "raw": {**raw, "bare_rss": bare},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--processes", type=int, default=2, help="children in each pool (2)")
    p.add_argument("--calls", type=int, default=2000, help="timed round trips per mechanism")
    p.add_argument("--rounds", type=int, default=10, help="alternating blocks the calls are cut in")
    p.add_argument("--warmup", type=int, default=200, help="untimed round trips first")
    p.add_argument(
        "--loop-calls",
        type=int,
        default=200_000,
        help="heartbeat() / is_cancelled() calls per tight loop",
    )
    p.add_argument("--kills", type=int, default=7, help="children SIGKILLed for replacement")
    p.add_argument("--payload-bytes", type=int, default=64, help="no-op payload size")
    p.add_argument(
        "--start-method",
        default="forkserver",
        choices=["forkserver", "spawn", "fork"],
        help="start method of the stdlib executor and the echo child",
    )
    p.add_argument("--timeout", type=float, default=600.0, help="hard bound of the run, seconds")
    p.add_argument("--json", metavar="FILE", help="write every figure and raw sample here")
    args = p.parse_args(argv)
    for name in ("processes", "calls", "rounds", "loop_calls", "kills", "payload_bytes"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or args.timeout <= 0:
        p.error("--warmup must not be negative and --timeout must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = asyncio.run(main_async(args))
    if args.json:
        write_json(args.json, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
