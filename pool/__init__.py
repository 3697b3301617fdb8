"""A Temporal worker whose activities run in a supervised multi-process pool.

    Temporal server ◀──gRPC──▶ parent process (one asyncio loop)
                                 pool.Worker
                                 ├─ temporalio.worker.Worker  workflows, local activities
                                 └─ activity side: Poller ─▶ Dispatcher ─▶ ProcessPool
                                        ▲ heartbeats     │ task pipe / control pipe
                                        │                ▼
                                 SharedStateManager ◀── children (runner/): run the activity

``pool.Worker`` is a drop-in for ``temporalio.worker.Worker``: change the import
and sync activities run in supervised child processes that can crash, be
cancelled, time out and be recycled without taking the worker down.
"""

from ._shadowing import check_not_shadowed

check_not_shadowed()  # before the imports below, which import runner and shared_state

from ._config import PoolConfig
from ._errors import (
    ChildProcessDied,
    ChildStartError,
    ChildTraceback,
    CrashLoopError,
    PoolError,
    SharedStateLostError,
    WorkerConfigError,
)
from .observe import PoolMetrics, serve_metrics
from .supervisor import (
    ChildKilled,
    ChildMemoryExceeded,
    ChildSnapshot,
    PoolSnapshot,
    ProcessPool,
    TaskTransferError,
)
from .worker import Worker, WorkerSnapshot

__all__ = [
    # the worker
    "Worker",
    "WorkerSnapshot",
    # the process pool and its configuration
    "ChildSnapshot",
    "PoolConfig",
    "PoolSnapshot",
    "ProcessPool",
    # metrics
    "PoolMetrics",
    "serve_metrics",
    # errors
    "ChildKilled",
    "ChildMemoryExceeded",
    "ChildProcessDied",
    "ChildStartError",
    "ChildTraceback",
    "CrashLoopError",
    "PoolError",
    "SharedStateLostError",
    "TaskTransferError",
    "WorkerConfigError",
]
