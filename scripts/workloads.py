"""Activities and the workflow used by ``loadtest.py`` and ``bench_dispatch.py``.

They live at module level in an importable module because they cross into child
processes (the pool's fork server preloads this module; a stdlib
``ProcessPoolExecutor`` pickles them by reference).

Every load-test activity returns a small dict ``{"cpu": s, "pid": pid, ...}``:
``cpu`` is the CPU time the activity body used, read with ``time.thread_time()``.
In a single-threaded child that equals ``time.process_time()`` minus the helper
threads (heartbeat shipper, control listener), which is what we want: the CPU
the *user code* got. It is also correct for ``stock-thread``, where
``process_time()`` would count every thread of the worker process.

The sync and async variants are registered under the same activity names
(``lt_noop``, ...), so one workflow drives every kind of worker.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import temporalio.worker
from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

# -- the CPU burn ------------------------------------------------------------------

# Work done between two reads of the thread CPU clock: ~20-50 us on this machine,
# so the burn overshoots its target by at most that much.
_BURN_CHUNK = 200


def burn(seconds: float, beat: Any = None) -> int:
    """Burn ``seconds`` of this thread's CPU; call ``beat(i)`` once per chunk when given.

    Returns the number of chunks (= heartbeats) done.
    """
    clock = time.thread_time
    end = clock() + seconds
    x = 0
    chunks = 0
    while clock() < end:
        for i in range(_BURN_CHUNK):
            x ^= i * i
        chunks += 1
        if beat is not None:
            beat(chunks)
    return chunks


def _done(cpu_start: float, **extra: Any) -> dict[str, Any]:
    return {"cpu": time.thread_time() - cpu_start, "pid": os.getpid(), **extra}


# -- sync activities (pool, stock-process, stock-thread) ------------------------------


@activity.defn(name="lt_noop")
def lt_noop(arg: int) -> dict[str, Any]:
    """Does nothing: the cost of the worker's own machinery per activity."""
    start = time.thread_time()
    return _done(start)


@activity.defn(name="lt_cpu")
def lt_cpu(ms: float) -> dict[str, Any]:
    """Burns ``ms`` milliseconds of CPU."""
    start = time.thread_time()
    burn(ms / 1000.0)
    return _done(start)


@activity.defn(name="lt_heartbeat")
def lt_heartbeat(ms: float) -> dict[str, Any]:
    """Burns ``ms`` milliseconds of CPU, calling ``activity.heartbeat()`` in a tight loop."""
    start = time.thread_time()
    beats = burn(ms / 1000.0, activity.heartbeat)
    return _done(start, beats=beats)


@activity.defn(name="lt_payload")
def lt_payload(data: str) -> dict[str, Any]:
    """Takes a large argument and returns a result of the same size."""
    start = time.thread_time()
    echo = data[::-1]
    return _done(start, data=echo)


@dataclass
class Record:
    """One row of the records workload: typed, as real activity payloads are."""

    id: int
    name: str
    value: float
    tags: list[str]


# One Record is ~70 bytes of JSON.
_RECORD_BYTES = 70


