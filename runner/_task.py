"""One task in the child, from the PackedTask to its TaskDone (no threads, no signals).

    PackedTask ─▶ TaskRun: Info unpacked on first ask, converter narrowed to the task,
                  Beats for its heartbeats
              ─▶ call(): decode what the child decodes (details, arguments), run the fn
              ─▶ done(outcome, value, failure, cpu): encode the result, the last
                 heartbeat and any heartbeat error ─▶ TaskDone

The child's loop (runner._child) owns the cancel protocol around ``call()``; the
decisions here are pure functions, unit-tested in tests/runner/test_task.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

import temporalio.activity
import temporalio.converter
import temporalio.exceptions

from . import context as _context
from . import metrics as _metrics
from . import trace as _trace
from ._conversion import (
    ResultError,
    decode_args,
    decode_heartbeat,
    encode_result,
    failure_bytes,
    heartbeat_conversion_error,
)
from ._shipper import Beats, Shipper
from .messages import ActivitySpec, PackedTask, TaskDone

__all__ = ["TaskRun", "error_outcome", "take_early_cancel"]


def error_outcome(err: BaseException, cancel_requested: bool) -> Literal["cancelled", "failed"]:
    """How a task that raised ``err`` ended: a ``CancelledError`` is a cancellation
    only when one was asked for; anything else (its own ``CancelledError`` too) fails."""
    if isinstance(err, temporalio.exceptions.CancelledError) and cancel_requested:
        return "cancelled"
    return "failed"


def take_early_cancel(early: dict[int, Any], task_id: int) -> tuple[Any | None, dict[int, Any]]:
    """The cancel that arrived for ``task_id`` before it started (None if none), and
    the early cancels left to keep: those of later tasks. Cancels of earlier tasks
    are dropped: those ran elsewhere, or never will."""
    mine = early.get(task_id)
    return mine, {k: v for k, v in early.items() if k > task_id}


class TaskRun:
    """One task's state in the child: what its activity context reads, and its end."""

    def __init__(
        self,
        task: PackedTask,
        spec: ActivitySpec,
        converter: temporalio.converter.DataConverter,
        contextual: bool,
        shipper: Shipper,
    ) -> None:
        self.task = task
        self.spec = spec
        self._shipper = shipper
        # The Info is unpacked when first asked for (activity.info(), a log record),
        # once; one a task never asks for costs nothing.
        self._unpacked: dict[str, temporalio.activity.Info] = {}
        # Heartbeat details of an earlier attempt that this child decodes (in call()).
        self._details: list[Any] | None = None
        if contextual:
            converter = converter.with_context(_context.serialization_context(self.info()))
        self.converter = converter
        self.beats = Beats(
            token=task.task_token,
            interval=task.heartbeat_interval,
            converter=converter.payload_converter,
        )
        self.raise_enabled = not spec.no_thread_cancel_exception
        self.holder = _context.new_cancellation_holder()
        self.recorded: list[_metrics.MetricEvent] = []

    def info(self) -> temporalio.activity.Info:
        got = self._unpacked.get("info")
        if got is None:
            fresh = self.task.unpack_info()
            if self._details is not None:
                fresh = dataclasses.replace(fresh, heartbeat_details=self._details)
            # setdefault: two threads asking at once both get the one Info.
            got = self._unpacked.setdefault("info", fresh)
        return got

    def heartbeat(self, *details: Any) -> None:
        self._shipper.heartbeat(self.beats, details)

    def call(self) -> Any:
        """Decode what the parent left to the child, then run the activity."""
        task = self.task
        args: Sequence[Any] = task.args
        if task.encoded_heartbeat is not None:
            self._details = decode_heartbeat(self.converter, task.encoded_heartbeat)
            self._unpacked.pop("info", None)  # unpacked before the details were known
        if task.encoded_args is not None:
            args = decode_args(self.converter, task.encoded_args, self.spec.arg_types)
        with _trace.attached(task.trace_context):
            return self.spec.fn(*args)

    def done(self, outcome: str, value: Any, failure: bytes | None, cpu: float) -> TaskDone:
        """The TaskDone for how the task ended; a result the converter refuses fails it."""
        result: bytes | None = None
        if outcome == "completed" and self.task.encode_result:
            encoded = encode_result(self.converter, value)
            value = None
            if isinstance(encoded, ResultError):
                outcome, failure = "failed", failure_bytes(self.converter, encoded.error)
            else:
                result = encoded
        last_heartbeat, heartbeat_error = self._last_heartbeat()
        return TaskDone(
            task_id=self.task.task_id,
            outcome=outcome,  # type: ignore[arg-type]
            value=value,
            failure=failure,
            last_heartbeat=last_heartbeat,
            heartbeat_error=heartbeat_error,
            cpu_seconds=cpu,
            metrics=self.recorded or None,
            result=result,
        )

    def _last_heartbeat(self) -> tuple[bytes | None, bytes | None]:
        """The newest heartbeat details, converted; or the failure converting them."""
        beats = self.beats
        error = beats.error
        if beats.latest is not None and error is None:
            try:
                return beats.convert(beats.latest), None
            except Exception as err:
                error = err
        if error is None:
            return None, None
        return None, failure_bytes(self.converter, heartbeat_conversion_error(error))
