"""The worker's options -> a plan, as pure functions (no I/O, no processes, no loop).

    Worker(...) options (after the plugins) ─▶ check_options        ValueError / WorkerConfigError
                                           ─▶ plan_activity_side   ActivityPlan or None:
        registered definitions, where each runs (Route: child / thread / loop), the
        executor taken or replaced (a ProcessPool given, or the PoolConfig of one to build),
        slots, poll loops, rate limits, type limits, the versioning build id, log notes
                                           ─▶ plan_local_activities where sync local
        activities run (LocalRoute)

activity_side.py builds the objects the plan names (the ProcessPool, the slots) and logs
its notes; the facade emits the thread-pool warning. Every error here names the problem
and the fix (tests/pool/test_worker_plan.py).
"""

from __future__ import annotations

import concurrent.futures
import enum
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cloudpickle
import temporalio.activity
import temporalio.worker
from temporalio.worker import (
    CustomSlotSupplier,
    PollerBehavior,
    PollerBehaviorAutoscaling,
    PollerBehaviorSimpleMaximum,
    WorkerTuner,
)

from .._config import PoolConfig, config_from_executor
from .._errors import WorkerConfigError
from ..activity.slots import ResourceTargets
from ..supervisor import ProcessPool

__all__ = [
    "ActivityPlan",
    "LocalRoute",
    "Options",
    "Route",
    "SlotsChoice",
    "check_options",
    "check_pool_options",
    "plan_activity_side",
    "plan_local_activities",
    "thread_warning",
]

DEFAULT_SLOTS = 100  # the stock worker's default activity slot count
DEFAULT_LOCAL_THREADS = 16  # threads for sync local activities when no pool runs them

Definition = temporalio.activity._Definition
# The activity slots to build: a fixed count, a user's supplier, or resource targets.
SlotsChoice = int | CustomSlotSupplier | ResourceTargets


class Options:
    """The constructor's options, read as attributes (after the plugins' changes)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:  # only for names no option has
        raise AttributeError(f"pool.Worker has no option {name!r}")


class Route(enum.Enum):
    """Where a remote activity's tasks run (the Dispatcher applies the same rule)."""

    CHILD = "child process"
    THREAD = "thread"
    LOOP = "event loop"


class LocalRoute(enum.Enum):
    """Where sync local activities run (temporalio's worker calls the executor)."""

    NONE = "no sync local activities"
    USER_THREADS = "the user's ThreadPoolExecutor"
    POOL = "the process pool's children"
    OWN_THREADS = "a thread pool of the worker's own"


@dataclass(frozen=True)
class ActivityPlan:
    """What the activity side runs, decided once in the constructor."""

    definitions: dict[str, Definition]
    dynamic: Definition | None
    thread_executor: concurrent.futures.ThreadPoolExecutor | None
    given_pool: ProcessPool | None  # the user's own ProcessPool
    pool_config: PoolConfig | None  # a ProcessPool to build (when none was given)
    slots: SlotsChoice
    pollers: int
    poll_scaling: tuple[int, int, int] | None
    type_limits: dict[str, int]
    max_activities_per_second: float | None = None
    max_task_queue_activities_per_second: float | None = None
    versioning_build_id: str | None = None
    notes: tuple[str, ...] = field(default=())  # info lines for the log

    @property
    def runs_pool(self) -> bool:
        return self.given_pool is not None or self.pool_config is not None

    def route(self, definition: Definition) -> Route:
        if definition.is_async:
            return Route.LOOP
        return Route.THREAD if self.thread_executor is not None else Route.CHILD

    @property
    def routes(self) -> dict[str, Route]:
        """Activity name ("" for the dynamic one) -> where its tasks run."""
        routes = {name: self.route(defn) for name, defn in self.definitions.items()}
        if self.dynamic is not None:
            routes[""] = self.route(self.dynamic)
        return routes


