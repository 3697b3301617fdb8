"""Native thread pools in children: NumPy matrix products through the pool with the
per-child limit (``PoolConfig.native_threads="auto"``), without it, and through the
stock ``ProcessPoolExecutor`` worker, side by side in one run on one dev server.

    calibrate: the matrix size whose product takes about --target-ms on one thread
               (its CPU: the median of five products)
    for each worker: --workflows x --activities products at once on --processes children
        wall    first workflow start to last result
        cpu     CPU of every thread of the children during the products
        CPU efficiency = products x one-thread time / cpu (1.0: no CPU lost to
                         oversubscription; below: threads fighting for the cores)

    .venv/bin/python scripts/bench_native_threads.py [--workflows 2] [--activities 4]
        [--target-ms 200] [--json F]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import statistics
import sys
import time
import uuid
from typing import Any

import _common  # noqa: F401  (sys.path and PYTHONPATH for the project and this folder)
import temporalio.client
import temporalio.worker
from _common import environment, fmt, table, write_json
from workloads import LoadInput, LoadWorkflow, lt_matmul

import pool
from pool.testing import DevServer


def calibrate(target_s: float) -> tuple[int, float]:
    """(size, seconds): a product of about ``target_s`` on one BLAS thread."""
    import numpy
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        size = 400
        while True:
            a = numpy.ones((size, size))
            start = time.perf_counter()
            a @ a
            took = time.perf_counter() - start
            if took >= target_s / 8 or size >= 8000:
                size = int(size * (target_s / took) ** (1 / 3))
                break
            size *= 2
        # The median CPU of five products: one reading moves by 10-20 % on a shared
        # machine, which would move every efficiency below by as much.
        a = numpy.ones((size, size))
        times = []
        for _ in range(5):
            start = time.process_time()
            a @ a
            times.append(time.process_time() - start)
        return size, statistics.median(times)


def _worker(kind: str, client: temporalio.client.Client, task_queue: str, processes: int) -> Any:
    common = {"task_queue": task_queue, "activities": [lt_matmul], "workflows": [LoadWorkflow]}
    if kind == "stock-process":
        executor = concurrent.futures.ProcessPoolExecutor(processes)
        worker = temporalio.worker.Worker(
            client,
            activity_executor=executor,
            max_concurrent_activities=processes,
            shared_state_manager=temporalio.worker.SharedStateManager.create_from_multiprocessing(
                __import__("multiprocessing").Manager()
            ),
            **common,
        )
        return worker, executor
    limit = "auto" if kind == "pool" else None
    config = pool.PoolConfig(processes=processes, native_threads=limit)
    return pool.Worker(client, pool_config=config, **common), None


async def run_one(kind: str, args: argparse.Namespace, address: str, size: int) -> dict[str, Any]:
    client = await temporalio.client.Client.connect(address)
    task_queue = f"bench-native-{kind}-{uuid.uuid4().hex[:6]}"
    worker, executor = _worker(kind, client, task_queue, args.processes)
    calls = [["lt_matmul", size] for _ in range(args.activities)]
    try:
        async with worker:
            began = time.monotonic()
            results = await asyncio.gather(
                *(
                    client.execute_workflow(
                        LoadWorkflow.run,
                        LoadInput(calls=calls, start_to_close_seconds=600),
                        id=f"{task_queue}-{i}",
                        task_queue=task_queue,
                    )
                    for i in range(args.workflows)
                )
            )
            wall = time.monotonic() - began
    finally:
        if executor is not None:
            executor.shutdown()
    flat = [r for rs in results for r in rs]
    errors = [r["error"] for r in flat if "error" in r]
    if errors:
        raise SystemExit(f"{kind}: {len(errors)} products failed, first: {errors[0]}")
    return {
        "worker": kind,
        "products": len(flat),
        "wall": wall,
        "cpu": sum(r["cpu"] for r in flat),
        "product_wall_mean": sum(r["wall"] for r in flat) / len(flat),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    size, one_thread = calibrate(args.target_ms / 1000)
    print(f"matrix {size} x {size}: {one_thread * 1000:.0f} ms on one thread", file=sys.stderr)
    server = DevServer()
    await asyncio.get_running_loop().run_in_executor(None, server.start)
    try:
        results = []
        for kind in ("pool", "pool-unlimited", "stock-process"):
            print(f"running {kind} ...", file=sys.stderr)
            result = await run_one(kind, args, server.address, size)
            result["cpu_efficiency"] = result["products"] * one_thread / result["cpu"]
            results.append(result)
    finally:
        server.stop()
    return {"size": size, "one_thread_s": one_thread, "results": results}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workflows", type=int, default=2)
    p.add_argument("--activities", type=int, default=4, help="products per workflow")
    p.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    p.add_argument("--target-ms", type=float, default=200.0)
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    data = asyncio.run(main_async(args))
    data["environment"] = environment()
    stock = next(r for r in data["results"] if r["worker"] == "stock-process")
    rows = [
        [
            r["worker"],
            r["products"],
            fmt(r["wall"], ".2f", " s"),
            fmt(r["cpu"], ".2f", " s"),
            fmt(r["product_wall_mean"] * 1000, ".0f", " ms"),
            f"{r['cpu_efficiency']:.0%}",
            fmt(stock["wall"] / r["wall"], ".2f", "x"),
        ]
        for r in data["results"]
    ]
    headers = ["worker", "products", "wall", "cpu", "per product", "CPU eff.", "speed vs stock"]
    print(table(headers, rows))
    if args.json:
        write_json(args.json, data)


if __name__ == "__main__":
    main()
