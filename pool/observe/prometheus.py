"""Prometheus metrics for the activity side of a :class:`pool.Worker`.

Gauges and counters are read from the worker's live state when Prometheus
scrapes (slots, children, per-child CPU and RSS via psutil, outcome counts), on
the worker's loop (:mod:`pool.observe.health` runs the collection there);
the two histograms (schedule-to-start, run time) are observed as tasks run.
The workflow side's metrics come from temporalio's own runtime telemetry
(``temporalio.runtime.PrometheusConfig``) on a second endpoint; the launcher's
``--workflow-metrics-port`` sets that up.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .health import HealthServer

if TYPE_CHECKING:
    from ..supervisor import PoolSnapshot
    from ..worker import Worker
    from ..worker.snapshot import SlotsSnapshot, WorkerSnapshot

__all__ = ["PoolMetrics", "serve_metrics"]

# Buckets in seconds: CPU-heavy activities run from milliseconds to minutes.
_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


class PoolMetrics(Collector):
    """A Prometheus collector for one worker; register it once per registry."""

    def __init__(self, worker: Worker, registry: CollectorRegistry | None = None) -> None:
        self._worker = worker
        self.registry = registry or CollectorRegistry()
        self.schedule_to_start = Histogram(
            "pool_activity_schedule_to_start_seconds",
            "Time from the attempt being scheduled to the task being started",
            ["activity_type"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.run_time = Histogram(
            "pool_activity_run_seconds",
            "Time an activity ran in this worker (decode to outcome)",
            ["activity_type"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        worker.observe_tasks(
            on_schedule_to_start=lambda t, s: self.schedule_to_start.labels(t).observe(s),
            on_run_time=lambda t, s: self.run_time.labels(t).observe(s),
        )
        self.registry.register(self)

    def collect(self) -> Iterator[Any]:
        snapshot = self._worker.snapshot(sample=True)
        if snapshot.slots is not None:
            yield from _slot_families(snapshot.slots)
        if snapshot.dispatching:
            yield from _task_families(snapshot)
        if snapshot.pool is not None:
            yield from _child_families(snapshot.pool)
            yield from _supervision_families(snapshot.pool)


def _slot_families(slots: SlotsSnapshot) -> Iterator[Any]:
    used = GaugeMetricFamily("pool_activity_slots_used", "Activity slots in use")
    used.add_metric([], slots.used)
    yield used
    if slots.free is not None:  # a custom supplier's free slots are its own
        free = GaugeMetricFamily("pool_activity_slots_free", "Activity slots free")
        free.add_metric([], slots.free)
        yield free


def _task_families(snapshot: WorkerSnapshot) -> Iterator[Any]:
    started = CounterMetricFamily(
        "pool_activity_tasks_started",
        "Tasks started, by activity type",
        labels=["activity_type"],
    )
    for activity_type, count in sorted(snapshot.started.items()):
        started.add_metric([activity_type], count)
    yield started
    outcomes = CounterMetricFamily(
        "pool_activity_tasks",
        "Tasks ended, by activity type and outcome (completed, failed, cancelled, "
        "killed, crashed, timed_out, not_found, complete_async)",
        labels=["activity_type", "outcome"],
    )
    for (activity_type, outcome), count in sorted(snapshot.outcomes.items()):
        outcomes.add_metric([activity_type, outcome], count)
    yield outcomes
    running = GaugeMetricFamily("pool_activity_tasks_running", "Tasks in flight")
    running.add_metric([], snapshot.running)
    yield running
    beats = CounterMetricFamily(
        "pool_heartbeat_rpcs", "RecordActivityTaskHeartbeat calls sent", labels=["result"]
    )
    errors = snapshot.heartbeat_errors
    beats.add_metric(["ok"], snapshot.heartbeat_rpcs - errors)
    beats.add_metric(["error"], errors)
    yield beats


def _child_families(pool: PoolSnapshot) -> Iterator[Any]:
    alive = GaugeMetricFamily("pool_children_alive", "Child processes alive")
    alive.add_metric([], sum(1 for c in pool.children if c.pid and c.state != "dead"))
    yield alive
    busy = GaugeMetricFamily("pool_children_busy", "Child processes running a task")
    busy.add_metric([], pool.busy)
    yield busy
    rss = GaugeMetricFamily(
        "pool_child_rss_bytes", "Resident memory per child", labels=["index", "pid"]
    )
    cpu = CounterMetricFamily(
        "pool_child_cpu_seconds", "CPU time per child", labels=["index", "pid"]
    )
    tasks = CounterMetricFamily("pool_child_tasks", "Tasks run per child", labels=["index", "pid"])
    for child in pool.children:
        if child.state == "dead":
            continue
        labels = [str(child.index), str(child.pid)]
        rss.add_metric(labels, child.rss)
        cpu.add_metric(labels, child.cpu_seconds)
        tasks.add_metric(labels, child.tasks_done)
    yield rss
    yield cpu
    yield tasks
    if pool.replacement_seconds:
        replacement = GaugeMetricFamily(
            "pool_child_replacement_seconds",
            "Time from a child's death to its replacement being ready (recent)",
            labels=["stat"],
        )
        recent = sorted(pool.replacement_seconds)
        replacement.add_metric(["last"], pool.replacement_seconds[-1])
        replacement.add_metric(["median"], recent[len(recent) // 2])
        replacement.add_metric(["max"], recent[-1])
        yield replacement


# (metric name, the PoolSnapshot field it counts, help text)
_SUPERVISION_COUNTERS = (
    ("pool_children_started", "starts", "Child processes started"),
    ("pool_children_died", "deaths", "Children that died unexpectedly"),
    ("pool_children_recycled", "recycles", "Children replaced by recycling"),
    ("pool_children_killed", "kills", "Children killed by the supervisor"),
    (
        "pool_children_start_failures",
        "start_failures",
        "Replacement children that failed before they were ready",
    ),
    (
        "pool_children_respawns_delayed",
        "respawns_delayed",
        "Replacements delayed by the respawn backoff (children kept dying)",
    ),
    (
        "pool_respawn_delay_seconds",
        "respawn_delay_seconds",
        "Seconds replacements were delayed by the respawn backoff, in total",
    ),
    (
        "pool_polls_ahead",
        "promised_ahead",
        "Polls made for a busy child (lookahead) or beyond the children (prefetch)",
    ),
    (
        "pool_tasks_waited",
        "tasks_waited",
        "Tasks that arrived before a child was free and waited for one",
    ),
    (
        "pool_task_wait_seconds",
        "task_wait_seconds",
        "Seconds tasks waited in the worker for a child, in total",
    ),
    (
        "pool_tasks_redispatched",
        "tasks_redispatched",
        "Tasks written to a child that had died idle, then given to another (no attempt used)",
    ),
)


def _supervision_families(pool: PoolSnapshot) -> Iterator[Any]:
    for name, field, text in _SUPERVISION_COUNTERS:
        family = CounterMetricFamily(name, text)
        family.add_metric([], getattr(pool, field))
        yield family


def serve_metrics(
    worker: Worker, port: int, address: str = "127.0.0.1"
) -> tuple[PoolMetrics, HealthServer]:
    """Serve the worker's metrics at ``http://address:port/metrics``, with ``/healthz``
    and ``/readyz`` beside them (see :mod:`pool.observe.health`). Call it on the worker's loop.

    Returns the collector and the server (``server.shutdown()`` stops it).
    """
    metrics = PoolMetrics(worker)
    return metrics, HealthServer(worker, metrics.registry, address=address, port=port)
