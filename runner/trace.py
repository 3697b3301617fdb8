"""The OpenTelemetry trace context across the process hop, when OpenTelemetry is installed.

    parent: current_carrier()  ─ RunTask.trace_context (W3C traceparent...) ─▶
    child:  with attached(carrier): the activity runs; a span it opens (with a tracer
            provider the user set up in the child, e.g. in the pool's initializer) is a
            child of the parent's span (``RunActivity:<type>`` under TracingInterceptor)

Without OpenTelemetry nothing is sent and nothing is imported. The global propagator
(W3C trace context by default) does the encoding, so a user's own propagator applies.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["attached", "current_carrier"]


@functools.cache
def _otel() -> tuple[Any, Any] | None:
    """OpenTelemetry's context and propagate modules, looked up once (every task asks)."""
    try:
        from opentelemetry import context, propagate
    except ImportError:
        return None
    return context, propagate


def current_carrier() -> dict[str, str] | None:
    """The current span's context as headers, or None when there is none."""
    otel = _otel()
    if otel is None:
        return None
    carrier: dict[str, str] = {}
    otel[1].inject(carrier)
    return carrier or None


@contextmanager
def attached(carrier: dict[str, str] | None) -> Iterator[None]:
    """Make ``carrier``'s context current for the block (a no-op without one)."""
    otel = _otel() if carrier else None
    if otel is None:
        yield
        return
    context, propagate = otel
    token = context.attach(propagate.extract(carrier))
    try:
        yield
    finally:
        context.detach(token)
