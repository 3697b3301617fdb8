"""pool/worker/plan.py: the worker's options -> its plan, without a process or a server.

    options (over the constructor's defaults) ─▶ check_options / check_pool_options  errors
                                              ─▶ plan_activity_side  ActivityPlan or None
                                              ─▶ plan_local_activities  LocalRoute
Each bad option is an error that names the problem and the fix.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
import temporalio.worker
from temporalio import activity
from temporalio.common import RawValue, WorkerDeploymentVersion
from temporalio.worker import (
    FixedSizeSlotSupplier,
    PollerBehaviorAutoscaling,
    ResourceBasedSlotConfig,
    WorkerDeploymentConfig,
    WorkerTuner,
)

import pool
from pool.activity.slots import ResourceTargets
from pool.worker import facade, workflow_side
from pool.worker.plan import (
    DEFAULT_SLOTS,
    ActivityPlan,
    LocalRoute,
    Route,
    check_options,
    check_pool_options,
    plan_activity_side,
    plan_local_activities,
    thread_warning,
)

pytestmark = pytest.mark.unit


@activity.defn
def crunch(n: int) -> int:
    return n * n


@activity.defn
async def fetch(n: int) -> int:
    return n


@activity.defn(dynamic=True)
def anything(args: Sequence[RawValue]) -> None:
    return None


def _unpicklable() -> Any:
    lock = threading.Lock()

    @activity.defn(name="closes_over_a_lock")
    def closes_over_a_lock() -> bool:
        return lock.locked()

    return closes_over_a_lock


@activity.defn(name="crunch")
def crunch_again(n: int) -> int:
    return n


class _Workflow:  # a stand-in: planning never looks inside a workflow
    pass


def options(**given: Any) -> Any:
    return facade.options_of({"task_queue": "q", **given})


def plan(**given: Any) -> ActivityPlan:
    result = plan_activity_side(options(**given))
    assert result is not None
    return result


@pytest.fixture
def threads():
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    yield executor
    executor.shutdown()


@pytest.fixture
def stock_processes():
    """A stdlib ProcessPoolExecutor: nothing starts until a submit, which never comes."""
    executor = concurrent.futures.ProcessPoolExecutor(max_workers=3, max_tasks_per_child=7)
    yield executor
    executor.shutdown()


# -- routing ------------------------------------------------------------------------------


def test_sync_activities_go_to_children_async_ones_to_the_loop():
    p = plan(activities=[crunch, fetch, anything])
    assert p.routes == {"crunch": Route.CHILD, "fetch": Route.LOOP, "": Route.CHILD}
    assert p.runs_pool and p.given_pool is None
    assert p.pool_config == pool.PoolConfig()
    assert p.thread_executor is None


def test_a_thread_pool_runs_the_sync_activities_in_threads_and_no_pool(threads):
    p = plan(activities=[crunch, fetch], activity_executor=threads)
    assert p.routes == {"crunch": Route.THREAD, "fetch": Route.LOOP}
    assert p.thread_executor is threads
    assert not p.runs_pool


def test_only_async_activities_need_no_pool():
    p = plan(activities=[fetch])
    assert p.routes == {"fetch": Route.LOOP}
    assert not p.runs_pool


def test_processes_and_pool_config_shape_the_pool_to_build():
    config = pool.PoolConfig(max_tasks_per_child=5)
    p = plan(activities=[crunch], processes=3, pool_config=config)
    assert p.pool_config == pool.PoolConfig(processes=3, max_tasks_per_child=5)


# -- the executor: taken, replaced or refused ---------------------------------------------


def test_a_stock_process_pool_executor_is_replaced_by_a_pool_of_its_size(stock_processes):
    p = plan(activities=[crunch], activity_executor=stock_processes)
    assert p.pool_config is not None
    assert p.pool_config.processes == 3
    assert p.pool_config.max_tasks_per_child == 7
    assert len(p.notes) == 1
    assert "ProcessPoolExecutor(max_workers=3)" in p.notes[0]
    assert "runs 3 supervised child processes instead" in p.notes[0]
    assert "max_tasks_per_child=7" in p.notes[0]


def test_processes_overrides_a_stock_executors_size(stock_processes):
    p = plan(activities=[crunch], activity_executor=stock_processes, processes=2)
    assert p.pool_config is not None and p.pool_config.processes == 2
    assert "runs 2 supervised child processes" in p.notes[0]


def test_a_pool_of_ones_own_is_used_as_given():
    own = pool.ProcessPool(2)
    p = plan(activities=[crunch], activity_executor=own)
    assert p.given_pool is own and p.pool_config is None
    assert p.runs_pool and p.routes == {"crunch": Route.CHILD}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"processes": 2}, "processes / pool_config cannot be combined"),
        ({"pool_config": pool.PoolConfig()}, "pool_config goes to the ProcessPool itself"),
    ],
)
def test_a_pool_of_ones_own_takes_no_pool_options(given, message):
    o = options(activities=[crunch], activity_executor=pool.ProcessPool(2), **given)
    with pytest.raises(pool.WorkerConfigError, match=message):
        check_pool_options(o, external_storage=False)
        plan_activity_side(o)


def test_another_executor_is_refused_naming_the_three_that_work():
    class Inline(concurrent.futures.Executor):
        pass

    with pytest.raises(pool.WorkerConfigError) as err:
        plan(activities=[crunch], activity_executor=Inline())
    assert "activity_executor Inline is not supported" in str(err.value)
    for fix in ("pool.ProcessPool", "ThreadPoolExecutor", "ProcessPoolExecutor"):
        assert fix in str(err.value)


def test_a_sync_activity_that_cannot_reach_the_children_fails_at_construction(threads):
    with pytest.raises(pool.WorkerConfigError) as err:
        plan(activities=[_unpicklable()])
    assert "closes_over_a_lock cannot be serialised with cloudpickle" in str(err.value)
    assert "Make it a module-level function" in str(err.value)
    # Threads need no pickling.
    assert plan(activities=[_unpicklable()], activity_executor=threads).thread_executor


# -- registration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("activities", "error", "message"),
    [
        ([crunch, crunch_again], ValueError, "More than one activity named crunch"),
        ([anything, anything], TypeError, "More than one dynamic activity"),
    ],
)
def test_registration_errors_are_the_stock_ones(activities, error, message):
    with pytest.raises(error, match=message):
        plan(activities=activities)


def test_a_class_instead_of_an_instance_is_refused_as_stock():
    @activity.defn(name="callable")
    class Callable:
        def __call__(self) -> None:
            return None

    with pytest.raises(TypeError, match="Activity named callable is a class instead of"):
        plan(activities=[Callable])


# -- limits, slots, pollers ---------------------------------------------------------------


def test_type_limits_name_registered_types_and_are_positive():
    assert plan(activities=[crunch], activity_type_limits={"crunch": 2}).type_limits == {
        "crunch": 2
    }
    with pytest.raises(pool.WorkerConfigError, match=r"'nope'.*registered: crunch"):
        plan(activities=[crunch], activity_type_limits={"nope": 1})
    with pytest.raises(pool.WorkerConfigError, match=r"\['crunch'\] must be at least 1, got 0"):
        plan(activities=[crunch], activity_type_limits={"crunch": 0})


@pytest.mark.parametrize(
    "name", ["max_activities_per_second", "max_task_queue_activities_per_second"]
)
def test_rates_must_be_positive(name):
    assert getattr(plan(activities=[fetch], **{name: 2.5}), name) == 2.5
    with pytest.raises(pool.WorkerConfigError, match=f"{name} must be positive"):
        plan(activities=[fetch], **{name: 0})


def test_slots_from_the_count_or_the_tuner():
    assert plan(activities=[fetch]).slots == DEFAULT_SLOTS
    assert plan(activities=[fetch], max_concurrent_activities=7).slots == 7
    fixed = WorkerTuner.create_fixed(activity_slots=9)
    assert plan(activities=[fetch], tuner=fixed).slots == 9
    resource = WorkerTuner.create_resource_based(
        target_memory_usage=0.5,
        target_cpu_usage=0.6,
        activity_config=ResourceBasedSlotConfig(ramp_throttle=timedelta(milliseconds=3)),
    )
    assert plan(activities=[fetch], tuner=resource).slots == ResourceTargets(
        minimum=1, maximum=500, ramp_throttle=0.003, target_memory=0.5, target_cpu=0.6
    )
    with pytest.raises(pool.WorkerConfigError, match="must be at least 1, got 0"):
        plan(activities=[fetch], max_concurrent_activities=0)


def test_pollers_from_the_count_or_the_behaviour():
    assert plan(activities=[fetch]).pollers == 5
    assert plan(activities=[fetch], max_concurrent_activity_task_polls=2).pollers == 2
    scaling = PollerBehaviorAutoscaling(minimum=1, maximum=8, initial=3)
    p = plan(activities=[fetch], activity_task_poller_behavior=scaling)
    assert (p.pollers, p.poll_scaling) == (8, (1, 8, 3))
    with pytest.raises(pool.WorkerConfigError, match="poller count must be at least 1, got 0"):
        plan(activities=[fetch], max_concurrent_activity_task_polls=0)


def test_the_versioning_build_id_is_sent_only_with_versioning_on():
    assert plan(activities=[fetch], build_id="b1").versioning_build_id is None
    on = plan(activities=[fetch], build_id="b1", use_worker_versioning=True)
    assert on.versioning_build_id == "b1"
    deployment = WorkerDeploymentConfig(
        version=WorkerDeploymentVersion("dep", "b2"), use_worker_versioning=True
    )
    assert plan(activities=[fetch], deployment_config=deployment).versioning_build_id == "b2"


def test_the_thread_pool_warning_is_stocks_and_only_for_threads(threads, stock_processes):
    assert thread_warning(threads, 5, None) == (
        "Worker max_concurrent_activities is 5 but activity_executor's max_workers is only 2"
    )
    assert thread_warning(threads, 2, None) is None
    assert thread_warning(stock_processes, 50, None) is None
    tuner = WorkerTuner.create_fixed(activity_slots=8)
    assert "is 8 but" in (thread_warning(threads, None, tuner) or "")


# -- the options as a whole ---------------------------------------------------------------


def test_stocks_errors_for_bad_combinations():
    with pytest.raises(ValueError, match="At least one activity, Nexus service, or workflow"):
        check_options(options())
    with pytest.raises(ValueError, match="when also specifying tuner"):
        check_options(
            options(
                activities=[fetch],
                tuner=WorkerTuner.create_fixed(activity_slots=1),
                max_concurrent_activities=3,
            )
        )


def test_external_storage_is_refused_for_activities():
    with pytest.raises(pool.WorkerConfigError, match="external storage"):
        check_pool_options(options(activities=[fetch]), external_storage=True)
    check_pool_options(options(workflows=[_Workflow]), external_storage=True)


@pytest.mark.parametrize(
    "given",
    [{"processes": 2}, {"pool_config": pool.PoolConfig()}, {"activity_type_limits": {"a": 1}}],
)
def test_pool_options_without_remote_activities_are_an_error(given):
    for o in (
        options(workflows=[_Workflow], **given),
        options(activities=[crunch], no_remote_activities=True, **given),
    ):
        with pytest.raises(pool.WorkerConfigError, match="runs no remote activities"):
            plan_activity_side(o)
    assert plan_activity_side(options(activities=[crunch], no_remote_activities=True)) is None


def test_where_sync_local_activities_run(threads):
    both = {"workflows": [_Workflow], "activities": [crunch]}
    assert plan_local_activities(options(**both), pool_runs=True) is LocalRoute.POOL
    assert plan_local_activities(options(**both), pool_runs=False) is LocalRoute.OWN_THREADS
    with_threads = options(**both, activity_executor=threads)
    assert plan_local_activities(with_threads, pool_runs=False) is LocalRoute.USER_THREADS
    only_async = options(workflows=[_Workflow], activities=[fetch])
    assert plan_local_activities(only_async, pool_runs=False) is LocalRoute.NONE
    no_workflows = options(activities=[crunch])
    assert plan_local_activities(no_workflows, pool_runs=True) is LocalRoute.NONE


def test_every_constructor_option_reaches_temporalios_worker_or_ours():
    """A new option of temporalio's worker (added to ours) is passed through or handled."""
    ours = set(inspect.signature(pool.Worker.__init__).parameters) - {"self", "client"}
    passed = set(workflow_side._passed_through(options(workflows=[_Workflow])))
    handled = {  # by the activity side, the plugins or the local-activity executor
        "activities",
        "activity_executor",
        "shared_state_manager",
        "plugins",
        "tuner",
        "no_remote_activities",
        "disable_eager_activity_execution",
        "max_concurrent_activities",
        "max_concurrent_activity_task_polls",
        "activity_task_poller_behavior",
        "max_heartbeat_throttle_interval",
        "default_heartbeat_throttle_interval",
        "max_activities_per_second",
        "max_task_queue_activities_per_second",
        "on_fatal_error",
        "processes",
        "pool_config",
        "activity_type_limits",
    }
    assert ours - passed - handled == set()
    stock = set(inspect.signature(temporalio.worker.Worker.__init__).parameters)
    assert passed <= stock


def test_the_inner_worker_gets_a_harmless_activity_supplier():
    tuner = WorkerTuner.create_fixed(workflow_slots=3, activity_slots=40)
    inner = workflow_side.inner_tuner(tuner)
    assert inner is not None
    supplier = inner._get_activity_task_slot_supplier()
    assert isinstance(supplier, FixedSizeSlotSupplier) and supplier.num_slots == 1
    assert inner._get_workflow_task_slot_supplier().num_slots == 3  # type: ignore[attr-defined]
    assert workflow_side.inner_tuner(None) is None
