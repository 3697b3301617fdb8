"""The activity side: remote activities polled, dispatched and reported by us.

Options ─▶ plan_activity_side (pure) ─▶ build_activity_side: the ProcessPool (given,
    or a new one from the plan's config) and the slots ─▶ ActivitySide (nothing started)
start: DescribeNamespace (blob limit) ─▶ SharedStateManager ─▶ Dispatcher ─▶
       ProcessPool.start (with how children send large results themselves) ─▶ Poller
run:   poller task + metrics sampler, until the poller ends or a part fails (fatal)
shutdown: stop polling ─▶ ShutdownWorker RPC ─▶ drain (graceful, then cancel) ─▶
       heartbeats ─▶ (temporalio's worker, when local activities use the pool) ─▶ close
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import grpc
import temporalio.client
import temporalio.runtime
import temporalio.worker
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.workflowservice.v1 import (
    DescribeNamespaceRequest,
    ShutdownWorkerRequest,
)
from temporalio.worker import CustomSlotSupplier, SharedStateManager

from runner.report import ReportSettings

from .._config import PoolConfig
from .._errors import PoolError, SharedStateLostError, WorkerConfigError
from .._interceptors import activity_interceptors
from ..activity.dispatch import Dispatcher, DispatchSettings
from ..activity.dispatch.conversion import ChildConversion, child_conversion
from ..activity.poller import Poller, PollSettings
from ..activity.service import ActivityService, describe_rpc_error
from ..activity.slots import CustomSlots, RateLimiter, ReserveContext, ResourceSlots, Slots
from ..observe.sdk_metrics import ActivityMetrics, RequestMetrics
from ..supervisor import ProcessPool
from .plan import ActivityPlan, Options, SlotsChoice, plan_activity_side

__all__ = ["ActivitySide", "build_activity_side", "build_pool", "build_slots"]

logger = logging.getLogger("pool.worker")

# How often the slot and poller gauges of the SDK's metrics are sampled.
_METRICS_SAMPLE_INTERVAL = 1.0


def build_slots(choice: SlotsChoice, reserve_context: Callable[[], ReserveContext]) -> Slots:
    """The slots the plan chose (a custom supplier gets sdk-core's reserve context)."""
    if isinstance(choice, CustomSlotSupplier):
        return CustomSlots(choice, reserve_context())
    if isinstance(choice, int):
        return Slots(choice)
    return ResourceSlots(choice)


def build_pool(plan: ActivityPlan) -> ProcessPool | None:
    """The user's ProcessPool, or a new one (not started) from the plan's config."""
    if plan.given_pool is not None:
        return plan.given_pool
    for note in plan.notes:
        logger.info("%s", note)
    return ProcessPool(config=plan.pool_config) if plan.pool_config is not None else None


def build_activity_side(client: temporalio.client.Client, o: Options) -> ActivitySide | None:
    """The plan's objects (the pool and the slots built, nothing started), or None when
    this worker runs no remote activities."""
    plan = plan_activity_side(o)
    if plan is None:
        return None
    return ActivitySide(
        client=client,
        task_queue=o.task_queue,
        identity=o.identity,
        plan=plan,
        pool=build_pool(plan),
        slots=build_slots(
            plan.slots,
            lambda: ReserveContext.for_worker(
                o.task_queue, o.identity or client.identity, o.build_id, o.deployment_config
            ),
        ),
        shared_state_manager=o.shared_state_manager,
        default_heartbeat_throttle=o.default_heartbeat_throttle_interval,
        max_heartbeat_throttle=o.max_heartbeat_throttle_interval,
        disable_payload_error_limit=o.disable_payload_error_limit,
        interceptors=activity_interceptors(client, o.interceptors),
    )


def _runtime(client: temporalio.client.Client) -> temporalio.runtime.Runtime:
    """The runtime the client's connection uses (its meter is the SDK's meter)."""
    return client.service_client.config.runtime or temporalio.runtime.Runtime.default()


class ActivitySide:
    """The remote activities, ours: service, dispatcher, poller, pool, shared state."""

    def __init__(
        self,
        *,
        client: temporalio.client.Client,
        task_queue: str,
        identity: str | None,
        plan: ActivityPlan,
        pool: ProcessPool | None,
        slots: Slots,
        shared_state_manager: SharedStateManager | None,
        default_heartbeat_throttle: timedelta,
        max_heartbeat_throttle: timedelta,
        disable_payload_error_limit: bool,
        interceptors: Sequence[temporalio.worker.Interceptor],
    ) -> None:
        self._client = client
        self._interceptors = list(interceptors)
        self._task_queue = task_queue
        self._identity = identity
        self.plan = plan
        self.pool = pool
        self._shared_state: Any = shared_state_manager
        self._owns_shared_state = False
        self._rate = plan.max_activities_per_second
        self._poll_settings = PollSettings(
            task_queue=task_queue,
            pollers=plan.pollers,
            scaling=plan.poll_scaling,
            max_task_queue_activities_per_second=plan.max_task_queue_activities_per_second,
            build_id=plan.versioning_build_id,
            use_worker_versioning=bool(plan.versioning_build_id),
        )
        self._dispatch_settings = DispatchSettings(
            task_queue=task_queue,
            default_heartbeat_throttle=default_heartbeat_throttle,
            max_heartbeat_throttle=max_heartbeat_throttle,
            local_timeout_buffer=(pool.config if pool else PoolConfig()).seconds(
                "local_timeout_buffer"
            ),
            blob_size_limit=None,
            disable_payload_error_limit=disable_payload_error_limit,
        )
        self.service: ActivityService | None = None
        self.dispatcher: Dispatcher | None = None
        self.poller: Poller | None = None
        self.metrics: ActivityMetrics | None = None
        self.slots = slots
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
            self._client,
            self._identity,
            on_call=RequestMetrics(meter, namespace),
            compression=(self.pool.config if self.pool else PoolConfig()).rpc_compression,
        )
        blob_limit = await self._describe_namespace()
        self._dispatch_settings = replace(self._dispatch_settings, blob_size_limit=blob_limit)
        sender, conversion = await self._children_inputs()
        report = self._report_settings(conversion, blob_limit)
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
            child_reports=self.service.generation if report is not None else None,
        )
        self.wire_observers()
        if self.pool is not None:
            specs = conversion.specs
            await self.pool.start(
                activities=specs,
                converter=conversion.converter,
                heartbeat_sender=sender,
                on_fatal=self._fail_threadsafe,
                report=report,
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

    async def _children_inputs(self) -> tuple[Any, ChildConversion]:
        """The heartbeat sender (the shared state started) and what children convert."""
        if self.pool is None:
            return None, ChildConversion(None, {}, frozenset())
        sender = await self._start_shared_state()
        conversion = child_conversion(
            self._client.data_converter, self.plan.definitions, self.plan.dynamic
        )
        return sender, conversion

    def _report_settings(
        self, conversion: ChildConversion, blob_limit: int | None
    ) -> ReportSettings | None:
        """How children send large results to the server themselves, or None where
        they never may: no pool, turned off, an interceptor or a codec that must see
        every result, or no activity whose result a child converts."""
        assert self.service is not None
        if self.pool is None or self.pool.config.child_reports_from is None:
            return None
        if self._interceptors or self._client.data_converter.payload_codec is not None:
            return None
        if not conversion.types:
            return None
        # Over the blob limit the parent fails the task (PayloadTooLarge), as stock does.
        up_to = None if self._dispatch_settings.disable_payload_error_limit else blob_limit
        return self.service.child_settings(self.pool.config.child_reports_from, up_to)

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
