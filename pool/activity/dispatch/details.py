"""Heartbeat details on their way from an activity to the heartbeat manager.

    activity.heartbeat() in this process ─▶ from_parent(): values ─▶ payloads
    a child's shipped details (payloads) ─▶ from_child() ─┐
    a child's newest details in its TaskDone ─▶ final() ──┤
        an outbound interceptor registered: decoded, through its heartbeat()
        ─▶ from_parent(); otherwise kept as the task's newest details
    ─▶ the codec (a task on the loop when one is set) ─▶ HeartbeatManager.record()

Details that cannot be converted or decoded fail the activity: the error is kept on
the task (the outcome reports it) and the task is cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import temporalio.converter
from temporalio.api.common.v1 import Payloads

import runner.context
from pool.activity.heartbeats import HeartbeatManager

from .codec import encode_payloads
from .task import Details, Task

__all__ = ["HeartbeatDetails"]


class HeartbeatDetails:
    def __init__(
        self,
        data_converter: temporalio.converter.DataConverter,
        heartbeats: HeartbeatManager,
        tasks: Mapping[bytes, Task],
        cancel: Callable[[bytes, Details, str], None],
    ) -> None:
        self._dc = data_converter
        self._heartbeats = heartbeats
        self._tasks = tasks  # the dispatcher's tasks in flight, by token
        self._cancel = cancel
        self._encoding: set[asyncio.Task[None]] = set()

    def from_child(self, token: bytes, data: bytes) -> None:
        """Details a child shipped through the shared state manager (serialised Payloads)."""
        task = self._tasks.get(token)
        if task is not None:
            self._child_details(task, Payloads.FromString(data), record=True)

    def final(self, task: Task, payloads: Payloads) -> None:
        """A child's newest details, sent with its answer: kept for the final report."""
        self._child_details(task, payloads, record=False)

    def from_parent(self, task: Task, details: tuple[Any, ...]) -> None:
        """The end of the outbound chain: ``activity.heartbeat()`` in this process, or a
        child's details that passed through an interceptor."""
        if self._tasks.get(task.token) is not task:
            return
        try:
            payloads = Payloads()
            payloads.payloads.extend(self._dc.payload_converter.to_payloads(details))
        except Exception as err:
            self._fail(task, err, "its heartbeat details could not be converted")
            return
        task.last_heartbeat = payloads
        self._record(task, payloads)

    def _child_details(self, task: Task, payloads: Payloads, *, record: bool) -> None:
        """When an interceptor wraps the outbound side, a child's details pass through its
        ``heartbeat()`` as Python values, as stock's do; otherwise the payloads go straight
        to the heartbeat manager (``record``) or the final report."""
        innermost = task.innermost
        if innermost is not None and innermost.intercepted and innermost.heartbeat is not None:
            try:
                details = self._dc.payload_converter.from_payloads(list(payloads.payloads))
            except Exception as err:
                self._fail(task, err, "its heartbeat details could not be decoded")
                return
            with runner.context.activated(task.context):
                innermost.heartbeat(*details)
            return
        task.last_heartbeat = payloads
        if record:
            self._record(task, payloads)

    def _fail(self, task: Task, err: Exception, reason: str) -> None:
        task.heartbeat_error = err
        self._cancel(task.token, Details(), reason)

    def _record(self, task: Task, payloads: Payloads) -> None:
        if self._dc.payload_codec is None:
            self._heartbeats.record(task.token, payloads, task.throttle)
            return

        async def encode_then_record() -> None:
            encoded = Payloads()
            encoded.CopyFrom(payloads)
            await encode_payloads(self._dc, encoded)
            if task.token in self._tasks:
                self._heartbeats.record(task.token, encoded, task.throttle)

        pending = asyncio.create_task(encode_then_record())
        self._encoding.add(pending)
        pending.add_done_callback(self._encoding.discard)
