"""Local deadlines: a task whose timeout passed is cancelled as timed out.

    Info's start-to-close timeout ─▶ armed as the task is decoded, counted from when
        the poll returned it, no buffer
    Info's heartbeat timeout ─▶ armed then, re-armed after every heartbeat RPC, with
        sdk-core's buffer for the RPC's own latency
    a timer fires ─▶ cancel(token, Details(not_found, timed_out), reason)

The timers are the task's (``Task.timers``); the dispatcher cancels what is left of
them when the task is done.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import temporalio.activity

from .task import Details, Task

__all__ = ["Deadlines"]


class Deadlines:
    def __init__(
        self,
        buffer: float,
        cancel: Callable[[bytes, Details, str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._buffer = buffer  # local_timeout_buffer, seconds
        self._cancel = cancel
        self._clock = clock

    def arm_for(self, task: Task, info: temporalio.activity.Info) -> None:
        """Both deadlines the task's Info sets (none when its timeouts are unset)."""
        if info.start_to_close_timeout:
            self.arm(
                task,
                "start_to_close",
                info.start_to_close_timeout.total_seconds(),
                "start-to-close timeout",
                since=task.received,
            )
        self.heartbeat_sent(task)

    def heartbeat_sent(self, task: Task) -> None:
        """(Re-)arm the heartbeat deadline, from now."""
        if task.info is not None and task.info.heartbeat_timeout:
            seconds = task.info.heartbeat_timeout.total_seconds()
            self.arm(task, "heartbeat", seconds, "heartbeat timeout")

    def arm(
        self, task: Task, name: str, seconds: float, what: str, since: float | None = None
    ) -> None:
        """Cancel ``task`` as timed out ``seconds`` after ``since`` (a clock reading), or,
        without it, ``seconds`` + the buffer from now.

        The start-to-close deadline counts from when the task arrived, with no buffer:
        the server fails the attempt then, and a result after it is refused anyway, so
        the child's core is freed as early as possible. The heartbeat timeout, re-armed
        after each heartbeat RPC, keeps sdk-core's buffer for the RPC's own latency.
        """
        old = task.timers.pop(name, None)
        if old is not None:
            old.cancel()
        if since is None:
            delay = seconds + self._buffer
            reason = f"its {what} ({seconds:g} s + {self._buffer:g} s buffer) passed"
        else:
            delay = since + seconds - self._clock()
            reason = f"its {what} ({seconds:g} s since the worker received it) passed"
        loop = asyncio.get_running_loop()
        task.timers[name] = loop.call_later(
            delay, self._cancel, task.token, Details(not_found=True, timed_out=True), reason
        )
