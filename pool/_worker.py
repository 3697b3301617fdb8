"""``pool.Worker``: a drop-in for ``temporalio.worker.Worker``.

pool.Worker ─┬─ temporalio.worker.Worker   workflows, local activities, Nexus
             │                             (no_remote_activities=True); sync local
             │                             activities: LocalActivityExecutor -> ProcessPool
             └─ _ActivitySide               remote activities, ours:
                  ActivityService  grpc.aio channel from the client's settings
                  Poller           polls only with a free slot (and idle child)
                  Dispatcher       decode, route, report one outcome per task
                  HeartbeatManager throttle, RPC, answers -> cancellation
                  ProcessPool      supervised children (runner/)
                  SharedStateManager heartbeats from children (shared_state/)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import logging
import os
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import cloudpickle
import grpc
import temporalio.activity
import temporalio.client
import temporalio.common
import temporalio.converter
import temporalio.runtime
import temporalio.worker
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.workflowservice.v1 import (
    DescribeNamespaceRequest,
    ShutdownWorkerRequest,
)
from temporalio.worker import (
    PollerBehavior,
    PollerBehaviorAutoscaling,
    PollerBehaviorSimpleMaximum,
    SharedStateManager,
    UnsandboxedWorkflowRunner,
    WorkerDeploymentConfig,
    WorkerTuner,
    WorkflowRunner,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from ._config import PoolConfig, config_from_executor
from ._errors import PoolError, SharedStateLostError, WorkerConfigError
from ._forks import check_create, check_use
from ._interceptors import activity_interceptors
from ._local import LocalActivityExecutor
from .activity.dispatch import Dispatcher, DispatchSettings
from .activity.dispatch.conversion import ChildConversion, child_conversion
from .activity.poller import Poller, PollSettings
from .activity.service import ActivityService, describe_rpc_error
from .activity.slots import (
    CustomSlots,
    RateLimiter,
    ReserveContext,
    ResourceSlots,
    ResourceTargets,
    Slots,
)
from .observe.sdk_metrics import ActivityMetrics, RequestMetrics
from .supervisor import PoolSnapshot, ProcessPool

__all__ = ["Worker"]

logger = logging.getLogger("pool.worker")

# How often the slot and poller gauges of the SDK's metrics are sampled.
_METRICS_SAMPLE_INTERVAL = 1.0
_DEFAULT_SLOTS = 100  # the stock worker's default activity slot count
# Our packages are never workflow code: a workflow module that imports ``pool`` (the
# smallest program does) gets them passed through the sandbox instead of re-imported
# with grpc, multiprocess, psutil and prometheus_client, which the sandbox forbids.
PASSTHROUGH_MODULES = ("pool", "runner", "shared_state")
# The stock worker's defaults (the sandbox with our packages passed through), as
# module-level immutable singletons.
_SANDBOXED = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
)
_UNSANDBOXED = UnsandboxedWorkflowRunner()
_FIVE_POLLERS = PollerBehaviorSimpleMaximum(maximum=5)


@dataclass(frozen=True)
class WorkerSnapshot:
    """What the worker's activity side has done, read at one moment on its loop.

    The CLI, the demo and the metrics read this instead of the worker's internals.
    """

    # Tasks in flight (received, not yet reported).
    running: int = 0
    # Tasks started, by activity type; tasks ended, by (activity type, outcome).
    started: Mapping[str, int] = field(default_factory=dict)
    outcomes: Mapping[tuple[str, str], int] = field(default_factory=dict)
    # RecordActivityTaskHeartbeat calls sent, and how many of them failed.
    heartbeat_rpcs: int = 0
    heartbeat_errors: int = 0
    # The process pool's state (None when this worker runs no process pool).
    pool: PoolSnapshot | None = None

    @property
    def completed(self) -> int:
        """Tasks that completed successfully, over every activity type."""
        return sum(n for (_, outcome), n in self.outcomes.items() if outcome == "completed")


@dataclass(frozen=True)
class _ActivityPlan:
    """What the activity side runs, decided once in the constructor."""

    definitions: dict[str, temporalio.activity._Definition]
    dynamic: temporalio.activity._Definition | None
    thread_executor: concurrent.futures.ThreadPoolExecutor | None
    pool: ProcessPool | None
    slots: Slots
    pollers: int
    type_limits: dict[str, int]


def _activity_slots(
    max_concurrent_activities: int | None,
    tuner: WorkerTuner | None,
    reserve_context: Callable[[], ReserveContext],
) -> Slots:
    if tuner is not None:
        # The one place we read a tuner's activity supplier (private in temporalio).
        supplier = tuner._get_activity_task_slot_supplier()
        if isinstance(supplier, temporalio.worker.FixedSizeSlotSupplier):
            return Slots(supplier.num_slots)
        if isinstance(supplier, temporalio.worker.CustomSlotSupplier):
            return CustomSlots(supplier, reserve_context())
        if isinstance(supplier, temporalio.worker.ResourceBasedSlotSupplier):
            slot = supplier.slot_config
            ramp = slot.ramp_throttle
            return ResourceSlots(
                ResourceTargets(
                    # temporalio's defaults for activity slots: 1, 500, 50 ms.
                    minimum=1 if slot.minimum_slots is None else slot.minimum_slots,
                    maximum=slot.maximum_slots or 500,
                    ramp_throttle=0.05 if ramp is None else ramp.total_seconds(),
                    target_memory=supplier.tuner_config.target_memory_usage,
                    target_cpu=supplier.tuner_config.target_cpu_usage,
                )
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
        return Slots(max_concurrent_activities)
    return Slots(_DEFAULT_SLOTS)


def _warn_if_threads_fewer_than_slots(
    activity_executor: object, max_concurrent_activities: int | None, tuner: WorkerTuner | None
) -> None:
    """Stock's warning, for a thread pool only: tasks beyond its threads wait in it.

    The process path needs none: it polls only for tasks a child can start.
    """
    if not isinstance(activity_executor, concurrent.futures.ThreadPoolExecutor):
        return
    slots = max_concurrent_activities
    if tuner is not None and tuner._get_activities_max():
        slots = tuner._get_activities_max()
    max_workers = activity_executor._max_workers
    if max_workers < (slots or 0):
        warnings.warn(
            f"Worker max_concurrent_activities is {slots} "
            f"but activity_executor's max_workers is only {max_workers}",
            stacklevel=4,  # the caller of Worker(...)
        )


def _plan_activities(
    activities: Sequence[Callable[..., Any]],
    activity_executor: concurrent.futures.Executor | ProcessPool | None,
    processes: int | None,
    pool_config: PoolConfig | None,
    slots: Slots,
    pollers: int,
    type_limits: Mapping[str, int],
) -> _ActivityPlan:
    definitions: dict[str, temporalio.activity._Definition] = {}
    dynamic: temporalio.activity._Definition | None = None
    for fn in activities:
        defn = temporalio.activity._Definition.must_from_callable(fn)
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
    all_defs = [*definitions.values(), *([dynamic] if dynamic else [])]
    has_sync = any(not d.is_async for d in all_defs)

    thread_executor: concurrent.futures.ThreadPoolExecutor | None = None
    pool: ProcessPool | None = None
    if isinstance(activity_executor, concurrent.futures.ThreadPoolExecutor):
        thread_executor = activity_executor
    elif isinstance(activity_executor, ProcessPool):
        if processes is not None or pool_config is not None:
            raise WorkerConfigError(
                "processes / pool_config cannot be combined with an activity_executor that is "
                "already a pool.ProcessPool: configure the ProcessPool itself"
            )
        pool = activity_executor
    elif isinstance(activity_executor, concurrent.futures.ProcessPoolExecutor):
        # A program written for the stock worker: take the executor's size and options.
        size = getattr(activity_executor, "_max_workers", None) or os.cpu_count() or 1
        config, taken = config_from_executor(activity_executor, pool_config)
        logger.info(
            "activity_executor is a ProcessPoolExecutor(max_workers=%d): pool.Worker runs %d "
            "supervised child processes instead and leaves that executor unused%s",
            size,
            processes or size,
            f" (taken from it: {', '.join(taken)})" if taken else "",
        )
        pool = ProcessPool(processes or size, config=config)
    elif activity_executor is None:
        if has_sync:
            pool = ProcessPool(processes, config=pool_config)
    else:
        kind = type(activity_executor).__name__
        raise WorkerConfigError(
            f"activity_executor {kind} is not supported: pass a pool.ProcessPool (the default), "
            "a concurrent.futures.ThreadPoolExecutor (threads in this process), or a "
            "ProcessPoolExecutor (taken as the number of child processes)"
        )
    if pool is not None:
        for defn in all_defs:
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
    return _ActivityPlan(
        definitions=definitions,
        dynamic=dynamic,
        thread_executor=thread_executor,
        pool=pool,
        slots=slots,
        pollers=pollers,
        type_limits=dict(type_limits),
    )


def _poll_scaling(
    max_concurrent_activity_task_polls: int | None, behavior: PollerBehavior
) -> tuple[int, int, int] | None:
    """(minimum, maximum, initial) of an autoscaling poller behaviour, else None."""
    if max_concurrent_activity_task_polls is None and isinstance(
        behavior, PollerBehaviorAutoscaling
    ):
        return behavior.minimum, behavior.maximum, behavior.initial
    return None


def _poller_count(max_concurrent_activity_task_polls: int | None, behavior: PollerBehavior) -> int:
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


def _runtime(client: temporalio.client.Client) -> temporalio.runtime.Runtime:
    """The runtime the client's connection uses (its meter is the SDK's meter)."""
    return client.service_client.config.runtime or temporalio.runtime.Runtime.default()


class _Options:
    """The constructor's options, read as attributes (after the plugins' changes)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:  # only for names no option has
        raise AttributeError(f"pool.Worker has no option {name!r}")


