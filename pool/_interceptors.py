"""temporalio's activity interceptor chain, run in the parent around every activity.

    Dispatcher ─▶ build_chain(interceptors, Innermost(run))
        chain.init(Outbound(info, heartbeat))     interceptors wrap the outbound side;
                                                  Innermost.init points the activity
                                                  context's info/heartbeat at the
                                                  outermost outbound, as stock does
        chain.execute_activity(input)             each interceptor may read or replace
                                                  input.args and the result
            Innermost.execute_activity ─▶ run(input): the child, the thread or the loop

The chain runs in the parent for all three kinds of activity, with the activity
context set, exactly where the stock worker runs it; only the innermost step
differs (it hands the task to a child instead of a ``ProcessPoolExecutor``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import temporalio.activity
import temporalio.client
import temporalio.worker

import runner.context

__all__ = ["Innermost", "Outbound", "activity_interceptors", "build_chain"]


class Outbound(temporalio.worker.ActivityOutboundInterceptor):
    """The end of the outbound chain: the task's info and the dispatcher's heartbeat."""

    def __init__(  # the base class takes a `next`: this is the end of the chain
        self, info: temporalio.activity.Info, heartbeat: Callable[..., None]
    ) -> None:
        self._info = info
        self._heartbeat = heartbeat

    def info(self) -> temporalio.activity.Info:
        return self._info

    def heartbeat(self, *details: Any) -> None:
        self._heartbeat(*details)


class Innermost(temporalio.worker.ActivityInboundInterceptor):
    """The end of the inbound chain: runs the activity where its kind says."""

    def __init__(
        self, run: Callable[[temporalio.worker.ExecuteActivityInput], Awaitable[Any]]
    ) -> None:
        self._run = run
        self.heartbeat: Callable[..., None] | None = None
        self.intercepted = False

    def init(self, outbound: temporalio.worker.ActivityOutboundInterceptor) -> None:
        # As stock: set the callables on the current context rather than replacing
        # it, in case an interceptor kept a reference to it.
        runner.context.route_context_callables(outbound.info, outbound.heartbeat)
        self.heartbeat = outbound.heartbeat
        self.intercepted = not isinstance(outbound, Outbound)

    async def execute_activity(self, input: temporalio.worker.ExecuteActivityInput) -> Any:
        return await self._run(input)


def build_chain(
    interceptors: Sequence[temporalio.worker.Interceptor], innermost: Innermost
) -> temporalio.worker.ActivityInboundInterceptor:
    """The first interceptor given is the outermost, as in temporalio."""
    chain: temporalio.worker.ActivityInboundInterceptor = innermost
    for interceptor in reversed(list(interceptors)):
        chain = interceptor.intercept_activity(chain)
    return chain


def activity_interceptors(
    client: temporalio.client.Client, worker_interceptors: Sequence[Any]
) -> list[temporalio.worker.Interceptor]:
    """What the stock worker applies to activities: the client's interceptors that are
    also worker interceptors, then the worker's own (plugins already applied)."""
    from_client = [
        i
        for i in client.config(active_config=True)["interceptors"]
        if isinstance(i, temporalio.worker.Interceptor)
    ]
    return [*from_client, *worker_interceptors]
