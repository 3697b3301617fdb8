"""Range checks after parsing: a value that parses but cannot work is EXIT_CONFIG.

    argparse.Namespace ─▶ check_run_args / check_demo_args ─▶ nothing, or LaunchError(EXIT_CONFIG)
    ["TYPE=N", ...]    ─▶ parse_type_limits               ─▶ {"TYPE": N}

They run before any import of the user's modules and before any connection.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .errors import require

__all__ = ["check_demo_args", "check_run_args", "parse_type_limits"]


def parse_type_limits(values: Sequence[str]) -> dict[str, int]:
    """``["render_video=2", ...]`` -> ``{"render_video": 2}``; LaunchError when malformed."""
    limits: dict[str, int] = {}
    for value in values:
        name, sep, number = value.partition("=")
        require(
            bool(sep and name.strip() and number.strip().isdigit() and int(number) >= 1),
            f"--activity-type-limit {value!r}: write TYPE=N with N at least 1, "
            "e.g. --activity-type-limit render_video=2",
        )
        limits[name.strip()] = int(number)
    return limits


def check_run_args(args: argparse.Namespace) -> None:
    parse_type_limits(args.activity_type_limit)
    for flag, port in (
        ("--metrics-port", args.metrics_port),
        ("--workflow-metrics-port", args.workflow_metrics_port),
    ):
        require(
            port is None or 1 <= port <= 65535,
            f"{flag} must be a port number from 1 to 65535, got {port}",
        )
    require(
        args.metrics_port is None or args.metrics_port != args.workflow_metrics_port,
        "--metrics-port and --workflow-metrics-port must differ: the pool and temporalio "
        "each serve their own endpoint",
    )
    require(bool(args.task_queue.strip()), "--task-queue must not be empty: name the queue")
    # The pool's own options (--processes, --max-*-per-child, --crash-loop-*,
    # --cancel-grace) are checked by PoolConfig itself (pool_config in run.py).
    for flag, value in (
        ("--max-concurrent-activities", args.max_concurrent_activities),
        ("--max-activity-polls", args.max_activity_polls),
    ):
        require(
            value is None or value >= 1,
            f"{flag} must be at least 1, got {value}: pass a positive value",
        )
    for flag, value in (
        ("--max-activities-per-second", args.max_activities_per_second),
        ("--max-task-queue-activities-per-second", args.max_task_queue_activities_per_second),
    ):
        require(
            value is None or value > 0,
            f"{flag} must be positive, got {value}: leave it out for no limit",
        )
    timeout = args.graceful_shutdown_timeout
    require(
        timeout is None or timeout >= 0,
        f"--graceful-shutdown-timeout must not be negative, got {timeout}",
    )


def check_demo_args(args: argparse.Namespace) -> None:
    for flag, value in (
        ("--processes", args.processes),
        ("--workflows", args.workflows),
        ("--activities-per-workflow", args.activities_per_workflow),
        ("--work-ms", args.work_ms),
    ):
        require(value is None or value >= 1, f"{flag} must be at least 1, got {value}")
