"""Activities and workflows used by the worker tests (module level: they cross
into child processes)."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError


@dataclass
class Point:
    x: int
    y: int


@activity.defn
def pid_and_square(n: int) -> list[int]:
    """Returns [n*n, pid] so a test can tell which process ran it."""
    return [n * n, os.getpid()]


@activity.defn
def add_points(a: Point, b: Point) -> Point:
    return Point(a.x + b.x, a.y + b.y)


@activity.defn
def describe_info() -> dict:
    info = activity.info()
    activity.logger.info("describing info")
    return {
        "activity_type": info.activity_type,
        "attempt": info.attempt,
        "task_queue": info.task_queue,
        "workflow_id": info.workflow_id,
        "in_child": os.getpid(),
        "converter": type(activity.payload_converter()).__name__,
    }


def _make_closure(offset: int):
    @activity.defn(name="closure_add")
    def closure_add(n: int) -> list[int]:
        return [n + offset, os.getpid()]

    return closure_add


closure_add = _make_closure(1000)

lambda_activity = activity.defn(name="lambda_triple")(lambda n: [n * 3, os.getpid()])


class Scaler:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    @activity.defn(name="bound_scale")
    def scale(self, n: int) -> list[int]:
        return [n * self.factor, os.getpid()]


bound_scale = Scaler(7).scale


@activity.defn
async def async_double(n: int) -> list[int]:
    await asyncio.sleep(0)
    return [n * 2, os.getpid()]


@activity.defn
def fail_application(kind: str) -> None:
    if kind == "app":
        raise ApplicationError("boom", {"why": "test"}, type="MyError", non_retryable=True)
    raise ValueError("plain failure")


@activity.defn
def sleep_then_return(seconds: float, marker: str) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)
    return marker


@activity.defn
def record_concurrency(path: str, hold: float) -> int:
    """Appends +1/-1 lines around a hold, so a test can compute max concurrency."""
    with open(path, "a") as f:
        f.write(f"+{os.getpid()}\n")
    time.sleep(hold)
    with open(path, "a") as f:
        f.write(f"-{os.getpid()}\n")
    return os.getpid()


@workflow.defn
class RunOne:
    """Runs one activity by name with the given args and returns its result."""

    @workflow.run
    async def run(self, name: str, args: list, local: bool = False) -> Any:
        retry = RetryPolicy(maximum_attempts=1)
        if local:
            return await workflow.execute_local_activity(
                name, args=args, start_to_close_timeout=timedelta(seconds=30), retry_policy=retry
            )
        return await workflow.execute_activity(
            name, args=args, start_to_close_timeout=timedelta(seconds=60), retry_policy=retry
        )


@workflow.defn
class FanOut:
    @workflow.run
    async def run(self, name: str, count: int) -> list:
        return list(
            await asyncio.gather(
                *[
                    workflow.execute_activity(
                        name, args=[i], start_to_close_timeout=timedelta(seconds=60)
                    )
                    for i in range(count)
                ]
            )
        )


def _record_typed(kind: str, path: str, hold: float) -> int:
    with open(path, "a") as f:
        f.write(f"+{kind}\n")
    time.sleep(hold)
    with open(path, "a") as f:
        f.write(f"-{kind}\n")
    return os.getpid()


@activity.defn
def render_video(path: str, hold: float) -> int:
    return _record_typed("render", path, hold)


@activity.defn
def resize_image(path: str, hold: float) -> int:
    return _record_typed("resize", path, hold)


@activity.defn
def started_at() -> float:
    """When this activity started (CLOCK_MONOTONIC is system-wide on Linux)."""
    return time.monotonic()
