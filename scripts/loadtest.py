#!/usr/bin/env python
"""Load test: one bounded workload through one or several kinds of worker.

    loadtest ── DevServer (embedded, 127.0.0.1) or --address
       │
       ├─ for each worker in --compare (or --worker), on its own task queue:
       │     start worker ─▶ warm-up workflow (not measured)
       │     t0 ─▶ start --workflows LoadWorkflow runs, each starting
       │           --activities-per-workflow activities at once (payload, records: in
       │           batches of <= 1 MiB of arguments) ─▶ wait for all ─▶ t1
       │     fetch histories ─▶ schedule-to-close latencies ─▶ stop worker
       └─ table, ratios (pool / stock), --json, --png

Workers:
  pool           pool.Worker, --processes children
  stock-process  temporalio.worker.Worker + ProcessPoolExecutor(--processes)
                 + SharedStateManager.create_from_multiprocessing(Manager())
  stock-thread   temporalio.worker.Worker + ThreadPoolExecutor(--slots)
  stock-async    temporalio.worker.Worker, async activities on its event loop

Every worker gets --slots activity slots (max_concurrent_activities).

Figures (one row per worker):
  throughput     completed activities / (t1 - t0)
  latency        schedule-to-close per activity from the workflow histories:
                 ActivityTaskCompleted.event_time - ActivityTaskScheduled.event_time
                 (both stamped by the server, so every worker is measured alike;
                 it includes the poll wait, dispatch, the activity and the respond RPC)
  s2start p50    schedule-to-start (ActivityTaskStarted - Scheduled): not comparable
                 across workers: the stock worker takes every task at once and queues
                 it locally, the pool leaves it on the server until a child is free
  CPU eff.       sum of activity CPU (time.thread_time() inside each activity) /
                 ((t1 - t0) x --processes)
  ceiling        the best CPU eff. the CPU this run used allows: the server, the
                 parent and every worker process shared the machine's cores, so
                 wall >= max(all their CPU / cores, activity CPU / --processes)
  peak RSS       largest RSS seen per child process (psutil, sampled every 0.2 s;
                 pool: its children; stock-process: the executor's processes)
  parent / server CPU per activity: where the rest of the machine's CPU went
                 (the server's CPU is known only for the embedded server)
  wf tasks       workflow tasks the runs took: completions that bunch up share one,
                 and each costs the server and the parent CPU
  machine busy   all cores' busy time / (wall x cores)
  other CPU      busy time outside this test's process tree (server, worker, managers),
                 per second of wall: a neighbour's job or the kernel; when high, read
                 the run's figures with suspicion
  errors         failed activities, failed or unfinished workflows

--repeat N runs the whole comparison N times, alternating the order; the table
then shows each worker's median run, and the ratios are the medians of the
ratios paired within each run (same minute, same server). On a shared machine
use it: single runs of a few seconds move by 10-30 %.

Bounds: --workflows x --activities-per-workflow activities, at most --timeout
seconds per worker for the measured part (then the rest is terminated and
reported as errors); warm-up, history fetch and shutdown have their own bounds.

Examples:
  .venv/bin/python scripts/loadtest.py --compare pool,stock-process --workload noop \\
      --workflows 1 --activities-per-workflow 200 --processes 2 --slots 100 --repeat 3
  .venv/bin/python scripts/loadtest.py --compare pool,stock-process --workload cpu \\
      --workflows 1 --activities-per-workflow 16 --work-ms 500 --processes 2
  .venv/bin/python scripts/loadtest.py --worker pool --workload heartbeat --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import multiprocessing
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import _common  # noqa: F401  (sys.path set-up)
import psutil
import temporalio.client
import temporalio.worker
import workloads
from _common import environment, fmt, mib, percentile, table, write_json
from temporalio.api.enums.v1 import EventType

import pool
from pool.cli.progress import ProgressBar
from pool.testing import DevServer

WORKERS = ("pool", "stock-process", "stock-thread", "stock-async")
WORKLOADS = ("noop", "cpu", "heartbeat", "mixed", "payload", "records")

# Bounds of the parts outside the measured window, in seconds.
_SERVER_START_TIMEOUT = 60.0
_WORKER_STOP_TIMEOUT = 30.0  # after this, the worker's children are killed by pid
_HISTORY_TIMEOUT = 60.0  # all history fetches of one worker together
_TERMINATE_TIMEOUT = 15.0  # terminating unfinished workflows after a timeout
_SAMPLE_INTERVAL = 0.2  # psutil sampling of child RSS
_START_CONCURRENCY = 32  # workflow starts in flight at once
_HISTORY_CONCURRENCY = 16

# Targets of issue 6, checked when the workload matches.
_NOOP_VS_STOCK_PROCESS = 3.0
_NOOP_VS_STOCK_ASYNC = 0.8
_CPU_EFF_LONG = 0.97  # 500 ms activities
_CPU_EFF_SHORT = 0.90  # 20 ms activities
# Targets of issue 13, checked for payloads of at least 1 MiB against stock-process.
_PAYLOAD_PARENT_CPU = 1 / 3  # pool's parent CPU per activity / stock's, at most
_PAYLOAD_THROUGHPUT = 1.5  # at least
_PAYLOAD_TARGET_KB = 1024


# -- the workload ------------------------------------------------------------------------


def activity_calls(args: argparse.Namespace, count: int, workload: str) -> list[list[Any]]:
    """[activity name, argument] for ``count`` activities of ``workload``."""
    work = args.work_ms
    if workload == "noop":
        return [["lt_noop", i] for i in range(count)]
    if workload == "cpu":
        return [["lt_cpu", work] for _ in range(count)]
    if workload == "heartbeat":
        return [["lt_heartbeat", work] for _ in range(count)]
    if workload == "payload":
        # The workflow builds a string of this many KiB (workflow input stays small).
        return [["lt_payload", args.payload_kb] for _ in range(count)]
    if workload == "records":
        return [["lt_records", args.payload_kb] for _ in range(count)]
    if workload == "mixed":
        # Half no-ops, then 1/4, 1 and 4 x --work-ms of CPU: 0.69 x --work-ms on average.
        pattern = [
            ["lt_noop", 0],
            ["lt_noop", 0],
            ["lt_noop", 0],
            ["lt_noop", 0],
            ["lt_cpu", work / 4],
            ["lt_cpu", work / 4],
            ["lt_cpu", work],
            ["lt_cpu", work * 4],
        ]
        return [pattern[i % len(pattern)] for i in range(count)]
    raise ValueError(workload)


def payload_batch(args: argparse.Namespace) -> int:
    """Activities started at once: all, except with large payloads (<= 1 MiB of
    arguments per workflow task, far below the 4 MiB gRPC message limit)."""
    if args.workload not in ("payload", "records"):
        return 0
    return max(1, 1024 // args.payload_kb)


# -- the workers under test --------------------------------------------------------------


class _Sampler:
    """Reads RSS and CPU of the worker's child processes every 0.2 s, on a thread."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self._pids = pids
        self._procs: dict[int, psutil.Process] = {}
        self.peak_rss: dict[int, int] = {}
        self.cpu: dict[int, float] = {}
        self.parent_peak_rss = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="loadtest-sampler", daemon=True)

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():  # not started when the warm-up failed
            self._thread.join(timeout=5)
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(_SAMPLE_INTERVAL):
            self.sample()

    def sample(self) -> None:
        with self._lock:
            with contextlib.suppress(psutil.Error):
                rss = psutil.Process().memory_info().rss
                self.parent_peak_rss = max(self.parent_peak_rss, rss)
            try:
                pids = list(self._pids())
            except Exception:  # the worker changed its child set under us
                return
            for pid in pids:
                proc = self._procs.get(pid)
                try:
                    if proc is None:
                        proc = self._procs[pid] = psutil.Process(pid)
                    with proc.oneshot():
                        rss = proc.memory_info().rss
                        times = proc.cpu_times()
                except psutil.Error:
                    continue
                self.peak_rss[pid] = max(self.peak_rss.get(pid, 0), rss)
                self.cpu[pid] = times.user + times.system

    def processes(self) -> list[psutil.Process]:
        with self._lock:
            return list(self._procs.values())

    def cpu_snapshot(self) -> dict[int, float]:
        self.sample()
        with self._lock:
            return dict(self.cpu)