def check_options(o: Options) -> None:
    """The errors stock raises for bad combinations, then ours (checked before planning)."""
    if not (o.activities or o.workflows or o.nexus_service_handlers):
        raise ValueError("At least one activity, Nexus service, or workflow must be specified")
    if o.tuner is not None and (
        o.max_concurrent_workflow_tasks
        or o.max_concurrent_activities
        or o.max_concurrent_local_activities
        or o.max_concurrent_nexus_tasks
    ):
        raise ValueError(
            "Cannot specify max_concurrent_workflow_tasks, max_concurrent_activities, "
            "max_concurrent_local_activities, or max_concurrent_nexus_tasks when also "
            "specifying tuner"
        )


def check_pool_options(o: Options, *, external_storage: bool) -> None:
    """Our own option errors that need no planning."""
    if isinstance(o.activity_executor, ProcessPool) and o.pool_config is not None:
        raise WorkerConfigError("pool_config goes to the ProcessPool itself, not both")
    if external_storage and o.activities:
        raise WorkerConfigError(
            "The client's data converter uses external storage (experimental in temporalio); "
            "pool.Worker does not support it for activities yet. Use a payload codec, or "
            "temporalio.worker.Worker for these activities."
        )


def activity_slots(max_concurrent_activities: int | None, tuner: WorkerTuner | None) -> SlotsChoice:
    """The slots to build from ``max_concurrent_activities`` or the tuner's supplier."""
    if tuner is not None:
        # The one place we read a tuner's activity supplier (private in temporalio).
        supplier = tuner._get_activity_task_slot_supplier()
        if isinstance(supplier, temporalio.worker.FixedSizeSlotSupplier):
            return supplier.num_slots
        if isinstance(supplier, temporalio.worker.CustomSlotSupplier):
            return supplier
        if isinstance(supplier, temporalio.worker.ResourceBasedSlotSupplier):
            slot = supplier.slot_config
            ramp = slot.ramp_throttle
            return ResourceTargets(
                # temporalio's defaults for activity slots: 1, 500, 50 ms.
                minimum=1 if slot.minimum_slots is None else slot.minimum_slots,
                maximum=slot.maximum_slots or 500,
                ramp_throttle=0.05 if ramp is None else ramp.total_seconds(),
                target_memory=supplier.tuner_config.target_memory_usage,
                target_cpu=supplier.tuner_config.target_cpu_usage,
            )
        raise WorkerConfigError(
            f"tuner: the activity slot supplier {type(supplier).__name__} is not supported by "
            "pool.Worker; use a FixedSizeSlotSupplier, a ResourceBasedSlotSupplier or a "
            "temporalio.worker.CustomSlotSupplier subclass"
        )
    if max_concurrent_activities is not None:
        if max_concurrent_activities < 1:
            raise WorkerConfigError(
                f"max_concurrent_activities must be at least 1, got {max_concurrent_activities}"
            )
        return max_concurrent_activities
    return DEFAULT_SLOTS


def thread_warning(
    activity_executor: object, max_concurrent_activities: int | None, tuner: WorkerTuner | None
) -> str | None:
    """Stock's warning, for a thread pool only: tasks beyond its threads wait in it.

    The process path needs none: it polls only for tasks a child can start.
    """
    if not isinstance(activity_executor, concurrent.futures.ThreadPoolExecutor):
        return None
    slots = max_concurrent_activities
    if tuner is not None and tuner._get_activities_max():
        slots = tuner._get_activities_max()
    max_workers = activity_executor._max_workers
    if max_workers < (slots or 0):
        return (
            f"Worker max_concurrent_activities is {slots} "
            f"but activity_executor's max_workers is only {max_workers}"
        )
    return None


def poll_scaling(
    max_concurrent_activity_task_polls: int | None, behavior: PollerBehavior
) -> tuple[int, int, int] | None:
    """(minimum, maximum, initial) of an autoscaling poller behaviour, else None."""
    if max_concurrent_activity_task_polls is None and isinstance(
        behavior, PollerBehaviorAutoscaling
    ):
        return behavior.minimum, behavior.maximum, behavior.initial
    return None


