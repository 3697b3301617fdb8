"""The pool's own configuration, as one frozen dataclass."""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Literal

from ._errors import WorkerConfigError

__all__ = ["PoolConfig", "config_from_executor"]

StartMethod = Literal["forkserver", "spawn"]


def _seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


@dataclass(frozen=True)
class PoolConfig:
    """How the child processes are run, watched and replaced.

    Every duration accepts a ``timedelta`` or seconds as a float.
    """

    processes: int | None = None
    """Number of child processes; default: the number of CPUs."""

    start_method: StartMethod = "forkserver"
    """``forkserver`` (default: activity modules are preloaded once, so a
    replacement child costs milliseconds) or ``spawn``. A plain ``fork`` of a
    process that holds gRPC state is never used."""

    preload: tuple[str, ...] = ()
    """Extra modules for the fork server to import once (the activities' own
    modules are preloaded automatically)."""

    lookahead: bool = True
    """Poll for a busy child one poll round trip before its task is expected to end,
    so the next task arrives as the child frees instead of a round trip later; and
    when recent tasks are much shorter than a round trip, let each child back up to 4
    polls (the tasks it runs in one round trip). The expectations are conservative
    (the longest of the last runs; a type needs 3 runs first; the median recent round
    trip, capped at 50 ms), so a task rarely waits in the worker, and not for long;
    ``PoolSnapshot.tasks_waited`` / ``task_wait_seconds`` / ``task_wait_max`` say how
    often and how long. False: poll only for idle children."""

    prefetch: int = 0
    """Tasks polled beyond what the children can start (default 0: a task is only
    polled for an idle child, or for a busy one as ``lookahead`` allows). With N > 0,
    up to N more tasks wait in the worker for the next child that finishes; their
    start-to-close clocks run while they wait (sdk-python #1168), so keep N small and
    only for activities much shorter than their timeouts. ``lookahead`` usually makes
    this unnecessary."""

    max_tasks_per_child: int | None = None
    """Replace a child after it ran this many tasks (between tasks, no task fails)."""

    max_memory_per_child: int | None = None
    """Soft RSS limit in bytes: a child above it is replaced after its current task."""

    hard_memory_per_child: int | None = None
    """Hard RSS limit in bytes: a child above it is killed at once and its task
    fails with a retryable ``ChildMemoryExceeded`` error."""

    memory_check_interval: timedelta | float = timedelta(seconds=1)
    """How often the RSS of every child is read (psutil)."""

    cancel_grace: timedelta | float = timedelta(seconds=5)
    """After a cancellation (any source) the activity has this long to return
    before its child is killed and replaced."""

    kill_escalation: timedelta | float = timedelta(milliseconds=250)
    """SIGTERM first; SIGKILL when the child is still alive after this long."""

    local_timeout_buffer: timedelta | float = timedelta(seconds=5)
    """Added to the heartbeat timeout before the worker gives up on an attempt
    locally (sdk-core uses 5 s). The start-to-close timeout has none: it counts from
    when the worker received the task, and the server has failed the attempt by then."""

    initializer: Callable[..., object] | None = None
    """Called as ``initializer(*initargs)`` in every child before its first task, as
    in ``concurrent.futures.ProcessPoolExecutor`` (open connections, load a model,
    set up logging); what it stores in module globals the activities see. Sent to the
    children with cloudpickle. If it raises, the child fails to start
    (:class:`pool.ChildStartError`)."""

    initargs: tuple[Any, ...] = ()
    """Arguments for ``initializer``."""

    crash_loop_max_deaths: int = 10
    crash_loop_window: timedelta | float = timedelta(seconds=60)
    """More than ``crash_loop_max_deaths`` replacement children failing before they are
    ready (an error they report, an exit, a native crash; not a kill from outside)
    within ``crash_loop_window`` is a worker fatal error (``CrashLoopError``, caused by
    the last ``ChildStartError``): no child could ever run a task. At start the first
    such failure is fatal. Children that die after they were ready (a crash
    or kill in a task, the OOM killer) never stop the worker: their tasks fail
    retryably, and ``respawn_backoff`` slows their replacement."""

    respawn_backoff: timedelta | float = timedelta(milliseconds=100)
    respawn_backoff_max: timedelta | float = timedelta(milliseconds=500)
    """A child that died is replaced at once; when more died within
    ``crash_loop_window``, the n-th replacement waits ``respawn_backoff * 2**(n-2)``,
    at most ``respawn_backoff_max`` (logged, and counted in
    ``PoolSnapshot.respawns_delayed``). The cap bounds a respawn loop to a few percent
    of a core while costing a host that kills children often little: 30 workflows x 8
    tasks of 100 ms on 2 children, one SIGKILLed every 0.5 s, finished in 79 s with
    0.5 s, 96 s with no backoff and 239 s with a 2 s cap."""

    start_timeout: timedelta | float = timedelta(seconds=60)
    """How long a new child may take to report ready."""

    native_threads: int | Literal["auto"] | None = "auto"
    """Threads per native thread pool in each child (OpenMP, OpenBLAS, MKL, BLIS,
    Accelerate, numexpr: the ``*_NUM_THREADS`` variables, set before the activities'
    modules load, and threadpoolctl for a library the fork server preloaded).
    ``"auto"``: ``max(1, cpu_count // processes)``, so the children together use the
    cores once instead of each starting a thread per core; a number: that many;
    ``None`` or 0: leave the libraries alone. A variable the user set is never
    overridden."""

    cpu_affinity: bool = False
    """Pin each child to one core (round robin over the cores the worker may use;
    Linux). For one CPU-bound activity per core with no migration; the default lets
    the kernel schedule."""

    rpc_compression: Literal["auto", "gzip", "none"] = "auto"
    """How the activity side's gRPC calls are compressed. grpc compresses on the
    calling thread, the worker's one asyncio thread: gzip costs it ~6 ms per MiB sent
    and ~2 ms per MiB received, for every task. ``"auto"``: requests up to 32 KiB are
    gzipped (cheap), larger ones and polls (so the tasks the server sends) are not;
    ``"gzip"``: every call, as sdk-core does (least bandwidth, for a remote cluster
    with metered traffic and a parent with CPU to spare); ``"none"``: no call."""

    child_reports_from: int | None = 64 * 1024
    """A result of at least this many bytes (as serialised payloads) is sent to the
    server by the child that produced it, over its own connection to the frontend
    (target, TLS, API key and metadata as the worker's client), rather than handed to
    the worker's one asyncio thread: for 1 MiB results that thread's CPU per activity
    drops to ~0.6x. Only where the child converts the result and nothing in the worker
    must see it: no payload codec, no activity interceptor, the client not replaced
    since the start. A child that cannot reach the server hands the result back and the
    worker sends it. ``None``: the worker sends every result; then children never open
    a connection."""

    def native_thread_limit(self) -> int | None:
        """The children's native thread limit as a number (None: no limit)."""
        if self.native_threads == "auto":
            return max(1, (os.cpu_count() or 1) // self.size)
        return self.native_threads or None

    def __post_init__(self) -> None:
        self._check_choices()
        self._check_limits()

    def _check_choices(self) -> None:
        if self.native_threads not in ("auto", None) and (
            not isinstance(self.native_threads, int) or self.native_threads < 0
        ):
            raise WorkerConfigError(
                f"native_threads must be 'auto', a number of threads or None, got "
                f"{self.native_threads!r}"
            )
        if self.rpc_compression not in ("auto", "gzip", "none"):
            raise WorkerConfigError(
                f"rpc_compression must be 'auto', 'gzip' or 'none', got {self.rpc_compression!r}"
            )
        if self.start_method not in ("forkserver", "spawn"):
            raise WorkerConfigError(
                f"start_method must be 'forkserver' or 'spawn', got {self.start_method!r}: "
                "plain fork is unsafe once gRPC is running in the parent"
            )
        if self.initializer is not None and not callable(self.initializer):
            raise WorkerConfigError(
                f"initializer must be callable, got {type(self.initializer).__name__}"
            )
        if not isinstance(self.initargs, tuple):
            raise WorkerConfigError(f"initargs must be a tuple, got {type(self.initargs).__name__}")

    def _check_limits(self) -> None:
        reports_from = self.child_reports_from
        if reports_from is not None and (
            isinstance(reports_from, bool) or not isinstance(reports_from, int) or reports_from < 0
        ):
            raise WorkerConfigError(
                f"child_reports_from must be a number of bytes (0 or more) or None, got "
                f"{reports_from!r}"
            )
        if self.processes is not None and self.processes < 1:
            raise WorkerConfigError(
                f"processes must be at least 1, got {self.processes}: leave it unset to use "
                "one child per CPU"
            )
        for name in ("max_tasks_per_child", "max_memory_per_child", "hard_memory_per_child"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise WorkerConfigError(f"{name} must be positive or None, got {value}")
        if (
            self.max_memory_per_child is not None
            and self.hard_memory_per_child is not None
            and self.hard_memory_per_child < self.max_memory_per_child
        ):
            raise WorkerConfigError(
                "hard_memory_per_child must be at least max_memory_per_child "
                f"({self.hard_memory_per_child} < {self.max_memory_per_child})"
            )
        if self.prefetch < 0:
            raise WorkerConfigError(f"prefetch must be 0 or more, got {self.prefetch}")
        if self.crash_loop_max_deaths < 1:
            raise WorkerConfigError("crash_loop_max_deaths must be at least 1")
        for name in (
            "memory_check_interval",
            "cancel_grace",
            "kill_escalation",
            "local_timeout_buffer",
            "crash_loop_window",
            "respawn_backoff",
            "respawn_backoff_max",
            "start_timeout",
        ):
            if _seconds(getattr(self, name)) < 0:
                raise WorkerConfigError(f"{name} must not be negative")

    @property
    def size(self) -> int:
        return self.processes or os.cpu_count() or 1

    def seconds(self, name: str) -> float:
        """A duration option as float seconds."""
        return _seconds(getattr(self, name))

    def with_processes(self, processes: int | None) -> PoolConfig:
        return self if processes is None else replace(self, processes=processes)


def config_from_executor(
    executor: concurrent.futures.ProcessPoolExecutor, config: PoolConfig | None
) -> tuple[PoolConfig, list[str]]:
    """A stock executor's ``initializer``, ``initargs``, ``max_tasks_per_child`` and
    ``mp_context`` as :class:`PoolConfig` fields over ``config``; and what was taken,
    in words, for the log. An option that ``config`` also sets to something else is
    a :class:`WorkerConfigError` naming both."""
    taken, notes = _executor_options(executor)
    base = config or PoolConfig()
    default = PoolConfig()
    for name, value in taken.items():
        ours = getattr(base, name)
        if ours != getattr(default, name) and ours != value:
            raise WorkerConfigError(
                f"activity_executor (a ProcessPoolExecutor) sets {name}={value!r} and "
                f"pool_config sets {name}={ours!r}: set it in one of the two"
            )
    words = [f"{name}={_short(value)}" for name, value in taken.items()]
    return replace(base, **taken), words + notes


def _executor_options(
    executor: concurrent.futures.ProcessPoolExecutor,
) -> tuple[dict[str, Any], list[str]]:
    """What the executor was given, read off its private attributes (stable since
    Python 3.11, where ``max_tasks_per_child`` arrived), as PoolConfig fields."""
    options: dict[str, Any] = {}
    notes = []
    initializer = getattr(executor, "_initializer", None)
    if initializer is not None:
        options["initializer"] = initializer
        options["initargs"] = tuple(getattr(executor, "_initargs", None) or ())
    max_tasks = getattr(executor, "_max_tasks_per_child", None)
    if max_tasks is not None:
        options["max_tasks_per_child"] = max_tasks
    context = getattr(executor, "_mp_context", None)
    method = context.get_start_method() if context is not None else None
    if method == "fork":
        # Also the default context on Linux before Python 3.14.
        notes.append(
            "its 'fork' start method becomes 'forkserver' (a plain fork of a process "
            "running gRPC is unsafe)"
        )
    elif method is not None:
        options["start_method"] = method
    return options, notes


def _short(value: Any) -> str:
    """A function by its name, anything else by its repr."""
    name = getattr(value, "__qualname__", None) if callable(value) else None
    return str(name) if name is not None else repr(value)