@dataclass
class _UnderTest:
    """One started worker and how to see its child processes."""

    kind: str
    worker: Any
    run_task: asyncio.Task[None]
    child_pids: Callable[[], list[int]] = lambda: []
    cleanup: list[Callable[[], None]] = field(default_factory=list)
    # Run at once when the worker does not stop in time.
    abort: list[Callable[[], None]] = field(default_factory=list)


def _stock_process_pids(executor: concurrent.futures.ProcessPoolExecutor) -> list[int]:
    # The executor's own worker processes (private attribute, read-only here). With
    # forkserver they are the fork server's children, not ours, so psutil's children()
    # of this process would miss them.
    processes = getattr(executor, "_processes", None) or {}
    return list(processes)


async def start_worker(
    kind: str, client: temporalio.client.Client, task_queue: str, args: argparse.Namespace
) -> _UnderTest:
    common: dict[str, Any] = {
        "task_queue": task_queue,
        # --workflow-process: the workflows run on a worker of their own (WorkflowProcess)
        "workflows": [] if args.workflow_process else [workloads.LoadWorkflow],
        "max_concurrent_activities": args.slots,
    }
    if args.interceptor:
        common["interceptors"] = [workloads.PassThrough()]
    cleanup: list[Callable[[], None]] = []
    abort: list[Callable[[], None]] = []
    child_pids: Callable[[], list[int]] = list
    if kind == "pool":
        worker: Any = pool.Worker(
            client,
            activities=workloads.SYNC_ACTIVITIES,
            pool_config=pool.PoolConfig(
                processes=args.processes, prefetch=args.prefetch, lookahead=args.lookahead
            ),
            **common,
        )

        def child_pids() -> list[int]:
            pp = worker.process_pool
            return pp.pids if pp is not None else []

    elif kind == "stock-process":
        ctx = multiprocessing.get_context(args.stock_start_method)
        executor = concurrent.futures.ProcessPoolExecutor(args.processes, mp_context=ctx)
        manager = ctx.Manager()
        worker = temporalio.worker.Worker(
            client,
            activities=workloads.SYNC_ACTIVITIES,
            activity_executor=executor,
            shared_state_manager=temporalio.worker.SharedStateManager.create_from_multiprocessing(
                manager
            ),
            **common,
        )
        cleanup += [lambda: executor.shutdown(wait=True, cancel_futures=True), manager.shutdown]
        # The stock worker blocks its event loop in a manager Queue.put (up to 5 s per
        # activity) when the heartbeat queue is full (sdk-python #476); with the manager
        # gone those calls fail at once and the worker can finish shutting down.
        abort.append(manager.shutdown)

        def child_pids() -> list[int]:
            return _stock_process_pids(executor)

    elif kind == "stock-thread":
        threads = concurrent.futures.ThreadPoolExecutor(max_workers=args.slots)
        worker = temporalio.worker.Worker(
            client, activities=workloads.SYNC_ACTIVITIES, activity_executor=threads, **common
        )
        cleanup.append(lambda: threads.shutdown(wait=True, cancel_futures=True))
    elif kind == "stock-async":
        worker = temporalio.worker.Worker(client, activities=workloads.ASYNC_ACTIVITIES, **common)
    else:
        raise ValueError(kind)
    run_task = asyncio.create_task(worker.run(), name=f"worker-{kind}")
    return _UnderTest(kind, worker, run_task, child_pids, cleanup, abort)


