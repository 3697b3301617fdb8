"""A child that traces: its initializer sets up OpenTelemetry with an in-memory exporter,
and the activity opens a span and returns what the exporter recorded (module level: it
runs in a child process)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import activity, workflow

_EXPORTER: Any = None


def setup_tracing() -> None:
    """The pool's initializer: a tracer provider for this child."""
    global _EXPORTER
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    _EXPORTER = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)


@activity.defn
def traced_work() -> dict[str, Any]:
    from opentelemetry import trace

    with trace.get_tracer(__name__).start_as_current_span("child-work"):
        pass
    [span] = [s for s in _EXPORTER.get_finished_spans() if s.name == "child-work"]
    _EXPORTER.clear()
    return {
        "trace_id": span.context.trace_id,
        "parent_span_id": span.parent.span_id if span.parent else None,
    }


@workflow.defn
class RunTraced:
    @workflow.run
    async def run(self) -> dict[str, Any]:
        return await workflow.execute_activity(
            traced_work, start_to_close_timeout=timedelta(seconds=30)
        )
