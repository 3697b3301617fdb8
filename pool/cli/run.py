"""``python -m pool run``: a pool.Worker for the user's modules, until a signal stops it.

check flags ─▶ PoolConfig ─▶ discover ─▶ resolve_connection ─▶ asyncio.run(_serve):
  connect (a signal here: EXIT_INTERRUPTED) ─▶ pool.Worker(...) ─▶ metrics endpoints
  ─▶ worker.run(); banner once the children are ready
  ─▶ 1st signal: worker.shutdown() (running activities get --graceful-shutdown-timeout)
  ─▶ 2nd signal: worker.cancel_activities() ─▶ EXIT_OK, or the worker's failure
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
from datetime import timedelta
from typing import Any

from .checks import check_run_args, parse_type_limits
from .connection import Connection, connect, resolve_connection
from .discovery import Discovered, discover
from .errors import (
    EXIT_CONFIG,
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    LaunchError,
    one_line,
    require,
)
from .signals import Signals, StoppedEarly, first_done, unless_signalled

__all__ = ["pool_config", "run_command"]

logger = logging.getLogger("pool.launcher")


def pool_config(args: argparse.Namespace) -> Any:
    """The PoolConfig the flags ask for; its own checks failing are EXIT_CONFIG."""
    from .. import PoolConfig, WorkerConfigError

    options: dict[str, Any] = {"processes": args.processes, "start_method": args.start_method}
    for name in ("max_tasks_per_child", "max_memory_per_child", "hard_memory_per_child"):
        options[name] = getattr(args, name)
    if args.cancel_grace is not None:
        options["cancel_grace"] = timedelta(seconds=args.cancel_grace)
    if args.prefetch is not None:
        options["prefetch"] = args.prefetch
    if args.crash_loop_max_deaths is not None:
        options["crash_loop_max_deaths"] = args.crash_loop_max_deaths
    if args.crash_loop_window is not None:
        options["crash_loop_window"] = timedelta(seconds=args.crash_loop_window)
    if args.lookahead is not None:
        options["lookahead"] = args.lookahead
    if args.rpc_compression is not None:
        options["rpc_compression"] = args.rpc_compression
    if args.child_reports_from is not None:
        off = args.child_reports_from == "off"
        options["child_reports_from"] = None if off else args.child_reports_from
    if args.native_threads is not None:
        options["native_threads"] = args.native_threads or None
    if args.cpu_affinity:
        options["cpu_affinity"] = True
    try:
        return PoolConfig(**options)
    except WorkerConfigError as err:
        raise LaunchError(EXIT_CONFIG, _as_flags(one_line(err), options)) from None


def _as_flags(message: str, options: dict[str, Any]) -> str:
    """PoolConfig names its fields; the user typed flags: ``max_memory_per_child`` ->
    ``--max-memory-per-child`` for every option the flags set."""
    for name in sorted(options, key=len, reverse=True):
        message = re.sub(rf"(?<![\w-]){name}\b", "--" + name.replace("_", "-"), message)
    return message


def _pool_flags_given(args: argparse.Namespace) -> bool:
    return (
        any(
            getattr(args, name) is not None
            for name in (
                "processes",
                "max_tasks_per_child",
                "max_memory_per_child",
                "hard_memory_per_child",
                "cancel_grace",
                "prefetch",
                "lookahead",
                "rpc_compression",
                "child_reports_from",
                "crash_loop_max_deaths",
                "crash_loop_window",
                "native_threads",
                "cpu_affinity",
            )
        )
        or args.start_method != "forkserver"
    )


def _banner(args: argparse.Namespace, conn: Connection, found: Discovered, worker: Any) -> str:
    pool_ = worker.process_pool
    procs = (
        f"{pool_.size} process{'' if pool_.size == 1 else 'es'} ({pool_.config.start_method})"
        if pool_ is not None
        else "no process pool"
    )
    activities = ", ".join(found.activity_names) or "none"
    workflows = ", ".join(found.workflow_names) or "none"
    return (
        f"pool worker started: task queue {args.task_queue!r} on {conn.address} "
        f"namespace {conn.namespace!r} ({conn.tls_label}) | {procs} | "
        f"activities: {activities} | workflows: {workflows} | pid {os.getpid()}"
    )


def _worker_failure(err: BaseException) -> LaunchError:
    from .. import ChildStartError, WorkerConfigError

    if isinstance(err, (WorkerConfigError, ChildStartError)):
        return LaunchError(EXIT_CONFIG, one_line(err))
    return LaunchError(EXIT_FATAL, f"the worker stopped: {type(err).__name__}: {one_line(err)}")


async def _serve(args: argparse.Namespace, found: Discovered, conn: Connection) -> int:
    from .. import Worker, WorkerConfigError

    signals = Signals(asyncio.get_running_loop())
    try:
        try:
            client = await unless_signalled(
                connect(conn, identity=args.identity, runtime=_workflow_metrics_runtime(args)),
                signals,
            )
        except StoppedEarly:
            print(
                f"python -m pool run: {signals.last} received while connecting: stopped",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        options: dict[str, Any] = {
            "task_queue": args.task_queue,
            "activities": list(found.activities),
            "workflows": list(found.workflows),
            "max_concurrent_activities": args.max_concurrent_activities,
            "max_concurrent_activity_task_polls": args.max_activity_polls,
            "max_activities_per_second": args.max_activities_per_second,
            "max_task_queue_activities_per_second": args.max_task_queue_activities_per_second,
            "graceful_shutdown_timeout": timedelta(seconds=args.graceful_shutdown_timeout),
            "identity": args.identity,
            "build_id": args.build_id,
        }
        if found.activities:
            options["pool_config"] = pool_config(args)
            options["activity_type_limits"] = parse_type_limits(args.activity_type_limit)
        try:
            worker = Worker(client, **options)
        except (WorkerConfigError, ValueError, TypeError) as err:
            raise LaunchError(
                EXIT_CONFIG, f"the worker rejects this set-up: {one_line(err)}"
            ) from None
        metrics_server = _serve_pool_metrics(worker, args)
        try:
            return await _run_until_signalled(worker, signals, args, conn, found)
        finally:
            if metrics_server is not None:
                metrics_server.shutdown()
    finally:
        signals.close()


def _workflow_metrics_runtime(args: argparse.Namespace) -> Any:
    """A temporalio Runtime exporting its own metrics to Prometheus, or None."""
    if args.workflow_metrics_port is None:
        return None
    from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

    _require_port_free(args.metrics_address, args.workflow_metrics_port, "--workflow-metrics-port")
    bind = f"{args.metrics_address}:{args.workflow_metrics_port}"
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=bind)))


def _serve_pool_metrics(worker: Any, args: argparse.Namespace) -> Any:
    if args.metrics_port is None:
        return None
    from .. import serve_metrics

    _require_port_free(args.metrics_address, args.metrics_port, "--metrics-port")
    _, server = serve_metrics(worker, args.metrics_port, args.metrics_address)
    return server


def _require_port_free(address: str, port: int, flag: str) -> None:
    from ..testing import port_in_use

    require(
        not port_in_use(address, port),
        f"{flag} {port}: cannot listen on {address}:{port} (in use): pick a free port or "
        "another --metrics-address",
    )


def _running(worker: Any) -> int:
    running: int = worker.snapshot().running
    return running


def _activities(n: int) -> str:
    return f"{n} running activit{'y' if n == 1 else 'ies'}"


async def _run_until_signalled(
    worker: Any,
    signals: Signals,
    args: argparse.Namespace,
    conn: Connection,
    found: Discovered,
) -> int:
    run = asyncio.ensure_future(worker.run())
    ready = asyncio.ensure_future(worker.wait_ready())
    done = await first_done(ready, signals.first.wait())
    ready.cancel()
    if ready in done and not run.done():
        # After the children are up: a supervisor reading the banner can send work now.
        print(_banner(args, conn, found, worker), flush=True)
    done = await first_done(run, signals.first.wait())
    if run in done:
        err = run.exception()
        raise _worker_failure(err or RuntimeError("the worker stopped without being asked"))

    running = _running(worker)
    if running:
        logger.warning(
            "%s received: shutting down gracefully; %s may take up to %g s to finish. Send "
            "SIGTERM, SIGINT or SIGHUP again to cancel them at once",
            signals.last,
            _activities(running),
            args.graceful_shutdown_timeout,
        )
    else:
        logger.warning("%s received: shutting down (no activity running)", signals.last)
    shutdown = asyncio.ensure_future(worker.shutdown())
    done = await first_done(shutdown, signals.second.wait())
    if shutdown not in done:
        logger.warning(
            "%s received again: cancelling %s now", signals.last, _activities(_running(worker))
        )
        worker.cancel_activities()
    await shutdown
    try:
        await run
    except Exception as err:
        raise _worker_failure(err) from None
    logger.info("worker stopped")
    return EXIT_OK


def run_command(args: argparse.Namespace) -> int:
    """``python -m pool run``: check, discover, connect, serve until signalled."""
    check_run_args(args)
    pool_config(args)  # PoolConfig's own checks, before any import or connection
    found = discover(args.targets)
    require(
        bool(found.activities) or not _pool_flags_given(args),
        "the process-pool flags (--processes, --start-method, --max-*-per-child, "
        "--cancel-grace) need activities, but only workflows were found: drop those flags or "
        "also name the module with the activities",
    )
    conn = resolve_connection(args, os.environ)
    return asyncio.run(_serve(args, found, conn))