async def stop_worker(ut: _UnderTest, sampler: _Sampler) -> list[str]:
    """Shut the worker down (bounded); kill its leftover children by pid. Returns errors."""
    errors: list[str] = []
    sampler.sample()  # every child the worker has now is known to the sampler
    try:
        await asyncio.wait_for(ut.worker.shutdown(), _WORKER_STOP_TIMEOUT)
    except asyncio.TimeoutError:
        errors.append(f"worker shutdown took over {_WORKER_STOP_TIMEOUT:g} s")
        # Its children are still busy (the stock executor runs every queued task to the
        # end): stop them now, or the clean-up below waits for all of them.
        _kill_leftovers(sampler.processes(), grace=0.0)
        for abort in ut.abort:
            error = await _bounded(abort, _WORKER_STOP_TIMEOUT)
            if error:
                errors.append(f"abort: {error}")
    except Exception as err:
        errors.append(f"worker shutdown: {type(err).__name__}: {err}")
    if not ut.run_task.done():
        ut.run_task.cancel()
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(ut.run_task, 5.0)
    if ut.run_task.done() and not ut.run_task.cancelled() and ut.run_task.exception():
        errors.append(f"worker failed: {ut.run_task.exception()!r}")
    for fn in ut.cleanup:
        error = await _bounded(fn, _WORKER_STOP_TIMEOUT)
        if error:
            errors.append(f"cleanup: {error}")
    _kill_leftovers(sampler.processes())
    return errors


async def _bounded(fn: Callable[[], None], timeout: float) -> str | None:
    """Run a blocking clean-up on a daemon thread for at most ``timeout`` seconds.

    A daemon thread, not the loop's executor: a clean-up that never returns (an
    executor waiting on a stuck child) must not hold the interpreter at exit.
    """
    done = threading.Event()
    failure: list[str] = []

    def target() -> None:
        try:
            fn()
        except Exception as err:
            failure.append(f"{type(err).__name__}: {err}")
        finally:
            done.set()

    threading.Thread(target=target, name="loadtest-cleanup", daemon=True).start()
    deadline = time.monotonic() + timeout
    while not done.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # bounded by the deadline; keeps the loop running
    if not done.is_set():
        return f"still running after {timeout:g} s (left behind)"
    return failure[0] if failure else None


def _kill_leftovers(procs: list[psutil.Process], grace: float = 2.0) -> None:
    """SIGKILL child processes this worker started that are still alive.

    psutil.Process objects taken while the worker ran: ``kill()`` checks the
    process's start time, so a reused pid is never hit.
    """
    alive = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
    if not alive:
        return
    for proc in psutil.wait_procs(alive, timeout=grace)[1] if grace else alive:
        print(f"loadtest: killing leftover child {proc.pid}", file=sys.stderr)
        with contextlib.suppress(psutil.Error):
            proc.kill()


# -- one measured run ---------------------------------------------------------------------


class _Progress:
    """Activities done for one worker kind, with the rate and the errors."""

    def __init__(self, label: str, total: int) -> None:
        self.done = 0
        self.errors = 0
        self.start = time.monotonic()
        self._bar = ProgressBar(total=total, label=f"[{label}]", out=sys.stderr, every=2.0)

    def show(self, final: bool = False) -> None:
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        self._bar.update(self.done, f"{rate:7.1f}/s  errors {self.errors}", final=final)
        if final:
            self._bar.finish()

    async def run(self) -> None:
        while True:
            self.show()
            await asyncio.sleep(0.25)


async def _run_workflows(
    client: temporalio.client.Client,
    task_queue: str,
    id_prefix: str,
    inputs: list[workloads.LoadInput],
    execution_timeout: float,
    progress: _Progress | None,
    handles: list[Any],
) -> list[list[dict[str, Any]] | BaseException]:
    sem = asyncio.Semaphore(_START_CONCURRENCY)

    async def one(i: int, inp: workloads.LoadInput) -> list[dict[str, Any]]:
        async with sem:
            handle = await client.start_workflow(
                workloads.LoadWorkflow.run,
                inp,
                id=f"{task_queue}-{id_prefix}-{i}",
                task_queue=task_queue,
                execution_timeout=timedelta(seconds=execution_timeout),
            )
        handles.append(handle)
        try:
            result = await handle.result()
        except BaseException:
            if progress is not None:
                progress.errors += len(inp.calls)
            raise
        if progress is not None:
            progress.done += sum(1 for r in result if "error" not in r)
            progress.errors += sum(1 for r in result if "error" in r)
        return result

    return await asyncio.gather(
        *(one(i, inp) for i, inp in enumerate(inputs)), return_exceptions=True
    )


