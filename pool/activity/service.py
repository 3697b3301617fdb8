"""The activity side's own gRPC connection to the Temporal frontend.

    client's settings (target, TLS or mTLS, API key, namespace, RPC metadata, identity)
        -> channel_settings -> a grpc.aio channel -> ActivityService.call / call_once
    a failed attempt -> the pure rules of ``retry.py`` (clock and random source injected
        here) -> sleep and try again, or raise

``poll_with_retry`` runs a long poll the same way with core's task-poll rules.

Compression is chosen per call (:func:`call_compression`): grpc compresses on the
thread that makes the call, here the worker's one asyncio thread, so gzip of a 1 MiB
payload (~6 ms to send, ~2 ms more to receive one the server compressed) would be paid
on the parent's core for every task. ``"auto"`` compresses only what is cheap to.

Large payloads are moved, not re-encoded (pool.activity.wire): a poll's answer keeps
its ``input`` field's bytes for the child (:class:`Polled`), and a completion whose
result a child serialised goes out as a ``Spliced`` request, the child's bytes appended
to the request's own. A large result need not come here at all:
:meth:`ActivityService.child_settings` tells children how to reach the frontend the
same way, and they send it themselves (runner.report).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

import grpc
import grpc.aio
import temporalio.client
import temporalio.service
from temporalio.api.workflowservice.v1 import (
    PollActivityTaskQueueRequest,
    PollActivityTaskQueueResponse,
    RespondActivityTaskCompletedResponse,
    WorkflowServiceStub,
)

from runner.report import Connection, ReportSettings

from .retry import NORMAL_BACKOFF, Backoff, RandomSource, call_retry_delay, poll_retry
from .wire import field_bytes

__all__ = [
    "COMPRESS_UP_TO",
    "ActivityService",
    "CallObserver",
    "Polled",
    "RpcCompression",
    "call_compression",
    "channel_settings",
    "describe_rpc_error",
    "poll_with_retry",
]

logger = logging.getLogger("pool.service")

T = TypeVar("T")


class CallObserver(Protocol):
    """Told of every call: our own hook rather than a grpc.aio interceptor, which costs
    ~0.1-0.2 ms of CPU more per call."""

    def __call__(self, name: str, request: Any, call: Any) -> None:
        """A call starts: its RPC name, its request and the grpc.aio call."""

    def ended(self, name: str, code: grpc.StatusCode, seconds: float) -> None:
        """A call made elsewhere on this worker's behalf (a child's) ended so."""


# Core's deadlines: a long poll is completed empty by the server at about 60 s;
# 70 s leaves it room. Every other call gets 30 s.
POLL_DEADLINE = 70.0
CALL_DEADLINE = 30.0
# Core raises the inbound limit to 128 MiB (grpcio's default is 4 MiB).
MAX_MESSAGE = 128 * 1024 * 1024

RpcCompression = Literal["auto", "gzip", "none"]
# "auto" gzips a request up to this size (a few hundred microseconds at most).
COMPRESS_UP_TO = 32 * 1024
_POLL = "PollActivityTaskQueue"


def call_compression(
    mode: RpcCompression, method: str, request_size: Callable[[], int]
) -> grpc.Compression:
    """How one call is sent. ``"gzip"``: every call (sdk-core's choice); ``"none"``: none;
    ``"auto"``: requests up to ``COMPRESS_UP_TO`` bytes gzipped, larger ones as they are,
    and polls uncompressed, so the server (which answers in the request's encoding)
    sends each task's payloads uncompressed too. ``request_size`` is asked only when
    needed (measuring a large message costs ~0.2 ms per MiB)."""
    if mode == "gzip":
        return grpc.Compression.Gzip
    if mode == "none" or method == _POLL or request_size() > COMPRESS_UP_TO:
        return grpc.Compression.NoCompression
    return grpc.Compression.Gzip


class Polled(NamedTuple):
    """What a PollActivityTaskQueue call answers: the response, and its ``input``
    field's bytes as they came (``wire.field_bytes``; None when it has none)."""

    response: PollActivityTaskQueueResponse
    input: memoryview | None


def _polled(data: bytes) -> Polled:
    return Polled(PollActivityTaskQueueResponse.FromString(data), field_bytes(data, _INPUT))


_INPUT = PollActivityTaskQueueResponse.DESCRIPTOR.fields_by_name["input"].number
_METHOD = "/temporal.api.workflowservice.v1.WorkflowService/"


def _stub(channel: grpc.aio.Channel) -> WorkflowServiceStub:
    """The generated stub, except: PollActivityTaskQueue answers :class:`Polled`, and
    RespondActivityTaskCompleted serialises its request by duck type (the generated
    one calls the request class's method: no ``wire.Spliced``)."""
    stub = WorkflowServiceStub(channel)
    stub.PollActivityTaskQueue = channel.unary_unary(  # type: ignore[misc]
        _METHOD + "PollActivityTaskQueue",
        request_serializer=PollActivityTaskQueueRequest.SerializeToString,
        response_deserializer=_polled,
    )
    stub.RespondActivityTaskCompleted = channel.unary_unary(  # type: ignore[misc]
        _METHOD + "RespondActivityTaskCompleted",
        request_serializer=_serialize,
        response_deserializer=RespondActivityTaskCompletedResponse.FromString,
    )
    return stub


def _serialize(request: Any) -> bytes:
    return request.SerializeToString()  # type: ignore[no-any-return]


def channel_settings(client: temporalio.client.Client, identity: str | None = None) -> Connection:
    """Everything needed to open our own channel the way the client connects."""
    config: temporalio.service.ConnectConfig = client.service_client.config
    target = config.target_host
    if "://" in target:
        target = target.split("://", 1)[1]
    tls = config.tls
    api_key = client.api_key
    material: tuple[bytes | None, bytes | None, bytes | None] | None = None
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
        material = (tls.server_root_ca_cert, tls.client_private_key, tls.client_cert)
        if tls.domain:
            options.append(("grpc.ssl_target_name_override", tls.domain))
    elif tls is True or (tls is None and api_key):
        material = (None, None, None)  # the system's roots, no client certificate
    metadata: list[tuple[str, str | bytes]] = [("temporal-namespace", client.namespace)]
    for key, value in client.rpc_metadata.items():
        metadata.append((key.lower(), value))
    if api_key:
        metadata.append(("authorization", f"Bearer {api_key}"))
    return Connection(
        target=target,
        tls=material,
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
        on_call: CallObserver | None = None,
        *,
        compression: RpcCompression = "auto",
        clock: Callable[[], float] = time.monotonic,
        rng: RandomSource | None = None,
    ) -> None:
        self._clock = clock
        self._rng = rng or random.Random()
        self.compression: RpcCompression = compression
        self._settings = channel_settings(client, identity)
        self._on_call = on_call
        self._channel = self._open(self._settings)
        self._stub = _stub(self._channel)
        self._old_channels: list[grpc.aio.Channel] = []
        # Counts replace_client: settings given to children under another one are stale.
        self.generation = 0

    @staticmethod
    def _open(settings: Connection) -> grpc.aio.Channel:
        if settings.tls is None:
            return grpc.aio.insecure_channel(settings.target, options=settings.options)
        credentials = grpc.ssl_channel_credentials(*settings.tls)
        return grpc.aio.secure_channel(settings.target, credentials, options=settings.options)

    def child_settings(self, from_size: int, up_to: int | None) -> ReportSettings:
        """How a child reaches the frontend as this service does (target, TLS, API key,
        metadata, identity, the compression rule), for the results of ``from_size`` to
        ``up_to`` bytes (None: no upper bound) that children send themselves."""
        gzip_up_to = {"gzip": MAX_MESSAGE, "none": -1}.get(self.compression, COMPRESS_UP_TO)
        return ReportSettings(self._settings, from_size, up_to, gzip_up_to, CALL_DEADLINE)

    def call_ended(self, name: str, code: grpc.StatusCode, seconds: float) -> None:
        """A call a child made for this worker ended: counted as our own calls are."""
        if self._on_call is not None:
            self._on_call.ended(name, code, seconds)

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
        self._channel = self._open(self._settings)
        self._stub = _stub(self._channel)
        self.generation += 1

    async def close(self) -> None:
        for channel in [*self._old_channels, self._channel]:
            await channel.close(grace=None)
        self._old_channels.clear()

    def method(self, name: str) -> Callable[..., Any]:
        return getattr(self._stub, name)

    def call_once(self, name: str, request: Any, timeout: float, size: int | None = None) -> Any:
        """Start one RPC; returns the grpc.aio call (awaitable, cancellable). ``size``:
        the request's size in bytes when the caller knows it (else it is measured)."""
        compression = call_compression(
            self.compression, name, request.ByteSize if size is None else lambda: size
        )
        call = self.method(name)(
            request, timeout=timeout, metadata=self._settings.metadata, compression=compression
        )
        if self._on_call is not None:
            self._on_call(name, request, call)
        return call

    async def call(
        self,
        name: str,
        request: Any,
        *,
        backoff: Backoff = NORMAL_BACKOFF,
        give_up_at: float | None = None,
        size: int | None = None,
    ) -> Any:
        """A unary call with core's retry rules. ``give_up_at`` (monotonic) extends
        the retry budget, so a result is held while the server is away until the
        task's own deadline passes. ``size``: as for :meth:`call_once`."""
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.call_once(name, request, CALL_DEADLINE, size)
            except grpc.aio.AioRpcError as err:
                delay = call_retry_delay(
                    err.code(),
                    err.details() or "",
                    attempt=attempt,
                    started=started,
                    now=self._clock(),
                    rng=self._rng,
                    backoff=backoff,
                    give_up_at=give_up_at,
                )
                if delay is None:
                    raise
                logger.debug("%s failed (%s), retrying in %.2f s", name, err.code(), delay)
                await asyncio.sleep(delay)


async def poll_with_retry(
    start_poll: Callable[[], Awaitable[T]],
    *,
    on_failure: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    rng: RandomSource | None = None,
) -> T:
    """Run a long poll until it answers, retrying as core does for task polls;
    ``on_failure`` hears of each failed attempt (for readiness)."""
    rng = rng or random.Random()
    attempt = 0
    fatal_since: float | None = None
    while True:
        attempt += 1
        try:
            return await start_poll()
        except grpc.aio.AioRpcError as err:
            code = err.code()
            retry = poll_retry(code, attempt=attempt, fatal_since=fatal_since, now=clock(), rng=rng)
            if retry is None:
                raise
            fatal_since = retry.fatal_since
            logger.warning(
                "Activity poll failed (%s: %s); retrying in %.1f s",
                code,
                err.details(),
                retry.delay,
            )
            if on_failure is not None:
                on_failure(describe_rpc_error(err))
            await asyncio.sleep(retry.delay)


def describe_rpc_error(err: BaseException) -> str:
    if isinstance(err, grpc.aio.AioRpcError):
        return f"{err.code().name}: {err.details()}"
    return f"{type(err).__name__}: {err}"
