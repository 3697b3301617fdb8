"""The workflow side: temporalio's own worker, and where its sync local activities run.

    Options + LocalRoute (plan.py) + the activity side's ProcessPool
        ─▶ local_activity_executor   the user's ThreadPoolExecutor / a LocalActivityExecutor
                                     over the pool's children / a thread pool of our own
        ─▶ build_inner               temporalio.worker.Worker(no_remote_activities=True,
                                     eager activities off, plugins already applied, a tuner
                                     whose activity supplier is a harmless FixedSize(1))

The inner worker runs the workflows, the local activities and the Nexus handlers; it never
polls activity tasks (the activity side does).
"""

from __future__ import annotations

import concurrent.futures
import warnings
from dataclasses import dataclass
from typing import Any

import temporalio.client
import temporalio.worker
from temporalio.worker import SharedStateManager, WorkerTuner

from .._local import LocalActivityExecutor
from ..supervisor import ProcessPool
from .plan import DEFAULT_LOCAL_THREADS, LocalRoute, Options
from .plugins import without_plugins

__all__ = ["LocalExecutors", "WorkflowSide", "build_workflow_side"]


@dataclass(frozen=True)
class LocalExecutors:
    """Where temporalio's worker sends sync local activities, and what we own of it."""

    executor: concurrent.futures.Executor | None = None
    shared_state: SharedStateManager | None = None
    in_pool: LocalActivityExecutor | None = None  # ours, over the pool's children
    own_threads: concurrent.futures.ThreadPoolExecutor | None = None  # ours, shut at the end


@dataclass(frozen=True)
class WorkflowSide:
    """temporalio's worker (None when there are no workflows nor Nexus handlers)."""

    inner: temporalio.worker.Worker | None = None
    local: LocalExecutors = LocalExecutors()


def local_activity_executor(
    route: LocalRoute, o: Options, pool: ProcessPool | None, client: temporalio.client.Client
) -> LocalExecutors:
    """The executor the plan's route names (built, not started)."""
    if route is LocalRoute.USER_THREADS:
        return LocalExecutors(executor=o.activity_executor)
    if route is LocalRoute.POOL:
        assert pool is not None
        in_pool = LocalActivityExecutor(pool, client.data_converter)
        return LocalExecutors(executor=in_pool, shared_state=in_pool.shared_state, in_pool=in_pool)
    if route is LocalRoute.OWN_THREADS:
        threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=o.max_concurrent_local_activities or DEFAULT_LOCAL_THREADS,
            thread_name_prefix="local-activity",
        )
        return LocalExecutors(executor=threads, own_threads=threads)
    return LocalExecutors()


def inner_tuner(tuner: WorkerTuner | None) -> WorkerTuner | None:
    """The user's tuner for the inner worker, whose activity supplier is never used: it
    polls no activities (and gives no second max_workers warning)."""
    if tuner is None:
        return None
    return WorkerTuner.create_composite(
        workflow_supplier=tuner._get_workflow_task_slot_supplier(),
        activity_supplier=temporalio.worker.FixedSizeSlotSupplier(1),
        local_activity_supplier=tuner._get_local_activity_task_slot_supplier(),
        nexus_supplier=tuner._get_nexus_slot_supplier(),
    )


def _passed_through(o: Options) -> dict[str, Any]:
    """The options temporalio's worker takes exactly as the user gave them."""
    names = (
        "task_queue nexus_service_handlers workflows workflow_task_executor "
        "nexus_task_executor workflow_runner unsandboxed_workflow_runner interceptors "
        "build_id identity max_cached_workflows max_concurrent_workflow_tasks "
        "max_concurrent_local_activities max_concurrent_nexus_tasks "
        "max_concurrent_workflow_task_polls nonsticky_to_sticky_poll_ratio "
        "sticky_queue_schedule_to_start_timeout graceful_shutdown_timeout "
        "plugin_shutdown_timeout workflow_failure_exception_types debug_mode "
        "max_eager_activity_reservations_per_workflow_task use_worker_versioning "
        "disable_safe_workflow_eviction deployment_config patch_activation_callback "
        "workflow_task_poller_behavior nexus_task_poller_behavior "
        "disable_payload_error_limit max_workflow_task_external_storage_concurrency"
    )
    return {name: getattr(o, name) for name in names.split()}


def build_inner(
    client: temporalio.client.Client, o: Options, local: LocalExecutors
) -> temporalio.worker.Worker:
    """temporalio's worker for the workflows, the local activities and Nexus."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return temporalio.worker.Worker(
            without_plugins(client),
            **_passed_through(o),
            activities=list(o.activities) if o.workflows else [],
            activity_executor=local.executor,
            shared_state_manager=local.shared_state,
            plugins=[],
            tuner=inner_tuner(o.tuner),
            no_remote_activities=True,
            # Eager activities would run in this process: the pool runs them.
            disable_eager_activity_execution=True,
        )


def build_workflow_side(
    client: temporalio.client.Client, o: Options, route: LocalRoute, pool: ProcessPool | None
) -> WorkflowSide:
    """temporalio's worker and its local-activity executor, or nothing to run."""
    if not (o.workflows or o.nexus_service_handlers):
        return WorkflowSide()
    local = local_activity_executor(route, o, pool, client)
    return WorkflowSide(inner=build_inner(client, o, local), local=local)