async def _latencies(handles: list[Any]) -> tuple[list[float], list[float], int]:
    """Schedule-to-close and schedule-to-start seconds of every closed activity, and
    the number of workflow tasks the runs took (each one costs the server and the
    parent; how many depends on how completions bunch up)."""
    sem = asyncio.Semaphore(_HISTORY_CONCURRENCY)
    close: list[float] = []
    start: list[float] = []
    workflow_tasks = 0
    closing = {
        EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: "activity_task_completed_event_attributes",
        EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: "activity_task_failed_event_attributes",
        EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: "activity_task_timed_out_event_attributes",
    }

    async def one(handle: Any) -> None:
        nonlocal workflow_tasks
        scheduled: dict[int, float] = {}
        async with sem:
            async for event in handle.fetch_history_events():
                at = event.event_time.ToNanoseconds() / 1e9
                if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                    workflow_tasks += 1
                elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                    scheduled[event.event_id] = at
                elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                    sid = event.activity_task_started_event_attributes.scheduled_event_id
                    if sid in scheduled:
                        start.append(at - scheduled[sid])
                elif event.event_type in closing:
                    sid = getattr(event, closing[event.event_type]).scheduled_event_id
                    if sid in scheduled:
                        close.append(at - scheduled[sid])

    await asyncio.gather(*(one(h) for h in handles), return_exceptions=True)
    return close, start, workflow_tasks


CPUS = psutil.cpu_count() or 1


def _machine_busy() -> float:
    """CPU seconds all cores spent on anything but idling since boot."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's threads, summed by kind: the main thread (the
    asyncio loop), temporalio's runtime (tokio), grpc's own threads, the rest. Linux
    (/proc); elsewhere empty."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    kinds: dict[str, float] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return kinds
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/self/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue  # the thread ended meanwhile
        if int(tid) == os.getpid():
            kind = "main"
        elif comm.startswith("tokio"):
            kind = "tokio"
        elif comm in ("event_engine", "grpc_global_tim", "lifeguard") or comm.startswith("grpc"):
            kind = "grpc"
        else:
            kind = "other"
        kinds[kind] = kinds.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return kinds


def _cpu_of(pid: int | None) -> float:
    """CPU seconds of ``pid`` and its descendants (0 when unknown)."""
    if pid is None:
        return 0.0
    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
    except psutil.Error:
        return 0.0
    return total


class WorkflowProcess:
    """``scripts/workflow_worker.py``: the workflows on a stock worker in a process of
    its own (``--workflow-process``). It stops when its stdin closes; one that does not
    within the bound is killed by its pid."""

    def __init__(self, address: str, namespace: str, task_queue: str) -> None:
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "workflow_worker.py")
        self._proc = subprocess.Popen(
            [sys.executable, script, address, namespace, task_queue],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pid = self._proc.pid

    async def ready(self, timeout: float) -> None:
        assert self._proc.stdout is not None
        line = await asyncio.wait_for(
            asyncio.get_running_loop().run_in_executor(None, self._proc.stdout.readline), timeout
        )
        if line.strip() != "ready":
            raise RuntimeError(f"the workflow worker did not start (exit {self._proc.poll()})")

    def cpu(self) -> float:
        """Its CPU seconds so far, as the process itself reads them (exact; see
        workflow_worker.py). Falls back on psutil's reading if it does not answer."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        try:
            self._proc.stdin.write("cpu\n")
            self._proc.stdin.flush()
            return float(self._proc.stdout.readline())
        except (OSError, ValueError):
            return _cpu_of(self.pid)

    def stop(self, timeout: float = 20.0) -> None:
        assert self._proc.stdin is not None
        with contextlib.suppress(OSError):
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)


async def run_one(
    kind: str,
    client: temporalio.client.Client,
    args: argparse.Namespace,
    server_pid: int | None,
) -> dict[str, Any]:
    task_queue = f"loadtest-{kind}-{uuid.uuid4().hex[:8]}"
    workflows: WorkflowProcess | None = None
    if args.workflow_process:
        target = client.service_client.config.target_host
        workflows = WorkflowProcess(target, client.namespace, task_queue)
        try:
            await workflows.ready(_SERVER_START_TIMEOUT)
        except BaseException:
            workflows.stop()
            raise
    try:
        return await _measure(kind, client, args, server_pid, task_queue, workflows)
    finally:
        if workflows is not None:
            await asyncio.get_running_loop().run_in_executor(None, workflows.stop)


