"""``pool.Worker``: a drop-in for ``temporalio.worker.Worker``.

pool.Worker ─┬─ temporalio.worker.Worker   workflows, local activities, Nexus
             │                             (no_remote_activities=True); sync local
             │                             activities: LocalActivityExecutor -> ProcessPool
             └─ ActivitySide               remote activities, ours:
                  ActivityService  grpc.aio channel from the client's settings
                  Poller           polls only with a free slot (and idle child)
                  Dispatcher       decode, route, report one outcome per task
                  HeartbeatManager throttle, RPC, answers -> cancellation
                  ProcessPool      supervised children (runner/)
                  SharedStateManager heartbeats from children (shared_state/)

    Worker(client, **options) ─▶ plugins.configure ─▶ plan.py (pure checks and plan)
        ─▶ activity_side.build_activity_side, workflow_side.build_workflow_side ─▶ Sides
    run / shutdown / async with ─▶ lifecycle.py (the state, the start and shutdown order)
    snapshot / readiness ─▶ snapshot.py
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import os
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import temporalio.client
import temporalio.worker
from temporalio.worker import (
    PollerBehavior,
    PollerBehaviorSimpleMaximum,
    SharedStateManager,
    UnsandboxedWorkflowRunner,
    WorkerDeploymentConfig,
    WorkerTuner,
    WorkflowRunner,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from .._config import PoolConfig
from .._forks import check_create, check_use
from ..activity.dispatch import Dispatcher
from ..activity.slots import Slots
from ..supervisor import ProcessPool
from .activity_side import build_activity_side
from .lifecycle import Lifecycle, Sides, State, run_sides
from .plan import Options, check_options, check_pool_options, plan_local_activities, thread_warning
from .plugins import configure, run_through, without_plugins, worker_plugins
from .snapshot import WorkerSnapshot, side_checks, take_snapshot
from .workflow_side import build_workflow_side

__all__ = ["PASSTHROUGH_MODULES", "Worker", "options_of"]

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


@functools.cache
def _defaults() -> dict[str, Any]:
    """Each constructor option's default, for an option a plugin dropped."""
    parameters = inspect.signature(Worker.__init__).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def options_of(config: Mapping[str, Any]) -> Options:
    """``config`` (the options as the plugins left them) over every option's default."""
    return Options({**_defaults(), **config})


