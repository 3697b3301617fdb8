"""What operators see of a worker: metrics, health and readiness.

the worker's events (task started, ended, schedule-to-start, run time)
    ─▶ prometheus.PoolMetrics histograms, as tasks run
the worker's snapshot (slots, outcomes, children, supervision counters), taken on
the worker's loop when Prometheus scrapes
    ─▶ prometheus.PoolMetrics gauges and counters
health.HealthServer: /metrics, /healthz, /readyz over HTTP; every read of live
    state hops onto the loop (run_coroutine_threadsafe)
sdk_metrics: the stock worker's sdk-core activity series (temporal_*), recorded
    through the client runtime's meter as polls, tasks and RPCs happen
"""

from .health import HealthServer
from .prometheus import PoolMetrics, serve_metrics

__all__ = ["HealthServer", "PoolMetrics", "serve_metrics"]