async def _measure(
    kind: str,
    client: temporalio.client.Client,
    args: argparse.Namespace,
    server_pid: int | None,
    task_queue: str,
    workflows: WorkflowProcess | None,
) -> dict[str, Any]:
    total = args.workflows * args.activities_per_workflow
    result: dict[str, Any] = {"worker": kind, "task_queue": task_queue, "activities": total}
    errors: list[str] = []
    hb_timeout = args.heartbeat_timeout if args.workload == "heartbeat" else None
    ut = await start_worker(kind, client, task_queue, args)
    sampler = _Sampler(ut.child_pids)
    try:
        # Warm-up (not measured): children started, imports done, caches filled.
        if args.warmup:
            warm = workloads.LoadInput(
                calls=activity_calls(args, args.warmup, "noop"),
                start_to_close_seconds=args.timeout,
            )
            out = await asyncio.wait_for(
                _run_workflows(client, task_queue, "warm", [warm], args.timeout, None, []),
                args.timeout,
            )
            if isinstance(out[0], BaseException):
                raise RuntimeError(f"warm-up workflow failed: {out[0]!r}")
        sampler.start()
        inputs = [
            workloads.LoadInput(
                calls=activity_calls(args, args.activities_per_workflow, args.workload),
                start_to_close_seconds=args.timeout,
                heartbeat_timeout_seconds=hb_timeout,
                batch=payload_batch(args),
            )
            for _ in range(args.workflows)
        ]
        progress = _Progress(kind, total)
        ticker = asyncio.create_task(progress.run())
        handles: list[Any] = []
        cpu0 = sampler.cpu_snapshot()
        parent0 = time.process_time()
        threads0 = _thread_cpu()
        server0 = _cpu_of(server_pid)
        workflow0 = workflows.cpu() if workflows is not None else 0.0
        machine0 = _machine_busy()
        tree0 = _cpu_of(os.getpid())  # this process, the server, every worker process
        t0 = time.monotonic()
        measured = _run_workflows(
            client, task_queue, "run", inputs, args.timeout, progress, handles
        )
        timed_out = False
        try:
            outcomes = await asyncio.wait_for(measured, args.timeout)
        except asyncio.TimeoutError:
            timed_out = True
            outcomes = []
        t1 = time.monotonic()
        parent_cpu = time.process_time() - parent0
        threads1 = _thread_cpu()
        # Threads that ended in the window are missing from threads1: their CPU
        # lands in "other" through the total.
        parent_threads = {k: threads1.get(k, 0.0) - threads0.get(k, 0.0) for k in threads1}
        server_cpu = _cpu_of(server_pid) - server0
        workflow_cpu = workflows.cpu() - workflow0 if workflows is not None else None
        machine_cpu = _machine_busy() - machine0
        tree_cpu = _cpu_of(os.getpid()) - tree0
        cpu1 = sampler.cpu_snapshot()
        ticker.cancel()
        progress.show(final=True)
        if timed_out:
            errors.append(f"timed out after {args.timeout:g} s")
            await _terminate(handles)
    finally:
        sampler.stop()
        if kind == "pool" and ut.worker.process_pool is not None:
            pp = ut.worker.process_pool
            if pp.started:
                pp.sample()
                result["pool_snapshot"] = _pool_snapshot(pp.snapshot())
        errors += await stop_worker(ut, sampler)

    completed = 0
    activity_cpu = 0.0
    for out in outcomes:
        if isinstance(out, BaseException):
            cause = f" ({type(out.__cause__).__name__}: {out.__cause__})" if out.__cause__ else ""
            errors.append(f"workflow: {type(out).__name__}: {out}{cause}")
            continue
        for r in out:
            if "error" in r:
                errors.append(r["error"])
            else:
                completed += 1
                activity_cpu += float(r.get("cpu", 0.0))
    try:
        close, start, workflow_tasks = await asyncio.wait_for(_latencies(handles), _HISTORY_TIMEOUT)
    except asyncio.TimeoutError:
        close, start, workflow_tasks = [], [], 0
        errors.append(f"history fetch took over {_HISTORY_TIMEOUT:g} s: no latencies")

    wall = t1 - t0
    children = [
        {
            "pid": pid,
            "peak_rss": sampler.peak_rss.get(pid, 0),
            "cpu_s": cpu1.get(pid, 0.0) - cpu0.get(pid, 0.0),
        }
        for pid in sorted(set(sampler.peak_rss))
    ]
    missing = total - completed
    error_count = max(missing, len([e for e in errors if not e.startswith("worker shutdown")]))
    result.update(
        {
            "completed": completed,
            "errors": error_count,
            "error_samples": Counter(errors).most_common(5),
            "wall_s": wall,
            "throughput": completed / wall if wall > 0 else 0.0,
            "latency_s": {
                "p50": percentile(close, 50),
                "p90": percentile(close, 90),
                "p99": percentile(close, 99),
                "max": max(close) if close else None,
            },
            "schedule_to_start_s": {"p50": percentile(start, 50), "p90": percentile(start, 90)},
            "activity_cpu_s": activity_cpu,
            "workflow_tasks": workflow_tasks,
            "cpu_efficiency": activity_cpu / (wall * args.processes) if wall > 0 else 0.0,
            # The best efficiency the CPU this test used allows: its process tree
            # needed tree_cpu seconds on CPUS cores, the activities activity_cpu on
            # --processes; wall >= max(tree_cpu / CPUS, activity_cpu / processes).
            "cpu_ceiling": min(1.0, activity_cpu * CPUS / (args.processes * tree_cpu))
            if tree_cpu > 0
            else 0.0,
            "children": children,
            "peak_rss_per_child": max((c["peak_rss"] for c in children), default=None),
            "children_cpu_s": sum(c["cpu_s"] for c in children),
            "parent_cpu_s": parent_cpu,
            "parent_threads_cpu_s": parent_threads,
            "parent_peak_rss": sampler.parent_peak_rss,
            "server_cpu_s": server_cpu if server_pid else None,
            "workflow_process_cpu_s": workflow_cpu,
            # Every core's busy time during the run, and the part of it no process of
            # this test used (another job on the machine: the figures are suspect).
            "machine_busy": machine_cpu / (wall * CPUS) if wall > 0 else 0.0,
            # The worker's processes besides its children: the stock Manager, our
            # shared-state manager and fork server.
            "helpers_cpu_s": max(
                0.0,
                tree_cpu
                - parent_cpu
                - sum(c["cpu_s"] for c in children)
                - (server_cpu if server_pid else 0.0)
                - (workflow_cpu or 0.0),
            ),
            "other_cpu_s": max(0.0, machine_cpu - tree_cpu),
        }
    )
    return result


async def _terminate(handles: list[Any]) -> None:
    async def one(handle: Any) -> None:
        with contextlib.suppress(Exception):
            await handle.terminate("loadtest timeout")

    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(one(h) for h in handles)), _TERMINATE_TIMEOUT)


