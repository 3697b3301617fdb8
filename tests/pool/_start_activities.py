"""Activities and initializers for the child start tests (module level: they cross into
child processes). An initializer's state lives in this module's globals, where the
activities of the same child read it."""

from __future__ import annotations

import os
from typing import Any

from temporalio import activity

_state: dict[str, Any] = {}


def remember(key: str, value: Any) -> None:
    """An initializer: store ``value`` for the activities of this child."""
    _state[key] = value
    _state["initialized_in"] = os.getpid()


def fail_to_initialize(message: str) -> None:
    raise RuntimeError(message)


def fail_when_file_exists(path: str) -> None:
    """Initializes fine until ``path`` exists (a replacement child then fails to start)."""
    if os.path.exists(path):
        raise RuntimeError(f"refusing to start: {path} exists")


@activity.defn
def initialized_state() -> dict[str, Any]:
    return {**_state, "pid": os.getpid()}


@activity.defn
def child_pid() -> int:
    return os.getpid()


@activity.defn
def exits_until_attempt(last: int) -> int:
    """Ends its child (os._exit) on every attempt before ``last``; then returns it."""
    attempt = activity.info().attempt
    if attempt < last:
        os._exit(3)
    return attempt


def block_while_fifo_exists(path: str) -> None:
    """Initializes at once, except while ``path`` exists (a FIFO no one writes to):
    then opening it blocks, and the child stays starting until it is killed."""
    if os.path.exists(path):
        with open(path, "rb"):
            pass