def _given(values: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor's options, from its ``locals()``."""
    return {k: v for k, v in values.items() if k not in ("self", "__class__")}


@dataclass
class _AsyncBlock:
    """An ``async with worker:`` block: the task running the worker, and how it ended."""

    run: asyncio.Task[None] | None = None
    error: BaseException | None = None
    exiting: bool = False  # __aexit__ began: a failure now no longer cancels the block


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
        config = _given(locals())
        self._initial_config = dict(config)
        self._plugins = worker_plugins(client, plugins)
        self._init_from_config(client, configure(self._plugins, config))

    def _init_from_config(self, client: temporalio.client.Client, config: dict[str, Any]) -> None:
        """Build from the options as the plugins left them (stock does the same); a
        plugin may drop a key: its default then applies."""
        self._config = config
        o = options_of(config)
        check_options(o)
        check_create(client)
        self._created_in = os.getpid()
        external = getattr(client.data_converter, "external_storage", None) is not None
        check_pool_options(o, external_storage=external)
        self._client = client
        self._on_fatal_error = o.on_fatal_error
        self._graceful = o.graceful_shutdown_timeout
        self._lifecycle = Lifecycle()
        self._block: _AsyncBlock | None = None
        if o.activities:
            warning = thread_warning(o.activity_executor, o.max_concurrent_activities, o.tuner)
            if warning is not None:
                warnings.warn(warning, stacklevel=3)  # the caller of Worker(...)
        activity = build_activity_side(client, o)
        pool = activity.pool if activity is not None else None
        route = plan_local_activities(o, pool_runs=pool is not None)
        workflow = build_workflow_side(client, o, route, pool)
        self._sides = Sides(
            activity=activity,
            inner=workflow.inner,
            local_in_pool=workflow.local.in_pool,
            local_threads=workflow.local.own_threads,
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
        if self._sides.inner is not None:
            self._sides.inner.client = without_plugins(value)
        if self._sides.activity is not None:
            self._sides.activity.replace_client(value)
        self._client = value
        self._config["client"] = value
        self._initial_config["client"] = value

    @property
    def is_running(self) -> bool:
        return self._lifecycle.started and not self._lifecycle.ended

    @property
    def is_shutdown(self) -> bool:
        return self._lifecycle.ended

    @property
    def process_pool(self) -> ProcessPool | None:
        """The supervised pool running sync activities (None when not used)."""
        return self._sides.activity.pool if self._sides.activity else None

    @property
    def activity_slots(self) -> Slots | None:
        """The activity slots (None when this worker runs no remote activities)."""
        return self._sides.activity.slots if self._sides.activity else None

    def observe_tasks(
        self,
        *,
        on_schedule_to_start: Callable[[str, float], None] | None = None,
        on_run_time: Callable[[str, float], None] | None = None,
    ) -> None:
        """Be called with (activity type, seconds) for every task (used by metrics)."""
        if self._sides.activity is not None:
            self._sides.activity.observers = (on_schedule_to_start, on_run_time)
            self._sides.activity.wire_observers()

    @property
    def shared_state_manager(self) -> SharedStateManager | None:
        """The manager carrying heartbeats from the children (created when not given)."""
        return self._sides.activity.shared_state if self._sides.activity else None

    @property
    def dispatcher(self) -> Dispatcher | None:
        return self._sides.activity.dispatcher if self._sides.activity else None

    def snapshot(self, *, sample: bool = False) -> WorkerSnapshot:
        """A copy of the activity side's counters and the pool's state. Call it on the
        worker's loop; ``sample`` first refreshes each child's memory and CPU figures."""
        return take_snapshot(self._sides.activity, sample=sample)

    def cancel_activities(self) -> None:
        """Cancel every running activity now (a second shutdown signal does this): each
        is reported cancelled with reason "worker shutdown"."""
        side = self._sides.activity
        if side is not None and side.dispatcher is not None:
            side.dispatcher.cancel_all_for_shutdown()

    def readiness(self) -> dict[str, str]:
        """Each readiness check -> ``"ok"`` or what is wrong (``/readyz`` serves this).
        Call it on the worker's loop: it reads live state."""
        return {"worker": self._lifecycle.describe(), **side_checks(self._sides.activity)}

    def __repr__(self) -> str:
        state = "running" if self.is_running else ("shut down" if self.is_shutdown else "new")
        parts = [f"task_queue={self.task_queue!r}", state]
        if self._sides.activity is not None:
            parts.append(repr(self._sides.activity))
        return f"<pool.Worker [{' | '.join(parts)}]>"

    async def run(self) -> None:
        """Run until :meth:`shutdown`; raises the fatal error if the worker fails.

        Each plugin's ``run_worker`` wraps the run, the first plugin outermost."""
        check_use(self._created_in)
        if self._lifecycle.started:
            raise RuntimeError("Already started")
        self._lifecycle.move(State.STARTING)

        def innermost(worker: Any) -> Awaitable[None]:
            return worker._run()  # type: ignore[no-any-return]

        await run_through(self._plugins, innermost)(self)

    async def _run(self) -> None:
        await run_sides(self._sides, self._lifecycle, self._graceful, self._on_fatal_error)

    async def wait_ready(self) -> None:
        """Wait until :meth:`run` has started every part (the children are up).

        Returns at once if the worker already shut down; :meth:`run` raises the
        start-up error itself.
        """
        await self._lifecycle.wait_ready_or_ended()

    async def shutdown(self) -> None:
        """Begin shutdown (safe to repeat) and wait until it has completed."""
        self._lifecycle.shutdown_requested.set()
        if not self._lifecycle.started:
            return
        await self._lifecycle.wait_ended()

    async def __aenter__(self) -> Worker:
        if self._block is not None:
            raise RuntimeError("Already started")
        current = asyncio.current_task()
        if current is None:
            raise RuntimeError("Can only use async with inside a task")
        block = self._block = _AsyncBlock()

        async def run() -> None:
            try:
                await self.run()
            except BaseException as err:
                block.error = err
                # Before ready, __aenter__ is waiting on this task and raises err itself.
                if self._lifecycle.was_ready and not block.exiting:
                    current.cancel()

        block.run = asyncio.create_task(run())
        # Unlike the stock worker, wait until the children are up (or start-up failed),
        # so the block starts with a working pool and a bad option fails here.
        ready = asyncio.create_task(self._lifecycle.wait_ready())
        await asyncio.wait([ready, block.run], return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if block.run.done() and block.error is not None:
            raise block.error
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *args: Any) -> None:
        if self._block is None or self._block.run is None:
            raise RuntimeError("Never started")
        self._block.exiting = True
        await self.shutdown()
        await self._block.run
        if self._block.error is not None and (
            exc_type is None or issubclass(exc_type, asyncio.CancelledError)
        ):
            raise self._block.error