def _pool_snapshot(snap: pool.PoolSnapshot) -> dict[str, Any]:
    return {
        "starts": snap.starts,
        "deaths": snap.deaths,
        "recycles": snap.recycles,
        "kills": snap.kills,
        "promised_ahead": snap.promised_ahead,
        "tasks_waited": snap.tasks_waited,
        "task_wait_seconds": snap.task_wait_seconds,
        "task_wait_max": snap.task_wait_max,
        "children": [
            {
                "pid": c.pid,
                "tasks_done": c.tasks_done,
                "peak_rss": c.peak_rss,
                "cpu_seconds": c.cpu_seconds,
            }
            for c in snap.children
        ],
    }


# -- reporting ----------------------------------------------------------------------------


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """base / other for every other worker; base is pool when it ran, else the first."""
    by_kind = {r["worker"]: r for r in results}
    base = by_kind.get("pool") or results[0]
    out = []
    for other in results:
        if other is base:
            continue

        def ratio(a: float | None, b: float | None) -> float | None:
            return a / b if a is not None and b else None

        out.append(
            {
                "base": base["worker"],
                "other": other["worker"],
                "throughput": ratio(base["throughput"], other["throughput"]),
                # Meaningless for workloads that hardly use the CPU (no-ops).
                "cpu_efficiency": ratio(base["cpu_efficiency"], other["cpu_efficiency"])
                if max(base["cpu_efficiency"], other["cpu_efficiency"]) >= 0.01
                else None,
                # < 1: the base is faster
                "latency_p50": ratio(base["latency_s"]["p50"], other["latency_s"]["p50"]),
                # < 1: the base's parent spends less CPU per completed activity
                "parent_cpu": ratio(
                    _parent_cpu_per_activity(base), _parent_cpu_per_activity(other)
                ),
            }
        )
    return out


def _parent_cpu_per_activity(result: dict[str, Any]) -> float | None:
    return result["parent_cpu_s"] / result["completed"] if result["completed"] else None


