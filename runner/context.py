"""The one place that touches temporalio's private activity context.

``temporalio.activity.info()``, ``heartbeat()``, ``is_cancelled()``,
``cancellation_details()``, ``shield_thread_cancel_exception()`` and friends all
read a contextvar holding ``temporalio.activity._Context``. That class is private,
so every use of it lives here, the supported ``temporalio`` range is pinned in
pyproject.toml, and ``tests/runner/test_context_shape.py`` fails loudly when a
release changes the shape we rely on.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import temporalio.activity
import temporalio.common
import temporalio.converter
import temporalio.exceptions

__all__ = [
    "CONTEXT_FIELDS",
    "CancelRaiser",
    "ChildContexts",
    "CompleteAsyncError",
    "activated",
    "context_shape",
    "current_context",
    "enter_activity_context",
    "exit_activity_context",
    "log_fields",
    "narrows_per_task",
    "new_cancellation_holder",
    "route_context_callables",
    "serialization_context",
]

# The _Context fields we set, in the shape temporalio 1.35 declares them.
CONTEXT_FIELDS = (
    "info",
    "heartbeat",
    "cancelled_event",
    "worker_shutdown_event",
    "shield_thread_cancel_exception",
    "payload_converter_class_or_instance",
    "runtime_metric_meter",
    "client",
    "cancellation_details",
)


class CancelRaiser:
    """Decides when ``CancelledError`` may be raised inside the activity's own code.

    One per running activity thread: in a child the main thread (the cancel signal's
    handler raises), in the parent a ``ThreadPoolExecutor`` thread
    (``pool.activity.threads`` injects the exception). Whoever delivers a cancel calls
    :meth:`request`; the thread that raises calls :meth:`take` to learn whether to
    raise now; a shielded block defers the raise to its exit, as the stock SDK does for
    thread activities. Once taken, a cancel is not raised again until :meth:`arm`.

    The lock is reentrant: the child's signal handler calls :meth:`take` on the very
    thread that may hold it (inside :meth:`shielded`).
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self._pending = False
        self._armed = False

    @property
    def armed(self) -> bool:
        """Whether a cancel may be raised now (the activity's code runs)."""
        return self._armed

    def arm(self) -> None:
        with self._lock:
            self._depth = 0
            self._pending = False
            self._armed = True

    def disarm(self) -> None:
        with self._lock:
            self._armed = False
            self._pending = False

    def request(self) -> bool:
        """A cancel arrived. True when the activity's thread should be interrupted now."""
        with self._lock:
            if not self._armed:
                return False
            self._pending = True
            return self._depth == 0

    def take(self) -> bool:
        """Consume a pending cancel if it may land now (no shield is open)."""
        with self._lock:
            if self._armed and self._pending and self._depth == 0:
                self._pending = False
                self._armed = False
                return True
            return False

    @contextmanager
    def shielded(self) -> Iterator[None]:
        with self._lock:
            self._depth += 1
        try:
            yield None
        finally:
            with self._lock:
                self._depth -= 1
                fire = self.take()
            if fire:
                raise temporalio.exceptions.CancelledError("Cancelled")


def enter_activity_context(
    *,
    info: temporalio.activity.Info,
    heartbeat: Callable[..., None],
    cancelled_event: threading.Event,
    worker_shutdown_event: threading.Event,
    shield: Callable[[], AbstractContextManager[None]] | None,
    payload_converter: temporalio.converter.PayloadConverter,
    cancellation_details: temporalio.activity._ActivityCancellationDetailsHolder,
    async_cancelled_event: asyncio.Event | None = None,
    async_worker_shutdown_event: asyncio.Event | None = None,
    metric_meter: temporalio.common.MetricMeter | None = None,
    client: Any = None,
) -> contextvars.Token[Any]:
    """Set the activity context for the code that runs next in this thread (or task).

    Children pass only the thread events; async activities in the parent also
    pass the asyncio events, the metric meter and the client, as the SDK does.
    """
    return _set_context(
        info=lambda: info,
        heartbeat=heartbeat,
        cancelled=temporalio.common._CompositeEvent(
            thread_event=cancelled_event, async_event=async_cancelled_event
        ),
        worker_shutdown=temporalio.common._CompositeEvent(
            thread_event=worker_shutdown_event, async_event=async_worker_shutdown_event
        ),
        shield=shield,
        payload_converter=payload_converter,
        cancellation_details=cancellation_details,
        metric_meter=metric_meter,
        client=client,
    )


def _set_context(
    *,
    info: Callable[[], temporalio.activity.Info],
    heartbeat: Callable[..., None],
    cancelled: temporalio.common._CompositeEvent,
    worker_shutdown: temporalio.common._CompositeEvent,
    shield: Callable[[], AbstractContextManager[None]] | None,
    payload_converter: temporalio.converter.PayloadConverter,
    cancellation_details: temporalio.activity._ActivityCancellationDetailsHolder,
    metric_meter: temporalio.common.MetricMeter | None,
    client: Any,
) -> contextvars.Token[Any]:
    """Build temporalio's ``_Context`` (every field in ``CONTEXT_FIELDS``) and set it."""
    context = temporalio.activity._Context(
        info=info,
        heartbeat=heartbeat,
        cancelled_event=cancelled,
        worker_shutdown_event=worker_shutdown,
        shield_thread_cancel_exception=shield,
        payload_converter_class_or_instance=payload_converter,
        runtime_metric_meter=metric_meter,
        client=client,
        cancellation_details=cancellation_details,
    )
    return temporalio.activity._Context.set(context)


