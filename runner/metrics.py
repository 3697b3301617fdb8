"""``activity.metric_meter()`` inside a child: record here, replay on the parent's meter.

    activity code ─ counter.add / histogram.record / gauge.set ─▶ BufferedMeter
        appends (kind, name, description, unit, attributes, value) to the task's list
        (no I/O, no lock: the activity's own thread)
    ─ TaskDone.metrics (one batch per task) ─▶ parent: replay(meter, events)
        instruments created once on the runtime's meter, each value recorded with its
        attributes (the activity's namespace, task_queue, activity_type, and the
        user's own)

A value outside what the runtime accepts (a negative counter add, an attribute of the
wrong type) raises in the activity, as the runtime's meter would.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, ClassVar, cast

import temporalio.common

__all__ = ["BufferedMeter", "MetricEvent", "replay"]

# (kind, name, description, unit, attributes, value)
MetricEvent = tuple[str, str, str | None, str | None, dict[str, Any], Any]

_ATTRIBUTE_TYPES = (str, int, float, bool)


def _check_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in attributes.items():
        if not isinstance(key, str) or not isinstance(value, _ATTRIBUTE_TYPES):
            raise TypeError(f"Metric attribute {key!r}: {value!r} is not a str, int, float or bool")
    return dict(attributes)


class _Metric:
    kind: ClassVar[str]

    def __init__(
        self,
        sink: list[MetricEvent],
        name: str,
        description: str | None,
        unit: str | None,
        attributes: dict[str, Any],
    ) -> None:
        self._sink = sink
        self._name = name
        self._description = description
        self._unit = unit
        self._attributes = attributes

    @property
    def name(self) -> str:
        return self._name

    @property
    def description(self) -> str | None:
        return self._description

    @property
    def unit(self) -> str | None:
        return self._unit

    def with_additional_attributes(self, additional_attributes: Mapping[str, Any]) -> Any:
        merged = {**self._attributes, **_check_attributes(additional_attributes)}
        return type(self)(self._sink, self._name, self._description, self._unit, merged)

    def _append(self, value: Any, additional: Mapping[str, Any] | None) -> None:
        if isinstance(value, timedelta):
            if value < timedelta():
                raise ValueError("Metric value must be non-negative")
        elif value < 0:
            raise ValueError("Metric value must be non-negative")
        attributes = self._attributes
        if additional:
            attributes = {**attributes, **_check_attributes(additional)}
        self._sink.append((self.kind, self._name, self._description, self._unit, attributes, value))


class _Counter(_Metric, temporalio.common.MetricCounter):
    kind = "counter"

    def add(self, value: int, additional_attributes: Any = None) -> None:
        self._append(value, additional_attributes)


class _Histogram(_Metric, temporalio.common.MetricHistogram):
    kind = "histogram"

    def record(self, value: int, additional_attributes: Any = None) -> None:
        self._append(value, additional_attributes)


class _HistogramFloat(_Metric, temporalio.common.MetricHistogramFloat):
    kind = "histogram_float"

    def record(self, value: float, additional_attributes: Any = None) -> None:
        self._append(value, additional_attributes)


class _HistogramTimedelta(_Metric, temporalio.common.MetricHistogramTimedelta):
    kind = "histogram_timedelta"

    def record(self, value: timedelta, additional_attributes: Any = None) -> None:
        self._append(value, additional_attributes)


class _Gauge(_Metric, temporalio.common.MetricGauge):
    kind = "gauge"

    def set(self, value: int, additional_attributes: Any = None) -> None:
        self._append(value, additional_attributes)


class _GaugeFloat(_Metric, temporalio.common.MetricGaugeFloat):
    kind = "gauge_float"

    def set(self, value: float, additional_attributes: Any = None) -> None:
        self._append(value, additional_attributes)


_KINDS: dict[str, type[_Metric]] = {
    cls.kind: cls
    for cls in (_Counter, _Histogram, _HistogramFloat, _HistogramTimedelta, _Gauge, _GaugeFloat)
}


class BufferedMeter(temporalio.common.MetricMeter):
    """A meter whose instruments append to ``sink`` (the current task's batch)."""

    def __init__(self, sink: list[MetricEvent], attributes: dict[str, Any] | None = None):
        self._sink = sink
        self._attributes = attributes or {}

    def _make(self, kind: str, name: str, description: str | None, unit: str | None) -> Any:
        return _KINDS[kind](self._sink, name, description, unit, dict(self._attributes))

    def create_counter(
        self, name: str, description: str | None = None, unit: str | None = None
    ) -> temporalio.common.MetricCounter:
        return cast(temporalio.common.MetricCounter, self._make("counter", name, description, unit))

    def create_histogram(
        self, name: str, description: str | None = None, unit: str | None = None
    ) -> temporalio.common.MetricHistogram:
        return cast(
            temporalio.common.MetricHistogram, self._make("histogram", name, description, unit)
        )

    def create_histogram_float(
        self, name: str, description: str | None = None, unit: str | None = None
    ) -> temporalio.common.MetricHistogramFloat:
        return cast(
            temporalio.common.MetricHistogramFloat,
            self._make("histogram_float", name, description, unit),
        )

    def create_histogram_timedelta(
        self, name: str, description: str | None = None, unit: str | None = None
    ) -> temporalio.common.MetricHistogramTimedelta:
        return cast(
            temporalio.common.MetricHistogramTimedelta,
            self._make("histogram_timedelta", name, description, unit),
        )

    def create_gauge(
        self, name: str, description: str | None = None, unit: str | None = None
    ) -> temporalio.common.MetricGauge:
        return cast(temporalio.common.MetricGauge, self._make("gauge", name, description, unit))

    def create_gauge_float(
        self, name: str, description: str | None = None, unit: str | None = None
    ) -> temporalio.common.MetricGaugeFloat:
        return cast(
            temporalio.common.MetricGaugeFloat, self._make("gauge_float", name, description, unit)
        )

    def with_additional_attributes(
        self, additional_attributes: Mapping[str, Any]
    ) -> temporalio.common.MetricMeter:
        merged = {**self._attributes, **_check_attributes(additional_attributes)}
        return BufferedMeter(self._sink, merged)


_CREATE = {
    "counter": "create_counter",
    "histogram": "create_histogram",
    "histogram_float": "create_histogram_float",
    "histogram_timedelta": "create_histogram_timedelta",
    "gauge": "create_gauge",
    "gauge_float": "create_gauge_float",
}
_RECORD = {"counter": "add", "gauge": "set", "gauge_float": "set"}


def replay(
    meter: temporalio.common.MetricMeter,
    events: list[MetricEvent],
    instruments: dict[tuple[str, str, str | None, str | None], Any],
) -> None:
    """Record a child's batch on ``meter`` (in the parent); ``instruments`` caches what
    was created, keyed by kind, name, description and unit."""
    for kind, name, description, unit, attributes, value in events:
        key = (kind, name, description, unit)
        instrument = instruments.get(key)
        if instrument is None:
            instrument = getattr(meter, _CREATE[kind])(name, description, unit)
            instruments[key] = instrument
        getattr(instrument, _RECORD.get(kind, "record"))(value, attributes or None)