def make_records(kib: int) -> list[dict[str, Any]]:
    """About ``kib`` KiB of JSON as rows (plain dicts: the workflow's side)."""
    count = max(1, kib * 1024 // _RECORD_BYTES)
    return [
        {"id": i, "name": f"item-{i}", "value": i * 0.5, "tags": ["a", "b"]} for i in range(count)
    ]


@activity.defn(name="lt_records")
def lt_records(rows: list[Record]) -> dict[str, Any]:
    """Takes ~N KiB of typed rows (decoded into dataclasses by the payload converter)
    and returns as many (encoded back): the conversion is the heavy part."""
    start = time.thread_time()
    return _done(start, data=rows[::-1])


SYNC_ACTIVITIES = [lt_noop, lt_cpu, lt_heartbeat, lt_payload, lt_records]


# -- async activities (stock-async): the same bodies, run on the event loop ------------


@activity.defn(name="lt_noop")
async def lt_noop_async(arg: int) -> dict[str, Any]:
    start = time.thread_time()
    return _done(start)


@activity.defn(name="lt_cpu")
async def lt_cpu_async(ms: float) -> dict[str, Any]:
    # Blocks the event loop for its duration, as a CPU-bound async activity would.
    start = time.thread_time()
    burn(ms / 1000.0)
    return _done(start)


@activity.defn(name="lt_heartbeat")
async def lt_heartbeat_async(ms: float) -> dict[str, Any]:
    start = time.thread_time()
    beats = burn(ms / 1000.0, activity.heartbeat)
    return _done(start, beats=beats)


@activity.defn(name="lt_payload")
async def lt_payload_async(data: str) -> dict[str, Any]:
    start = time.thread_time()
    await asyncio.sleep(0)
    return _done(start, data=data[::-1])


@activity.defn(name="lt_records")
async def lt_records_async(rows: list[Record]) -> dict[str, Any]:
    start = time.thread_time()
    await asyncio.sleep(0)
    return _done(start, data=rows[::-1])


ASYNC_ACTIVITIES = [
    lt_noop_async,
    lt_cpu_async,
    lt_heartbeat_async,
    lt_payload_async,
    lt_records_async,
]


# -- the workflow ----------------------------------------------------------------------


@dataclass
class LoadInput:
    # [activity name, argument] per activity, all started at once.
    calls: list[list[Any]] = field(default_factory=list)
    start_to_close_seconds: float = 60.0
    heartbeat_timeout_seconds: float | None = None
    # Start at most this many at once (0: all). Large payloads need it: every schedule
    # command of one workflow task travels in one gRPC message (4 MiB at most).
    batch: int = 0


@workflow.defn(sandboxed=False)
class LoadWorkflow:
    """Starts the activities of its input (all at once, or ``batch`` at a time) and
    returns their results in order.

    No retries: a failed activity shows up as ``{"error": ...}`` in the result, so the
    load test counts errors instead of hiding them behind retries. Not sandboxed: the
    sandbox costs the same for every worker (it runs in the parent either way) and is
    noise for an activity benchmark.
    """

    @workflow.run
    async def run(self, inp: LoadInput) -> list[dict[str, Any]]:
        heartbeat_timeout = (
            timedelta(seconds=inp.heartbeat_timeout_seconds)
            if inp.heartbeat_timeout_seconds
            else None
        )

        async def one(name: str, arg: Any) -> dict[str, Any]:
            if name == "lt_payload":
                arg = "p" * (int(arg) * 1024)  # KiB -> the argument itself
            elif name == "lt_records":
                arg = make_records(int(arg))
            try:
                result: dict[str, Any] = await workflow.execute_activity(
                    name,
                    arg,
                    start_to_close_timeout=timedelta(seconds=inp.start_to_close_seconds),
                    heartbeat_timeout=heartbeat_timeout,
                    retry_policy=RetryPolicy(maximum_attempts=1),
                )
            except ActivityError as err:
                cause = err.cause or err
                return {"error": f"{type(cause).__name__}: {cause}"}
            result.pop("data", None)  # keep the workflow result small
            return result

        step = inp.batch or len(inp.calls) or 1
        results: list[dict[str, Any]] = []
        for i in range(0, len(inp.calls), step):
            batch = inp.calls[i : i + step]
            results.extend(await asyncio.gather(*(one(name, arg) for name, arg in batch)))
        return results


# -- bench_native_threads.py: NumPy in a child -------------------------------------


@activity.defn(name="lt_matmul")
def lt_matmul(size: int) -> dict[str, Any]:
    """One ``size`` x ``size`` matrix product; ``cpu`` counts every thread of the
    process (BLAS's own threads included), which is the point of the benchmark."""
    import numpy

    rng = numpy.random.default_rng(size)
    a = rng.random((size, size))
    b = rng.random((size, size))
    cpu_start = time.process_time()
    wall_start = time.perf_counter()
    a @ b
    return {
        "cpu": time.process_time() - cpu_start,
        "wall": time.perf_counter() - wall_start,
        "pid": os.getpid(),
    }


# -- bench_dispatch.py: run in a pool child or a stdlib executor process --------------


@activity.defn(name="bench_noop")
def bench_noop(payload: bytes) -> bytes:
    return payload


@activity.defn(name="bench_heartbeat_loop")
def bench_heartbeat_loop(calls: int) -> float:
    """Seconds per ``activity.heartbeat()`` call, averaged over ``calls`` calls."""
    heartbeat = activity.heartbeat
    start = time.perf_counter()
    for i in range(calls):
        heartbeat(i)
    return (time.perf_counter() - start) / calls


@activity.defn(name="bench_is_cancelled_loop")
def bench_is_cancelled_loop(calls: int) -> float:
    """Seconds per ``activity.is_cancelled()`` call, averaged over ``calls`` calls."""
    is_cancelled = activity.is_cancelled
    start = time.perf_counter()
    for _ in range(calls):
        is_cancelled()
    return (time.perf_counter() - start) / calls


BENCH_ACTIVITIES = [bench_noop, bench_heartbeat_loop, bench_is_cancelled_loop]


def pipe_echo(conn: Any) -> None:
    """A bare child that echoes bytes on a pipe until EOF: the floor for a round trip."""
    while True:
        try:
            data = conn.recv_bytes()
        except EOFError:
            return
        conn.send_bytes(data)


# -- loadtest.py --interceptor: what an interceptor that reads nothing costs ---------


class PassThrough(temporalio.worker.Interceptor):
    """An activity interceptor that only calls the next one (as a tracing or logging
    interceptor does around the activity)."""

    def intercept_activity(
        self, next: temporalio.worker.ActivityInboundInterceptor
    ) -> temporalio.worker.ActivityInboundInterceptor:
        return temporalio.worker.ActivityInboundInterceptor(next)
