"""The activity side's own gRPC connection to the Temporal frontend.

A ``grpc.aio`` channel built from the client's connection settings (target, TLS
or mTLS, API key, namespace header, RPC metadata, identity) and the sdk-core
retry rules (activity-protocol.md §6): normal calls back off 100 ms x1.7 up to
5 s for at most 10 s or 10 attempts; polls retry without end on transient
errors and for 60 s on the others; ``NOT_FOUND`` is an answer, never retried.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import grpc.aio
import temporalio.client
import temporalio.service
from temporalio.api.workflowservice.v1 import WorkflowServiceStub

__all__ = ["ActivityService", "RetryPolicy", "channel_settings"]

logger = logging.getLogger("pool.service")

T = TypeVar("T")

# Core's deadlines: a long poll is completed empty by the server at about 60 s;
# 70 s leaves it room. Every other call gets 30 s.
POLL_DEADLINE = 70.0
CALL_DEADLINE = 30.0
# Core raises the inbound limit to 128 MiB (grpcio's default is 4 MiB).
MAX_MESSAGE = 128 * 1024 * 1024

RETRYABLE = frozenset(
    {
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
    }
)
# A poll also retries these without limit (the transport or our own deadline).
POLL_RETRYABLE = RETRYABLE | {grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED}
_TOO_LARGE_PREFIXES = (
    "grpc: received message larger than max",
    "grpc: received message after decompression larger than max",
    "grpc: message after decompression larger than max",
)


@dataclass(frozen=True)
class RetryPolicy:
    initial: float
    multiplier: float
    maximum: float
    max_elapsed: float | None
    max_attempts: int | None
    jitter: float = 0.2

    def delay(self, attempt: int) -> float:
        base = min(self.initial * self.multiplier ** (attempt - 1), self.maximum)
        return base * random.uniform(1 - self.jitter, 1 + self.jitter)


NORMAL_RETRY = RetryPolicy(
    initial=0.1, multiplier=1.7, maximum=5.0, max_elapsed=10.0, max_attempts=10
)
POLL_RETRY = RetryPolicy(
    initial=0.2, multiplier=2.0, maximum=10.0, max_elapsed=None, max_attempts=None
)
# RESOURCE_EXHAUSTED waits at least this much (core's throttle backoff).
THROTTLE_RETRY = RetryPolicy(
    initial=1.0, multiplier=2.0, maximum=10.0, max_elapsed=None, max_attempts=None
)
# Other errors on a poll: every 10 s for 60 s, then the worker fails.
POLL_FATAL_INTERVAL = 10.0
POLL_FATAL_BUDGET = 60.0


def is_too_large(err: grpc.aio.AioRpcError) -> bool:
    details = err.details() or ""
    return err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and details.startswith(
        _TOO_LARGE_PREFIXES
    )


@dataclass(frozen=True)
class _Settings:
    target: str
    credentials: grpc.ChannelCredentials | None
    options: tuple[tuple[str, Any], ...]
    metadata: tuple[tuple[str, str | bytes], ...]
    namespace: str
    identity: str


def channel_settings(client: temporalio.client.Client, identity: str | None = None) -> _Settings:
    """Everything needed to open our own channel the way the client connects."""
    config: temporalio.service.ConnectConfig = client.service_client.config
    target = config.target_host
    if "://" in target:
        target = target.split("://", 1)[1]
    tls = config.tls
    api_key = client.api_key
    credentials: grpc.ChannelCredentials | None = None
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 15_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.primary_user_agent", "temporal-process-pool"),
    ]
    if isinstance(tls, temporalio.service.TLSConfig):
        credentials = grpc.ssl_channel_credentials(
            root_certificates=tls.server_root_ca_cert,
            private_key=tls.client_private_key,
            certificate_chain=tls.client_cert,
        )
        if tls.domain:
            options.append(("grpc.ssl_target_name_override", tls.domain))
    elif tls is True or (tls is None and api_key):
        credentials = grpc.ssl_channel_credentials()
    metadata: list[tuple[str, str | bytes]] = [("temporal-namespace", client.namespace)]
    for key, value in client.rpc_metadata.items():
        metadata.append((key.lower(), value))
    if api_key:
        metadata.append(("authorization", f"Bearer {api_key}"))
    return _Settings(
        target=target,
        credentials=credentials,
        options=tuple(options),
        metadata=tuple(metadata),
        namespace=client.namespace,
        identity=identity or client.identity,
    )


class ActivityService:
    """Our stub over our channel; replaceable when ``worker.client`` changes."""

    def __init__(
        self,
        client: temporalio.client.Client,
        identity: str | None = None,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> None:
        self._settings = channel_settings(client, identity)
        self._interceptors = list(interceptors)
        self._channel = self._open(self._settings, self._interceptors)
        self._stub = WorkflowServiceStub(self._channel)
        self._old_channels: list[grpc.aio.Channel] = []

    @staticmethod
    def _open(
        settings: _Settings, interceptors: Sequence[grpc.aio.ClientInterceptor]
    ) -> grpc.aio.Channel:
        if settings.credentials is None:
            return grpc.aio.insecure_channel(
                settings.target,
                options=settings.options,
                compression=grpc.Compression.Gzip,
                interceptors=interceptors,
            )
        return grpc.aio.secure_channel(
            settings.target,
            settings.credentials,
            options=settings.options,
            compression=grpc.Compression.Gzip,
            interceptors=interceptors,
        )

    @property
    def namespace(self) -> str:
        return self._settings.namespace

    @property
    def identity(self) -> str:
        return self._settings.identity

    @property
    def target(self) -> str:
        return self._settings.target

    def replace_client(self, client: temporalio.client.Client) -> None:
        """Use ``client``'s connection from the next call on; in-flight calls finish."""
        self._old_channels.append(self._channel)
        self._settings = channel_settings(client, self._settings.identity)
        self._channel = self._open(self._settings, self._interceptors)
        self._stub = WorkflowServiceStub(self._channel)

    async def close(self) -> None:
        for channel in [*self._old_channels, self._channel]:
            await channel.close(grace=None)
        self._old_channels.clear()

    def method(self, name: str) -> Callable[..., Any]:
        return getattr(self._stub, name)

    def call_once(self, name: str, request: Any, timeout: float) -> Any:
        """Start one RPC; returns the grpc.aio call (awaitable, cancellable)."""
        return self.method(name)(request, timeout=timeout, metadata=self._settings.metadata)

    async def call(
        self,
        name: str,
        request: Any,
        *,
        retry: RetryPolicy = NORMAL_RETRY,
        give_up_at: float | None = None,
    ) -> Any:
        """A unary call with core's retry rules. ``give_up_at`` (monotonic) extends
        the retry budget, so a result is held while the server is away until the
        task's own deadline passes."""
        start = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.call_once(name, request, CALL_DEADLINE)
            except grpc.aio.AioRpcError as err:
                delay = _retry_delay(err, attempt, start, retry, give_up_at, RETRYABLE)
                if delay is None:
                    raise
                logger.debug("%s failed (%s), retrying in %.2f s", name, err.code(), delay)
                await asyncio.sleep(delay)