def poller_count(max_concurrent_activity_task_polls: int | None, behavior: PollerBehavior) -> int:
    if max_concurrent_activity_task_polls is not None:
        count = max_concurrent_activity_task_polls
    elif isinstance(behavior, PollerBehaviorSimpleMaximum):
        count = behavior.maximum
    elif isinstance(behavior, PollerBehaviorAutoscaling):
        # As many poll loops as the maximum; a PollerScaler lets only its target poll.
        count = behavior.maximum
    else:  # pragma: no cover - typing guards this
        raise WorkerConfigError(f"Unknown activity_task_poller_behavior {behavior!r}")
    if count < 1:
        raise WorkerConfigError(f"The activity poller count must be at least 1, got {count}")
    return count


def register(
    activities: Sequence[Callable[..., Any]],
) -> tuple[dict[str, Definition], Definition | None]:
    """The activities by name, and the dynamic one; stock's errors for duplicates."""
    definitions: dict[str, Definition] = {}
    dynamic: Definition | None = None
    for fn in activities:
        defn = Definition.must_from_callable(fn)
        if inspect.isclass(fn):
            raise TypeError(f"Activity named {defn.name} is a class instead of an instance")
        if defn.name:
            if defn.name in definitions:
                raise ValueError(f"More than one activity named {defn.name}")
            definitions[defn.name] = defn
        elif dynamic is not None:
            raise TypeError("More than one dynamic activity")
        else:
            dynamic = defn
    return definitions, dynamic


@dataclass(frozen=True)
class _Executor:
    """What became of ``activity_executor``."""

    threads: concurrent.futures.ThreadPoolExecutor | None = None
    given_pool: ProcessPool | None = None
    pool_config: PoolConfig | None = None
    notes: tuple[str, ...] = ()


def _executor(
    activity_executor: object,
    processes: int | None,
    pool_config: PoolConfig | None,
    has_sync: bool,
) -> _Executor:
    """Threads, the user's ProcessPool, or the config of a pool to build (a stock
    ProcessPoolExecutor is replaced by one of its size and options)."""
    if isinstance(activity_executor, concurrent.futures.ThreadPoolExecutor):
        return _Executor(threads=activity_executor)
    if isinstance(activity_executor, ProcessPool):
        if processes is not None or pool_config is not None:
            raise WorkerConfigError(
                "processes / pool_config cannot be combined with an activity_executor that is "
                "already a pool.ProcessPool: configure the ProcessPool itself"
            )
        return _Executor(given_pool=activity_executor)
    if isinstance(activity_executor, concurrent.futures.ProcessPoolExecutor):
        # A program written for the stock worker: take the executor's size and options.
        size = getattr(activity_executor, "_max_workers", None) or os.cpu_count() or 1
        config, taken = config_from_executor(activity_executor, pool_config)
        note = (
            f"activity_executor is a ProcessPoolExecutor(max_workers={size}): pool.Worker runs "
            f"{processes or size} supervised child processes instead and leaves that executor "
            "unused" + (f" (taken from it: {', '.join(taken)})" if taken else "")
        )
        return _Executor(pool_config=config.with_processes(processes or size), notes=(note,))
    if activity_executor is None:
        if not has_sync:
            return _Executor()
        return _Executor(pool_config=(pool_config or PoolConfig()).with_processes(processes))
    kind = type(activity_executor).__name__
    raise WorkerConfigError(
        f"activity_executor {kind} is not supported: pass a pool.ProcessPool (the default), "
        "a concurrent.futures.ThreadPoolExecutor (threads in this process), or a "
        "ProcessPoolExecutor (taken as the number of child processes)"
    )