def median_ratios(per_repeat: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Ratios paired within each repeat (same minute, same server), then their median."""
    if len(per_repeat) == 1:
        return per_repeat[0]
    out = []
    for i, first in enumerate(per_repeat[0]):
        row: dict[str, Any] = {"base": first["base"], "other": first["other"]}
        for key in ("throughput", "cpu_efficiency", "latency_p50", "parent_cpu"):
            values = [rows[i][key] for rows in per_repeat if rows[i][key] is not None]
            row[key] = statistics.median(values) if values else None
            row[f"{key}_range"] = [min(values), max(values)] if values else None
        out.append(row)
    return out


def representative(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput (the lower one of two middles)."""
    ordered = sorted(runs, key=lambda r: r["throughput"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["repeats"] = len(runs)
    return chosen


def targets(
    args: argparse.Namespace, results: list[dict[str, Any]], rows: list[dict[str, Any]]
) -> list[list[str]]:
    """Issue 6's and issue 13's targets that this run can check:
    [what, value, target, PASS/MISS]."""
    checks: list[list[str]] = []

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    if args.workload == "noop":
        for r in rows:
            if r["base"] != "pool" or r["throughput"] is None:
                continue
            want = {
                "stock-process": _NOOP_VS_STOCK_PROCESS,
                "stock-async": _NOOP_VS_STOCK_ASYNC,
            }.get(r["other"])
            if want is not None:
                checks.append(
                    [
                        f"no-op throughput pool / {r['other']}",
                        f"{r['throughput']:.2f}x",
                        f">= {want:g}x",
                        verdict(r["throughput"] >= want),
                    ]
                )
    if args.workload == "cpu":
        want = _CPU_EFF_LONG if args.work_ms >= 500 else _CPU_EFF_SHORT
        for r in results:
            if r["worker"] == "pool":
                checks.append(
                    [
                        f"CPU efficiency pool ({args.work_ms:g} ms activities)",
                        f"{r['cpu_efficiency']:.1%}",
                        f">= {want:.0%}",
                        verdict(r["cpu_efficiency"] >= want),
                    ]
                )
                checks.append(
                    [
                        "  the ceiling of this run (see --help)",
                        f"{r.get('cpu_ceiling', 0.0):.1%}",
                        "",
                        "",
                    ]
                )
    if args.workload == "payload" and args.payload_kb >= _PAYLOAD_TARGET_KB:
        for r in rows:
            if (r["base"], r["other"]) != ("pool", "stock-process"):
                continue
            if r["parent_cpu"] is not None:
                checks.append(
                    [
                        "parent CPU per activity pool / stock-process",
                        f"{r['parent_cpu']:.2f}x",
                        f"<= {_PAYLOAD_PARENT_CPU:.2f}x",
                        verdict(r["parent_cpu"] <= _PAYLOAD_PARENT_CPU),
                    ]
                )
            if r["throughput"] is not None:
                checks.append(
                    [
                        "payload throughput pool / stock-process",
                        f"{r['throughput']:.2f}x",
                        f">= {_PAYLOAD_THROUGHPUT:g}x",
                        verdict(r["throughput"] >= _PAYLOAD_THROUGHPUT),
                    ]
                )
    return checks


def _ms(value: float | None) -> str:
    return fmt(None if value is None else value * 1000, ".1f")


def print_report(
    args: argparse.Namespace,
    results: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    checks: list[list[str]],
) -> None:
    print()
    print(
        f"workload {args.workload}: {args.workflows} workflows x "
        f"{args.activities_per_workflow} activities, {args.processes} processes, "
        f"{args.slots} slots"
        + (
            f", {args.work_ms:g} ms CPU each"
            if args.workload in ("cpu", "heartbeat", "mixed")
            else ""
        )
        + (f", {args.payload_kb} KiB payloads" if args.workload in ("payload", "records") else "")
    )
    headers = [
        "worker",
        "done",
        "errors",
        "wall s",
        "act/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "s2start p50",
        "CPU eff",
        "ceiling",
        "peak RSS/child",
        "parent CPU/act",
        "children CPU/act",
        "wf process CPU/act",
        "server CPU/act",
        "wf tasks",
        "machine busy",
        "other CPU",
    ]
    body = []
    for r in results:
        n = max(r["completed"], 1)
        server = r["server_cpu_s"]
        body.append(
            [
                r["worker"],
                r["completed"],
                r["errors"],
                f"{r['wall_s']:.2f}",
                f"{r['throughput']:.1f}",
                _ms(r["latency_s"]["p50"]),
                _ms(r["latency_s"]["p90"]),
                _ms(r["latency_s"]["p99"]),
                _ms(r["schedule_to_start_s"]["p50"]),
                f"{r['cpu_efficiency']:.1%}",
                f"{r.get('cpu_ceiling', 0.0):.1%}",
                mib(r["peak_rss_per_child"]),
                f"{r['parent_cpu_s'] / n * 1000:.2f} ms",
                f"{r['children_cpu_s'] / n * 1000:.2f} ms",
                "-"
                if r.get("workflow_process_cpu_s") is None
                else f"{r['workflow_process_cpu_s'] / n * 1000:.2f} ms",
                "-" if server is None else f"{server / n * 1000:.2f} ms",
                r.get("workflow_tasks", 0),
                f"{r.get('machine_busy', 0.0):.0%}",
                f"{r.get('other_cpu_s', 0.0) / max(r['wall_s'], 1e-9):.0%}",
            ]
        )
    print(table(headers, body))
    for r in results:
        threads = r.get("parent_threads_cpu_s")
        if threads and r["completed"]:
            n = r["completed"]
            parts = ", ".join(
                f"{kind} {threads[kind] / n * 1000:.2f}"
                for kind in ("main", "tokio", "grpc", "other")
                if kind in threads
            )
            print(f"  {r['worker']} parent CPU by thread (ms/activity): {parts}")
    for r in results:
        for err, count in r["error_samples"]:
            print(f"  {r['worker']} error x{count}: {err}")
    if rows:
        print()
        if len(results) and results[0].get("repeats", 1) > 1:
            print(f"ratios: median over {results[0]['repeats']} runs, each paired within its run")
        print(
            table(
                [
                    "ratio",
                    "throughput",
                    "(min-max)",
                    "CPU eff",
                    "latency p50",
                    "parent CPU/act",
                    "(min-max)",
                ],
                [
                    [
                        f"{r['base']} / {r['other']}",
                        fmt(r["throughput"], ".2f", "x"),
                        "-"
                        if not r.get("throughput_range")
                        else "{:.2f}-{:.2f}".format(*r["throughput_range"]),
                        fmt(r["cpu_efficiency"], ".2f", "x"),
                        fmt(r["latency_p50"], ".2f", "x"),
                        fmt(r["parent_cpu"], ".2f", "x"),
                        "-"
                        if not r.get("parent_cpu_range")
                        else "{:.2f}-{:.2f}".format(*r["parent_cpu_range"]),
                    ]
                    for r in rows
                ],
            )
        )
    if checks:
        print()
        print(table(["target (issues 6, 13)", "value", "target", ""], checks))


def print_runs(per_repeat: list[list[dict[str, Any]]]) -> None:
    print()
    print("every run:")
    print(
        table(
            ["run", "worker", "done", "errors", "act/s", "p50 ms", "CPU eff"],
            [
                [
                    r["repeat"],
                    r["worker"],
                    r["completed"],
                    r["errors"],
                    f"{r['throughput']:.1f}",
                    _ms(r["latency_s"]["p50"]),
                    f"{r['cpu_efficiency']:.1%}",
                ]
                for runs in per_repeat
                for r in runs
            ],
        )
    )


def write_png(path: str, args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"PNG skipped: matplotlib is not installed (wanted {path})")
        return
    names = [r["worker"] for r in results]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    axes[0].bar(names, [r["throughput"] for r in results], color="tab:blue")
    axes[0].set_title("throughput (activities/s)")
    axes[1].bar(names, [r["cpu_efficiency"] * 100 for r in results], color="tab:green")
    axes[1].set_title("CPU efficiency (%)")
    axes[1].set_ylim(0, 105)
    width = 0.25
    for i, q in enumerate(("p50", "p90", "p99")):
        values = [(r["latency_s"][q] or 0) * 1000 for r in results]
        axes[2].bar([x + (i - 1) * width for x in range(len(names))], values, width, label=q)
    axes[2].set_xticks(range(len(names)), names)
    axes[2].set_title("schedule-to-close latency (ms)")
    axes[2].legend()
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=20)
    fig.suptitle(
        f"{args.workload}: {args.workflows} x {args.activities_per_workflow} activities, "
        f"{args.processes} processes, {args.slots} slots"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")


# -- main -----------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace, kinds: list[str]) -> dict[str, Any]:
    server: DevServer | None = None
    loop = asyncio.get_running_loop()
    address = args.address
    if address is None:
        server = DevServer(
            extra_args=[
                arg for kv in args.server_dynamic_config for arg in ("--dynamic-config-value", kv)
            ]
        )
        print(f"loadtest: starting the dev server on {server.address} ...", file=sys.stderr)
        await loop.run_in_executor(None, server.start, _SERVER_START_TIMEOUT)
        address = server.address
    try:
        client = await temporalio.client.Client.connect(address, namespace=args.namespace)
        per_repeat: list[list[dict[str, Any]]] = []
        for repeat in range(args.repeat):
            # Alternate the order, so a drift in the machine's load favours nobody.
            order = kinds if repeat % 2 == 0 else kinds[::-1]
            done: dict[str, dict[str, Any]] = {}
            for kind in order:
                print(f"loadtest: {kind} (run {repeat + 1}/{args.repeat}) ...", file=sys.stderr)
                done[kind] = await run_one(kind, client, args, server.pid if server else None)
                done[kind]["repeat"] = repeat + 1
            per_repeat.append([done[k] for k in kinds])
    finally:
        if server is not None:
            await loop.run_in_executor(None, server.stop)
    results = [representative([runs[i] for runs in per_repeat]) for i in range(len(kinds))]
    rows = median_ratios([ratios(runs) for runs in per_repeat]) if len(kinds) > 1 else []
    checks = targets(args, results, rows)
    if args.repeat > 1:
        print_runs(per_repeat)
    print_report(args, results, rows, checks)
    return {
        "environment": environment(),
        "params": {k: v for k, v in vars(args).items() if k not in ("json", "png")},
        "address": address,
        "results": results,
        "ratios": rows,
        "targets": checks,
        "runs": [run for runs in per_repeat for run in runs],
    }


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(
        description="Bounded load test of pool.Worker against the stock temporalio worker.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--worker", choices=WORKERS, default="pool", help="worker to run (pool)")
    which.add_argument(
        "--compare",
        metavar="W1,W2,...",
        help=f"run several back to back and print ratios; from {', '.join(WORKERS)}",
    )
    p.add_argument("--workload", choices=WORKLOADS, default="noop")
    p.add_argument("--workflows", type=int, default=20)
    p.add_argument("--activities-per-workflow", type=int, default=10)
    p.add_argument("--processes", type=int, default=2, help="child processes (pool, stock-process)")
    p.add_argument("--slots", type=int, default=100, help="max_concurrent_activities (100)")
    p.add_argument(
        "--prefetch",
        type=int,
        default=0,
        help="pool only: PoolConfig.prefetch, tasks polled beyond what the children can start (0)",
    )
    p.add_argument(
        "--no-lookahead",
        dest="lookahead",
        action="store_false",
        help="pool only: PoolConfig(lookahead=False), poll only for idle children",
    )
    p.add_argument(
        "--workflow-process",
        action="store_true",
        help="run the workflows on a stock workflow-only worker in a process of its own: the "
        "worker under test runs only activities, so its CPU is the activity side alone",
    )
    p.add_argument(
        "--interceptor",
        action="store_true",
        help="register a pass-through activity interceptor on the worker under test",
    )
    p.add_argument("--work-ms", type=float, default=20.0, help="CPU per activity (cpu, heartbeat)")
    p.add_argument("--payload-kb", type=int, default=256, help="argument and result size (payload)")
    p.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=2.0,
        help="heartbeat timeout of the heartbeat workload, seconds",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="hard bound of each worker's measured run, seconds",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="no-op activities run first, not measured (default 4 x processes)",
    )
    p.add_argument(
        "--stock-start-method",
        default="forkserver",
        choices=["forkserver", "spawn", "fork"],
        help="start method of the stock ProcessPoolExecutor and Manager",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the whole comparison this many times (order alternates); the table shows "
        "the median run of each worker and the median of the paired ratios",
    )
    p.add_argument("--address", help="use this Temporal server instead of an embedded one")
    p.add_argument(
        "--server-dynamic-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a dynamic config value for the embedded dev server (repeatable), e.g. "
        "matching.numTaskqueueReadPartitions=1",
    )
    p.add_argument("--namespace", default="default")
    p.add_argument("--json", metavar="FILE", help="write all figures here")
    p.add_argument("--png", metavar="FILE", help="bar charts (needs matplotlib)")
    args = p.parse_args(argv)
    kinds = [k.strip() for k in args.compare.split(",")] if args.compare else [args.worker]
    unknown = [k for k in kinds if k not in WORKERS]
    if unknown or not kinds:
        p.error(f"unknown worker(s) {unknown}; choose from {', '.join(WORKERS)}")
    for name in (
        "workflows",
        "activities_per_workflow",
        "processes",
        "slots",
        "payload_kb",
        "repeat",
    ):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.timeout <= 0 or args.work_ms < 0:
        p.error("--timeout must be positive and --work-ms not negative")
    if args.address and not args.address.startswith(("127.0.0.1:", "localhost:")):
        p.error("--address must be a loopback address (127.0.0.1:PORT)")
    if args.warmup is None:
        args.warmup = 4 * args.processes
    return args, kinds


def main(argv: list[str] | None = None) -> int:
    args, kinds = parse_args(argv)
    # The stock worker warns when it has more slots than executor processes: that is
    # the configuration being compared (same slot count for every worker), on purpose.
    warnings.filterwarnings("ignore", message="Worker max_concurrent_activities is")
    data = asyncio.run(main_async(args, kinds))
    if args.json:
        write_json(args.json, data)
    if args.png:
        write_png(args.png, args, data["results"])
    return 1 if any(r["errors"] for r in data["results"]) else 0


if __name__ == "__main__":
    sys.exit(main())