def _retry_delay(
    err: grpc.aio.AioRpcError,
    attempt: int,
    start: float,
    retry: RetryPolicy,
    give_up_at: float | None,
    retryable: frozenset[grpc.StatusCode],
) -> float | None:
    code = err.code()
    if code not in retryable or is_too_large(err):
        return None
    delay = retry.delay(attempt)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        delay = max(delay, THROTTLE_RETRY.delay(attempt))
    now = time.monotonic()
    within_budget = (retry.max_elapsed is None or now + delay - start <= retry.max_elapsed) and (
        retry.max_attempts is None or attempt < retry.max_attempts
    )
    if within_budget:
        return delay
    if give_up_at is not None and now + delay < give_up_at:
        return min(delay, retry.maximum)
    return None


async def poll_with_retry(
    start_poll: Callable[[], Awaitable[T]],
    *,
    on_failure: Callable[[str], None] | None = None,
) -> T:
    """Run a long poll until it answers, retrying as core does for task polls;
    ``on_failure`` hears of each failed attempt (for readiness)."""
    attempt = 0
    fatal_since: float | None = None
    while True:
        attempt += 1
        try:
            return await start_poll()
        except grpc.aio.AioRpcError as err:
            code = err.code()
            if code in POLL_RETRYABLE:
                fatal_since = None
                delay = POLL_RETRY.delay(attempt)
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    delay = max(delay, THROTTLE_RETRY.delay(attempt))
            else:
                now = time.monotonic()
                fatal_since = fatal_since or now
                if now - fatal_since >= POLL_FATAL_BUDGET:
                    raise
                delay = POLL_FATAL_INTERVAL
            logger.warning(
                "Activity poll failed (%s: %s); retrying in %.1f s", code, err.details(), delay
            )
            if on_failure is not None:
                on_failure(describe_rpc_error(err))
            await asyncio.sleep(delay)


def status_of(err: BaseException) -> grpc.StatusCode | None:
    return err.code() if isinstance(err, grpc.aio.AioRpcError) else None


def describe_rpc_error(err: BaseException) -> str:
    if isinstance(err, grpc.aio.AioRpcError):
        return f"{err.code().name}: {err.details()}"
    return f"{type(err).__name__}: {err}"