def _check_picklable(definitions: Sequence[Definition]) -> None:
    """Each sync activity must reach the children: cloudpickle it now, not at start."""
    for defn in definitions:
        if defn.is_async:
            continue
        try:
            cloudpickle.dumps(defn.fn)
        except Exception as err:
            raise WorkerConfigError(
                f"Activity {defn.name or '(dynamic)'} cannot be serialised with cloudpickle "
                f"to send it to the child processes: {type(err).__name__}: {err}. Make it a "
                "module-level function, or a closure / bound method over picklable state."
            ) from err


def _check_type_limits(type_limits: Mapping[str, int], definitions: Mapping[str, Any]) -> None:
    for name, limit in type_limits.items():
        if name not in definitions:
            known = ", ".join(sorted(definitions)) or "(none)"
            raise WorkerConfigError(
                f"activity_type_limits names {name!r}, which is not a registered activity "
                f"type; registered: {known}"
            )
        if limit < 1:
            raise WorkerConfigError(
                f"activity_type_limits[{name!r}] must be at least 1, got {limit}"
            )


def _check_rates(o: Options) -> None:
    if o.max_activities_per_second is not None and o.max_activities_per_second <= 0:
        raise WorkerConfigError("max_activities_per_second must be positive")
    if (
        o.max_task_queue_activities_per_second is not None
        and o.max_task_queue_activities_per_second <= 0
    ):
        raise WorkerConfigError("max_task_queue_activities_per_second must be positive")


def _versioning_build_id(o: Options) -> str | None:
    """The build id sent in ``worker_version_capabilities`` (only with versioning on)."""
    build_id: str | None = o.build_id if o.use_worker_versioning else None
    if o.deployment_config is not None and o.deployment_config.use_worker_versioning:
        build_id = o.deployment_config.version.build_id
    return build_id


def plan_activity_side(o: Options) -> ActivityPlan | None:
    """The remote activities' plan; None when this worker runs none (then the pool's own
    options are an error: they would do nothing)."""
    if not o.activities or o.no_remote_activities:
        if o.processes is not None or o.pool_config is not None or o.activity_type_limits:
            raise WorkerConfigError(
                "processes / pool_config / activity_type_limits were given but this worker "
                "runs no remote activities (no activities, or no_remote_activities=True)"
            )
        return None
    slots = activity_slots(o.max_concurrent_activities, o.tuner)
    pollers = poller_count(o.max_concurrent_activity_task_polls, o.activity_task_poller_behavior)
    definitions, dynamic = register(o.activities)
    every = [*definitions.values(), *([dynamic] if dynamic else [])]
    executor = _executor(
        o.activity_executor, o.processes, o.pool_config, any(not d.is_async for d in every)
    )
    if executor.given_pool is not None or executor.pool_config is not None:
        _check_picklable(every)
    type_limits = dict(o.activity_type_limits or {})
    _check_type_limits(type_limits, definitions)
    _check_rates(o)
    return ActivityPlan(
        definitions=definitions,
        dynamic=dynamic,
        thread_executor=executor.threads,
        given_pool=executor.given_pool,
        pool_config=executor.pool_config,
        slots=slots,
        pollers=pollers,
        poll_scaling=poll_scaling(
            o.max_concurrent_activity_task_polls, o.activity_task_poller_behavior
        ),
        type_limits=type_limits,
        max_activities_per_second=o.max_activities_per_second,
        max_task_queue_activities_per_second=o.max_task_queue_activities_per_second,
        versioning_build_id=_versioning_build_id(o),
        notes=executor.notes,
    )


def plan_local_activities(o: Options, *, pool_runs: bool) -> LocalRoute:
    """Sync local activities: in the pool's children, or in threads when the user gave
    a ThreadPoolExecutor (or no pool runs)."""
    if not (o.workflows and o.activities):
        return LocalRoute.NONE
    if all(Definition.must_from_callable(a).is_async for a in o.activities):
        return LocalRoute.NONE
    if isinstance(o.activity_executor, concurrent.futures.ThreadPoolExecutor):
        return LocalRoute.USER_THREADS
    return LocalRoute.POOL if pool_runs else LocalRoute.OWN_THREADS