@functools.cache
def _defaults() -> dict[str, Any]:
    """Each constructor option's default, for an option a plugin dropped."""
    parameters = inspect.signature(Worker.__init__).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def _worker_plugins(
    client: temporalio.client.Client, plugins: Sequence[temporalio.worker.Plugin]
) -> list[temporalio.worker.Plugin]:
    """The client's worker plugins, then the worker's own, as the stock worker takes them."""
    from_client = [p for p in client.config()["plugins"] if isinstance(p, temporalio.worker.Plugin)]
    for plugin in from_client:
        if type(plugin) in [type(p) for p in plugins]:
            warnings.warn(
                f"The same plugin type {type(plugin)} is present from both client and worker. "
                "It may run twice and may not be the intended behavior.",
                stacklevel=3,
            )
    return [*from_client, *plugins]


def _without_plugins(client: temporalio.client.Client) -> temporalio.client.Client:
    """The client for temporalio's inner worker: this worker already applied the
    client's plugins (configure and run), so the inner one must not apply them again."""
    if not client.config()["plugins"]:
        return client
    config = client.config(active_config=True)
    config["plugins"] = []
    return temporalio.client.Client(**config)


class Worker:
    """Workflows in this process, activities in a supervised process pool.

    Same constructor and members as :class:`temporalio.worker.Worker`, plus
    ``processes`` and ``pool_config``. Sync activities run in child processes by
    default (``activity_executor=None`` or a :class:`pool.ProcessPool`); a
    ``ThreadPoolExecutor`` runs them in threads here; a stdlib
    ``ProcessPoolExecutor`` is taken as the number of children. Async activities
    run on this event loop. See the options table in the README for where each
    option acts.
    """

    def __init__(
        self,
        client: temporalio.client.Client,
        *,
        task_queue: str,
        activities: Sequence[Callable[..., Any]] = (),
        nexus_service_handlers: Sequence[Any] = (),
        workflows: Sequence[type] = (),
        activity_executor: concurrent.futures.Executor | ProcessPool | None = None,
        workflow_task_executor: concurrent.futures.ThreadPoolExecutor | None = None,
        nexus_task_executor: concurrent.futures.ThreadPoolExecutor | None = None,
        workflow_runner: WorkflowRunner = _SANDBOXED,
        unsandboxed_workflow_runner: WorkflowRunner = _UNSANDBOXED,
        plugins: Sequence[temporalio.worker.Plugin] = (),
        interceptors: Sequence[temporalio.worker.Interceptor] = (),
        build_id: str | None = None,
        identity: str | None = None,
        max_cached_workflows: int = 1000,
        max_concurrent_workflow_tasks: int | None = None,
        max_concurrent_activities: int | None = None,
        max_concurrent_local_activities: int | None = None,
        max_concurrent_nexus_tasks: int | None = None,
        tuner: WorkerTuner | None = None,
        max_concurrent_workflow_task_polls: int | None = None,
        nonsticky_to_sticky_poll_ratio: float = 0.2,
        max_concurrent_activity_task_polls: int | None = None,
        no_remote_activities: bool = False,
        sticky_queue_schedule_to_start_timeout: timedelta = timedelta(seconds=10),
        max_heartbeat_throttle_interval: timedelta = timedelta(seconds=60),
        default_heartbeat_throttle_interval: timedelta = timedelta(seconds=30),
        max_activities_per_second: float | None = None,
        max_task_queue_activities_per_second: float | None = None,
        max_eager_activity_reservations_per_workflow_task: int = 3,
        graceful_shutdown_timeout: timedelta = timedelta(),
        plugin_shutdown_timeout: timedelta | None = timedelta(seconds=60),
        workflow_failure_exception_types: Sequence[type[BaseException]] = (),
        shared_state_manager: SharedStateManager | None = None,
        debug_mode: bool = False,
        disable_eager_activity_execution: bool = False,
        on_fatal_error: Callable[[BaseException], Awaitable[None]] | None = None,
        use_worker_versioning: bool = False,
        disable_safe_workflow_eviction: bool = False,
        deployment_config: WorkerDeploymentConfig | None = None,
        patch_activation_callback: Callable[..., bool] | None = None,
        workflow_task_poller_behavior: PollerBehavior = _FIVE_POLLERS,
        activity_task_poller_behavior: PollerBehavior = _FIVE_POLLERS,
        nexus_task_poller_behavior: PollerBehavior = _FIVE_POLLERS,
        disable_payload_error_limit: bool = False,
        max_workflow_task_external_storage_concurrency: int = 3,
        # -- the pool's own options --
        processes: int | None = None,
        pool_config: PoolConfig | None = None,
        activity_type_limits: Mapping[str, int] | None = None,
    ) -> None:
        config: dict[str, Any] = {
            k: v for k, v in locals().items() if k not in ("self", "__class__")
        }
        self._initial_config = dict(config)
        self._plugins = _worker_plugins(client, plugins)
        for plugin in self._plugins:
            config = dict(plugin.configure_worker(config))  # type: ignore[arg-type]
        self._init_from_config(client, config)

    def _init_from_config(self, client: temporalio.client.Client, config: dict[str, Any]) -> None:
        """Build from the options as the plugins left them (stock does the same); a
        plugin may drop a key: its default then applies."""
        self._config = config
        o = _Options({**_defaults(), **config})
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
        check_create(client)
        self._created_in = os.getpid()
        if isinstance(o.activity_executor, ProcessPool) and o.pool_config is not None:
            raise WorkerConfigError("pool_config goes to the ProcessPool itself, not both")
        dc = client.data_converter
        if getattr(dc, "external_storage", None) is not None and o.activities:
            raise WorkerConfigError(
                "The client's data converter uses external storage (experimental in temporalio); "
                "pool.Worker does not support it for activities yet. Use a payload codec, or "
                "temporalio.worker.Worker for these activities."
            )

        self._client = client
        self._on_fatal_error = o.on_fatal_error
        self._graceful = o.graceful_shutdown_timeout
        self._started = False
        self._shutdown_requested = asyncio.Event()
        self._shutdown_complete = asyncio.Event()
        self._ready = asyncio.Event()
        self._async_context_task: asyncio.Task[Any] | None = None
        self._async_context_run: asyncio.Task[None] | None = None
        self._async_context_error: BaseException | None = None
        self._async_exiting = False

        # -- activity side (ours) --
        if o.activities:
            _warn_if_threads_fewer_than_slots(
                o.activity_executor, o.max_concurrent_activities, o.tuner
            )
        self._activity_side: _ActivitySide | None = None
        remote = bool(o.activities) and not o.no_remote_activities
        if remote:
            plan = _plan_activities(
                o.activities,
                o.activity_executor,
                o.processes,
                o.pool_config,
                _activity_slots(
                    o.max_concurrent_activities,
                    o.tuner,
                    lambda: ReserveContext.for_worker(
                        o.task_queue, o.identity or client.identity, o.build_id, o.deployment_config
                    ),
                ),
                _poller_count(
                    o.max_concurrent_activity_task_polls, o.activity_task_poller_behavior
                ),
                o.activity_type_limits or {},
            )
            if o.max_activities_per_second is not None and o.max_activities_per_second <= 0:
                raise WorkerConfigError("max_activities_per_second must be positive")
            if (
                o.max_task_queue_activities_per_second is not None
                and o.max_task_queue_activities_per_second <= 0
            ):
                raise WorkerConfigError("max_task_queue_activities_per_second must be positive")
            versioning_build_id = o.build_id if o.use_worker_versioning else None
            if o.deployment_config is not None and o.deployment_config.use_worker_versioning:
                versioning_build_id = o.deployment_config.version.build_id
            self._activity_side = _ActivitySide(
                client=client,
                task_queue=o.task_queue,
                identity=o.identity,
                plan=plan,
                shared_state_manager=o.shared_state_manager,
                max_activities_per_second=o.max_activities_per_second,
                max_task_queue_activities_per_second=o.max_task_queue_activities_per_second,
                default_heartbeat_throttle=o.default_heartbeat_throttle_interval,
                max_heartbeat_throttle=o.max_heartbeat_throttle_interval,
                disable_payload_error_limit=o.disable_payload_error_limit,
                build_id=versioning_build_id,
                use_worker_versioning=bool(versioning_build_id),
                local_timeout_buffer=(plan.pool.config if plan.pool else PoolConfig()).seconds(
                    "local_timeout_buffer"
                ),
                interceptors=activity_interceptors(client, o.interceptors),
                poll_scaling=_poll_scaling(
                    o.max_concurrent_activity_task_polls, o.activity_task_poller_behavior
                ),
            )
        elif o.processes is not None or o.pool_config is not None or o.activity_type_limits:
            raise WorkerConfigError(
                "processes / pool_config / activity_type_limits were given but this worker "
                "runs no remote activities (no activities, or no_remote_activities=True)"
            )

        # -- workflow side (temporalio's own worker) --
        self._inner: temporalio.worker.Worker | None = None
        self._local_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._local_in_pool: LocalActivityExecutor | None = None
        if o.workflows or o.nexus_service_handlers:
            local_executor: concurrent.futures.Executor | None = None
            local_shared_state: SharedStateManager | None = None
            has_sync = any(
                not temporalio.activity._Definition.must_from_callable(a).is_async
                for a in o.activities
            )
            if o.workflows and o.activities and has_sync:
                # Sync local activities: in the pool's children, or in threads when the
                # user gave a ThreadPoolExecutor (or no pool runs).
                pool_for_local = self.process_pool
                if isinstance(o.activity_executor, concurrent.futures.ThreadPoolExecutor):
                    local_executor = o.activity_executor
                elif pool_for_local is not None:
                    self._local_in_pool = LocalActivityExecutor(
                        pool_for_local, client.data_converter
                    )
                    local_executor = self._local_in_pool
                    local_shared_state = self._local_in_pool.shared_state
                else:
                    self._local_executor = concurrent.futures.ThreadPoolExecutor(
                        max_workers=o.max_concurrent_local_activities or 16,
                        thread_name_prefix="local-activity",
                    )
                    local_executor = self._local_executor
            inner_tuner = o.tuner
            if o.tuner is not None:
                # The inner worker polls no activities: give it a harmless supplier (and
                # no second max_workers warning).
                inner_tuner = WorkerTuner.create_composite(
                    workflow_supplier=o.tuner._get_workflow_task_slot_supplier(),
                    activity_supplier=temporalio.worker.FixedSizeSlotSupplier(1),
                    local_activity_supplier=o.tuner._get_local_activity_task_slot_supplier(),
                    nexus_supplier=o.tuner._get_nexus_slot_supplier(),
                )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                self._inner = temporalio.worker.Worker(
                    _without_plugins(client),
                    task_queue=o.task_queue,
                    activities=list(o.activities) if o.workflows else [],
                    nexus_service_handlers=o.nexus_service_handlers,
                    workflows=o.workflows,
                    activity_executor=local_executor,
                    shared_state_manager=local_shared_state,
                    workflow_task_executor=o.workflow_task_executor,
                    nexus_task_executor=o.nexus_task_executor,
                    workflow_runner=o.workflow_runner,
                    unsandboxed_workflow_runner=o.unsandboxed_workflow_runner,
                    plugins=[],
                    interceptors=o.interceptors,
                    build_id=o.build_id,
                    identity=o.identity,
                    max_cached_workflows=o.max_cached_workflows,
                    max_concurrent_workflow_tasks=o.max_concurrent_workflow_tasks,
                    max_concurrent_local_activities=o.max_concurrent_local_activities,
                    max_concurrent_nexus_tasks=o.max_concurrent_nexus_tasks,
                    tuner=inner_tuner,
                    max_concurrent_workflow_task_polls=o.max_concurrent_workflow_task_polls,
                    nonsticky_to_sticky_poll_ratio=o.nonsticky_to_sticky_poll_ratio,
                    no_remote_activities=True,
                    sticky_queue_schedule_to_start_timeout=o.sticky_queue_schedule_to_start_timeout,
                    graceful_shutdown_timeout=o.graceful_shutdown_timeout,
                    plugin_shutdown_timeout=o.plugin_shutdown_timeout,
                    workflow_failure_exception_types=o.workflow_failure_exception_types,
                    debug_mode=o.debug_mode,
                    # Eager activities would run in this process: the pool runs them.
                    disable_eager_activity_execution=True,
                    max_eager_activity_reservations_per_workflow_task=o.max_eager_activity_reservations_per_workflow_task,
                    use_worker_versioning=o.use_worker_versioning,
                    disable_safe_workflow_eviction=o.disable_safe_workflow_eviction,
                    deployment_config=o.deployment_config,
                    patch_activation_callback=o.patch_activation_callback,
                    workflow_task_poller_behavior=o.workflow_task_poller_behavior,
                    nexus_task_poller_behavior=o.nexus_task_poller_behavior,
                    disable_payload_error_limit=o.disable_payload_error_limit,
                    max_workflow_task_external_storage_concurrency=o.max_workflow_task_external_storage_concurrency,
                )

    # -- the stock worker's members ---------------------------------------------------------

    def config(self, *, active_config: bool = False) -> dict[str, Any]:
        """The options this worker was built with (a copy); with ``active_config``, as
        the plugins changed them."""
        config = dict(self._config if active_config else self._initial_config)
        config["activities"] = list(config.get("activities", []))
        config["workflows"] = list(config.get("workflows", []))
        return config

    @property
    def task_queue(self) -> str:
        return str(self._config["task_queue"])

    @property
    def client(self) -> temporalio.client.Client:
        return self._client

    @client.setter
    def client(self, value: temporalio.client.Client) -> None:
        """Move the worker to ``value``'s connection; in-flight calls finish on the old one."""
        if self._inner is not None:
            self._inner.client = _without_plugins(value)
        if self._activity_side is not None:
            self._activity_side.replace_client(value)
        self._client = value
        self._config["client"] = value
        self._initial_config["client"] = value

    @property
    def is_running(self) -> bool:
        return self._started and not self.is_shutdown

    @property
    def is_shutdown(self) -> bool:
        return self._shutdown_complete.is_set()

    @property
    def process_pool(self) -> ProcessPool | None:
        """The supervised pool running sync activities (None when not used)."""
        return self._activity_side.pool if self._activity_side else None

    @property
    def activity_slots(self) -> Slots | None:
        """The activity slots (None when this worker runs no remote activities)."""
        return self._activity_side.slots if self._activity_side else None

    def observe_tasks(
        self,
        *,
        on_schedule_to_start: Callable[[str, float], None] | None = None,
        on_run_time: Callable[[str, float], None] | None = None,
    ) -> None:
        """Be called with (activity type, seconds) for every task (used by metrics)."""
        if self._activity_side is not None:
            self._activity_side.observers = (on_schedule_to_start, on_run_time)
            self._activity_side.wire_observers()

    @property
    def shared_state_manager(self) -> SharedStateManager | None:
        """The manager carrying heartbeats from the children (created when not given)."""
        return self._activity_side.shared_state if self._activity_side else None

    @property
    def dispatcher(self) -> Dispatcher | None:
        return self._activity_side.dispatcher if self._activity_side else None

    def snapshot(self, *, sample: bool = False) -> WorkerSnapshot:
        """A copy of the activity side's counters and the pool's state. Call it on the
        worker's loop; ``sample`` first refreshes each child's memory and CPU figures."""
        side = self._activity_side
        if side is None:
            return WorkerSnapshot()
        pool_snapshot = None
        if side.pool is not None and side.pool.started:
            if sample:
                side.pool.sample()
            pool_snapshot = side.pool.snapshot()
        dispatcher = side.dispatcher
        if dispatcher is None:
            return WorkerSnapshot(pool=pool_snapshot)
        return WorkerSnapshot(
            running=dispatcher.outstanding,
            started=dict(dispatcher.started),
            outcomes=dict(dispatcher.stats),
            heartbeat_rpcs=dispatcher.heartbeats.rpcs,
            heartbeat_errors=dispatcher.heartbeats.errors,
            pool=pool_snapshot,
        )

    def cancel_activities(self) -> None:
        """Cancel every running activity now (a second shutdown signal does this): each
        is reported cancelled with reason "worker shutdown"."""
        side = self._activity_side
        if side is not None and side.dispatcher is not None:
            side.dispatcher.cancel_all_for_shutdown()

    def readiness(self) -> dict[str, str]:
        """Each readiness check -> ``"ok"`` or what is wrong (``/readyz`` serves this).
        Call it on the worker's loop: it reads live state."""
        if self.is_shutdown:
            worker = "shut down"
        elif self._shutdown_requested.is_set():
            worker = "shutting down"
        elif not self._ready.is_set():
            worker = "starting"
        else:
            worker = "ok"
        checks = {"worker": worker}
        side = self._activity_side
        if side is not None:
            poller = side.poller
            if poller is None:
                checks["polling"] = "not started"
            elif poller.poll_failure is not None:
                checks["polling"] = f"activity polls fail: {poller.poll_failure}"
            else:
                checks["polling"] = "ok"
            if side.pool is not None:
                snapshot = side.pool.snapshot()
                up = snapshot.idle + snapshot.busy
                checks["children"] = "ok" if up else f"no child is ready (0 of {snapshot.size})"
        return checks

    def __repr__(self) -> str:
        state = "running" if self.is_running else ("shut down" if self.is_shutdown else "new")
        parts = [f"task_queue={self.task_queue!r}", state]
        if self._activity_side is not None:
            parts.append(repr(self._activity_side))
        return f"<pool.Worker [{' | '.join(parts)}]>"

    async def run(self) -> None:
        """Run until :meth:`shutdown`; raises the fatal error if the worker fails.

        Each plugin's ``run_worker`` wraps the run, the first plugin outermost."""
        check_use(self._created_in)
        if self._started:
            raise RuntimeError("Already started")
        self._started = True

        def wrap(
            plugin: temporalio.worker.Plugin, inner: Callable[[Any], Awaitable[None]]
        ) -> Callable[[Any], Awaitable[None]]:
            return lambda worker: plugin.run_worker(worker, inner)

        def innermost(worker: Any) -> Awaitable[None]:
            return worker._run()  # type: ignore[no-any-return]

        run: Callable[[Any], Awaitable[None]] = innermost
        for plugin in reversed(self._plugins):
            run = wrap(plugin, run)
        await run(self)

    async def _run(self) -> None:
        try:
            if self._activity_side is not None:
                await self._activity_side.start()
        except BaseException:
            with contextlib.suppress(Exception):
                if self._activity_side is not None:
                    await self._activity_side.close()
            self._shutdown_complete.set()
            raise

        self._ready.set()
        tasks: dict[str, asyncio.Task[Any]] = {
            "shutdown": asyncio.create_task(self._shutdown_requested.wait()),
        }
        if self._inner is not None:
            tasks["workflows"] = asyncio.create_task(self._inner.run(), name="workflow-worker")
        if self._activity_side is not None:
            tasks["activities"] = asyncio.create_task(
                self._activity_side.run(), name="activity-worker"
            )
        exception: BaseException | None = None
        try:
            await asyncio.shield(asyncio.wait(tasks.values(), return_when=asyncio.FIRST_COMPLETED))
            for name, task in tasks.items():
                if name != "shutdown" and task.done():
                    exception = task.exception() or PoolError(
                        f"The {name} side of the worker stopped unexpectedly"
                    )
                    break
            if exception is not None:
                logger.error("Worker failed, shutting down", exc_info=exception)
                if self._on_fatal_error is not None:
                    try:
                        await self._on_fatal_error(exception)
                    except Exception:
                        logger.warning("Fatal error handler failed", exc_info=True)
        except asyncio.CancelledError as err:
            logger.info("Worker cancelled, shutting down")
            exception = err

        tasks["shutdown"].cancel()
        if self._inner is None:  # temporalio's worker says it itself
            logger.info(
                "Beginning worker shutdown, will wait %s before cancelling activities",
                self._graceful,
            )
        await self._shutdown_sides(tasks)
        self._shutdown_complete.set()
        if exception is not None:
            raise exception

    async def _shutdown_sides(self, tasks: dict[str, asyncio.Task[Any]]) -> None:
        steps: list[Awaitable[None]] = []
        inner: asyncio.Future[None] | None = None
        if self._inner is not None:
            inner = asyncio.ensure_future(self._inner_shutdown(tasks.get("workflows")))
            steps.append(inner)
        if self._activity_side is not None:
            # Local activities run in the pool too: it stops once temporalio's worker is
            # done, unless the activity side failed (a crash loop: no child may come back
            # for the local activities waiting for one).
            failed = "activities" in tasks and tasks["activities"].done()
            wait_for_local = self._local_in_pool is not None and not failed
            steps.append(
                self._activity_side.shutdown(
                    self._graceful.total_seconds(),
                    before_close=inner if wait_for_local else None,
                )
            )
        results = await asyncio.gather(*steps, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                logger.error("Error during shutdown", exc_info=result)
        for task in tasks.values():
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: no "never retrieved" warning
        if self._local_executor is not None:
            self._local_executor.shutdown(wait=False)

    async def _inner_shutdown(self, run_task: asyncio.Task[Any] | None) -> None:
        assert self._inner is not None
        if run_task is not None and run_task.done():
            return
        await self._inner.shutdown()
        if run_task is not None:
            with contextlib.suppress(BaseException):
                await run_task

    async def wait_ready(self) -> None:
        """Wait until :meth:`run` has started every part (the children are up).

        Returns at once if the worker already shut down; :meth:`run` raises the
        start-up error itself.
        """
        ready = asyncio.ensure_future(self._ready.wait())
        done = asyncio.ensure_future(self._shutdown_complete.wait())
        try:
            await asyncio.wait([ready, done], return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            done.cancel()

    async def shutdown(self) -> None:
        """Begin shutdown (safe to repeat) and wait until it has completed."""
        self._shutdown_requested.set()
        if not self._started:
            return
        await self._shutdown_complete.wait()

    async def __aenter__(self) -> Worker:
        if self._async_context_task is not None:
            raise RuntimeError("Already started")
        current = asyncio.current_task()
        if current is None:
            raise RuntimeError("Can only use async with inside a task")
        self._async_context_task = current

        async def run() -> None:
            try:
                await self.run()
            except BaseException as err:
                self._async_context_error = err
                # Before ready, __aenter__ is waiting on this task and raises err itself.
                if self._ready.is_set() and not self._async_exiting:
                    current.cancel()

        self._async_context_run = asyncio.create_task(run())
        # Unlike the stock worker, wait until the children are up (or start-up failed),
        # so the block starts with a working pool and a bad option fails here.
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait([ready, self._async_context_run], return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self._async_context_run.done() and self._async_context_error is not None:
            raise self._async_context_error
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *args: Any) -> None:
        if self._async_context_run is None:
            raise RuntimeError("Never started")
        self._async_exiting = True
        await self.shutdown()
        await self._async_context_run
        if self._async_context_error is not None and (
            exc_type is None or issubclass(exc_type, asyncio.CancelledError)
        ):
            raise self._async_context_error


class _ActivitySide:
    def __init__(
        self,
        *,
        client: temporalio.client.Client,
        task_queue: str,
        identity: str | None,
        plan: _ActivityPlan,
        shared_state_manager: SharedStateManager | None,
        max_activities_per_second: float | None,
        max_task_queue_activities_per_second: float | None,
        default_heartbeat_throttle: timedelta,
        max_heartbeat_throttle: timedelta,
        disable_payload_error_limit: bool,
        build_id: str | None,
        use_worker_versioning: bool,
        local_timeout_buffer: float,
        interceptors: Sequence[temporalio.worker.Interceptor],
        poll_scaling: tuple[int, int, int] | None = None,
    ) -> None:
        self._client = client
        self._interceptors = list(interceptors)
        self._task_queue = task_queue
        self._identity = identity
        self.plan = plan
        self.pool = plan.pool
        self._given_shared_state = shared_state_manager
        self._shared_state: Any = shared_state_manager
        self._owns_shared_state = False
        self._rate = max_activities_per_second
        self._poll_settings = PollSettings(
            task_queue=task_queue,
            pollers=plan.pollers,
            scaling=poll_scaling,
            max_task_queue_activities_per_second=max_task_queue_activities_per_second,
            build_id=build_id,
            use_worker_versioning=use_worker_versioning,
        )
        self._dispatch_settings = DispatchSettings(
            task_queue=task_queue,
            default_heartbeat_throttle=default_heartbeat_throttle,
            max_heartbeat_throttle=max_heartbeat_throttle,
            local_timeout_buffer=local_timeout_buffer,
            blob_size_limit=None,
            disable_payload_error_limit=disable_payload_error_limit,
        )
        self.service: ActivityService | None = None
        self.dispatcher: Dispatcher | None = None
        self.poller: Poller | None = None
        self.metrics: ActivityMetrics | None = None
        self.slots = plan.slots
        self._fatal: asyncio.Future[BaseException] | None = None
        self._poller_task: asyncio.Task[None] | None = None
        self.observers: tuple[Callable[[str, float], None] | None, ...] = (None, None)

    def __repr__(self) -> str:
        parts = [repr(self.slots)]
        if self.pool is not None:
            parts.append(repr(self.pool))
        if self.dispatcher is not None:
            parts.append(repr(self.dispatcher))
        return " ".join(parts)

    @property
    def shared_state(self) -> Any:
        return self._shared_state

    def wire_observers(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.on_schedule_to_start, self.dispatcher.on_run_time = self.observers

    def replace_client(self, client: temporalio.client.Client) -> None:
        self._client = client
        if self.service is not None:
            self.service.replace_client(client)
        if self.dispatcher is not None:
            self.dispatcher.client = client

    def _fail_threadsafe(self, error: BaseException) -> None:
        loop = self._fatal.get_loop() if self._fatal is not None else None
        if loop is not None:
            loop.call_soon_threadsafe(self.fail, error)

    def fail(self, error: BaseException) -> None:
        """A background part failed for good: the worker fails with ``error``."""
        if self._fatal is not None and not self._fatal.done():
            self._fatal.set_result(error)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._fatal = loop.create_future()
        meter = _runtime(self._client).metric_meter
        namespace = self._client.namespace
        self.metrics = ActivityMetrics(meter, namespace, self._task_queue)
        self.service = ActivityService(
            self._client, self._identity, interceptors=[RequestMetrics(meter, namespace)]
        )
        blob_limit = await self._describe_namespace()
        self._dispatch_settings = replace(self._dispatch_settings, blob_size_limit=blob_limit)
        sender = None
        conversion = ChildConversion(None, {}, frozenset())
        if self.pool is not None:
            sender = await self._start_shared_state()
            conversion = child_conversion(
                self._client.data_converter, self.plan.definitions, self.plan.dynamic
            )
        self.dispatcher = Dispatcher(
            service=self.service,
            settings=self._dispatch_settings,
            activities=self.plan.definitions,
            dynamic=self.plan.dynamic,
            data_converter=self._client.data_converter,
            client=self._client,
            pool=self.pool,
            thread_executor=self.plan.thread_executor,
            shared_state=self._shared_state,
            release_slot=self.slots.release,
            metric_meter=meter,
            type_limits=self.plan.type_limits,
            metrics=self.metrics,
            interceptors=self._interceptors,
            decode_headers=self._client.config()["header_codec_behavior"]
            == temporalio.client.HeaderCodecBehavior.CODEC,
            children_convert=conversion.types,
        )
        self.wire_observers()
        if self.pool is not None:
            specs = conversion.specs
            await self.pool.start(
                activities=specs,
                converter=conversion.converter,
                heartbeat_sender=sender,
                on_fatal=self._fail_threadsafe,
            )
        self.poller = Poller(
            service=self.service,
            settings=self._poll_settings,
            slots=self.slots,
            limiter=RateLimiter(self._rate) if self._rate else None,
            pool=self.pool,
            dispatch=self.dispatcher.start,
            metrics=self.metrics,
        )

    async def _describe_namespace(self) -> int | None:
        assert self.service is not None
        try:
            response = await self.service.call(
                "DescribeNamespace", DescribeNamespaceRequest(namespace=self.service.namespace)
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                raise WorkerConfigError(
                    f"Namespace {self.service.namespace!r} does not exist on "
                    f"{self.service.target}: create it (temporal operator namespace create) "
                    "or connect the client to the right namespace"
                ) from err
            raise PoolError(
                f"Cannot reach the Temporal server at {self.service.target}: "
                f"{describe_rpc_error(err)}"
            ) from err
        limit = response.namespace_info.limits.blob_size_limit_error
        return int(limit) or None

    async def _start_shared_state(self) -> Any:
        assert self.pool is not None
        if self._shared_state is None:
            from shared_state import SharedStateManager as OurManager

            # Starting the manager's server process takes a few hundred ms.
            self._shared_state = await asyncio.get_running_loop().run_in_executor(
                None, OurManager.create
            )
            self._owns_shared_state = True
        manager = self._shared_state
        loop = asyncio.get_running_loop()
        if hasattr(manager, "add_error_listener"):

            def on_error(err: BaseException) -> None:
                lost = SharedStateLostError(
                    f"The shared state manager (heartbeat channel) failed: {err}. The worker "
                    "stops rather than run activities whose heartbeats go nowhere."
                )
                loop.call_soon_threadsafe(self.fail, lost)

            manager.add_error_listener(on_error)
        if hasattr(manager, "heartbeat_sender"):
            return manager.heartbeat_sender()
        # Any temporalio SharedStateManager: one registration yields its sender.
        probe = b"__pool_sender_probe__"
        sender = await manager.register_heartbeater(probe, lambda *details: None)
        await manager.unregister_heartbeater(probe)
        return sender

    async def run(self) -> None:
        """Poll and dispatch until shutdown; raises the fatal error if one happens."""
        assert self.poller is not None and self._fatal is not None
        self._poller_task = asyncio.create_task(self.poller.run(), name="activity-poller")
        sampler = asyncio.create_task(self._sample_metrics(), name="activity-metrics")
        waiting: list[asyncio.Future[Any]] = [self._poller_task, self._fatal]
        try:
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sampler.cancel()
        if self._fatal in done:
            raise self._fatal.result()
        error = self._poller_task.exception()
        if error is not None:
            raise error

    async def _sample_metrics(self) -> None:
        """sdk-core's slot gauges, sampled every second."""
        assert self.poller is not None and self.metrics is not None
        while True:
            self.metrics.sample(self.slots.used, self.slots.free)
            await asyncio.sleep(_METRICS_SAMPLE_INTERVAL)

    async def shutdown(
        self, graceful: float, before_close: asyncio.Future[None] | None = None
    ) -> None:
        if self.poller is not None:
            self.poller.stop()
        if self._poller_task is not None:
            with contextlib.suppress(BaseException):
                await self._poller_task
        await self._send_shutdown_worker()
        if self.dispatcher is not None:
            self.dispatcher.begin_shutdown()
            if not await self.dispatcher.wait_idle(graceful):
                self.dispatcher.cancel_all_for_shutdown()
                await self.dispatcher.wait_idle()
            await self.dispatcher.heartbeats.close()
        if before_close is not None:
            await asyncio.wait([before_close])
        await self.close()

    async def _send_shutdown_worker(self) -> None:
        if self.service is None or self.poller is None:
            return
        request = ShutdownWorkerRequest(
            namespace=self.service.namespace,
            identity=self.service.identity,
            worker_instance_key=self.poller.worker_instance_key,
            task_queue=self._task_queue,
            reason="graceful shutdown",
            sticky_task_queue="",
        )
        request.task_queue_types.append(TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
        try:
            await asyncio.wait_for(
                self.service.call_once("ShutdownWorker", request, 5.0), timeout=6.0
            )
        except (grpc.aio.AioRpcError, asyncio.TimeoutError) as err:
            # Never retried; UNIMPLEMENTED / UNAVAILABLE are expected on some servers.
            logger.debug("ShutdownWorker: %s", describe_rpc_error(err))

    async def close(self) -> None:
        """Stop the children, the shared state manager and the channel."""
        if self.pool is not None and self.pool.started:
            await self.pool.stop()
        if self._owns_shared_state and self._shared_state is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._shared_state.shutdown)
            self._shared_state = None
        if self.service is not None:
            await self.service.close()