class ObservedEvent:
    """The child's cancel event as the activity sees it (``activity.is_cancelled()``,
    ``wait_for_cancelled_sync()``), noting whether the activity looked at it: an
    activity that does handles cancellation itself, as stock process-pool activities
    must (the child then does not raise ``CancelledError`` into it)."""

    def __init__(self, event: threading.Event) -> None:
        self._event = event
        self.observed = False

    def is_set(self) -> bool:
        self.observed = True
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        self.observed = True
        return self._event.wait(timeout)

    def set(self) -> None:
        self._event.set()


class ChildContexts:
    """Activity contexts for a child's tasks, which run one after another.

    The child reuses one cancel event (cleared between tasks) and one shutdown event,
    so what wraps them for ``_Context`` is built once, not per task.
    """

    def __init__(
        self, cancelled_event: threading.Event, worker_shutdown_event: threading.Event
    ) -> None:
        self.observed = ObservedEvent(cancelled_event)
        self._cancelled = temporalio.common._CompositeEvent(
            thread_event=self.observed,  # type: ignore[arg-type]
            async_event=None,
        )
        self._worker_shutdown = temporalio.common._CompositeEvent(
            thread_event=worker_shutdown_event, async_event=None
        )

    def enter(
        self,
        *,
        info: Callable[[], temporalio.activity.Info],
        heartbeat: Callable[..., None],
        shield: Callable[[], AbstractContextManager[None]] | None,
        payload_converter: temporalio.converter.PayloadConverter,
        cancellation_details: temporalio.activity._ActivityCancellationDetailsHolder,
        metric_meter: temporalio.common.MetricMeter | None = None,
    ) -> contextvars.Token[Any]:
        """Like :func:`enter_activity_context` with the child's events. ``info`` is
        what ``activity.info()`` calls (the child unpacks the Info on first use);
        ``metric_meter`` is the child's buffered meter (runner.metrics)."""
        self.observed.observed = False
        return _set_context(
            info=info,
            heartbeat=heartbeat,
            cancelled=self._cancelled,
            worker_shutdown=self._worker_shutdown,
            shield=shield,
            payload_converter=payload_converter,
            cancellation_details=cancellation_details,
            metric_meter=metric_meter,
            client=None,
        )


def current_context() -> Any:
    """The activity context set in this task (or thread), to re-enter it elsewhere."""
    return temporalio.activity._Context.current()


@contextmanager
def activated(context: Any) -> Iterator[None]:
    """Run a block (a loop callback, say) inside an activity context taken earlier."""
    token = temporalio.activity._Context.set(context)
    try:
        yield None
    finally:
        temporalio.activity._Context.reset(token)


def route_context_callables(
    info: Callable[[], temporalio.activity.Info], heartbeat: Callable[..., None]
) -> None:
    """Point the current context's ``info()`` and ``heartbeat()`` at the outbound
    interceptor chain (set in place: interceptors may hold the context)."""
    context = temporalio.activity._Context.current()
    context.info = info
    context.heartbeat = heartbeat


def log_fields(info: temporalio.activity.Info) -> dict[str, Any]:
    """The activity's fields for log records: the keys temporalio's activity logger uses."""
    return {
        "activity_id": info.activity_id,
        "activity_type": info.activity_type,
        "attempt": info.attempt,
        "namespace": info.namespace,
        "task_queue": info.task_queue,
        "workflow_id": info.workflow_id,
        "workflow_run_id": info.workflow_run_id,
        "workflow_type": info.workflow_type,
    }


def exit_activity_context(token: contextvars.Token[Any]) -> None:
    temporalio.activity._Context.reset(token)


def new_cancellation_holder() -> temporalio.activity._ActivityCancellationDetailsHolder:
    return temporalio.activity._ActivityCancellationDetailsHolder()


def context_shape() -> tuple[str, ...]:
    """The field names of the installed ``_Context``, for the shape test."""
    return tuple(f.name for f in dataclasses.fields(temporalio.activity._Context))


# Raised by ``activity.raise_complete_async()``: the activity completes later by token.
CompleteAsyncError: type[BaseException] = temporalio.activity._CompleteAsyncError


def serialization_context(
    info: temporalio.activity.Info,
) -> temporalio.converter.ActivitySerializationContext:
    """The data converter's context for the activity ``info`` describes (what
    temporalio's worker narrows its converter with)."""
    return temporalio.converter.ActivitySerializationContext(
        namespace=info.namespace,
        activity_id=info.activity_id,
        activity_type=info.activity_type,
        activity_task_queue=info.task_queue,
        workflow_id=info.workflow_id,
        workflow_type=info.workflow_type,
        is_local=info.is_local,
    )


# Any activity's context: a converter that gives itself back for this one does so for
# every activity (the default converter's case).
_PROBE = temporalio.converter.ActivitySerializationContext(
    namespace="",
    activity_id="",
    activity_type="",
    activity_task_queue="",
    workflow_id=None,
    workflow_type=None,
    is_local=False,
)


def narrows_per_task(converter: temporalio.converter.DataConverter) -> bool:
    """Whether ``converter`` changes with an activity's serialization context (when it
    does not, the per-task ``with_context`` can be skipped)."""
    return converter.with_context(_PROBE) is not converter
