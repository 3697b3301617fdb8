"""A child sends a large result to the Temporal server itself (issue 13).

    TaskDone with ``result`` (serialised Payloads, no codec applies)
        ─▶ ChildReporter.complete(token, result): RespondActivityTaskCompleted over the
           child's own channel to the frontend, one attempt
        ─▶ Reported(code, seconds): the server answered OK or NOT_FOUND (settled)
        ─▶ None: it could not be sent; the parent gets the result and sends it, with
           its retries

The parent would otherwise receive 1 MiB over the task pipe, append it to the request
and hand it to grpc on its one asyncio thread: ~3 ms of its core per MiB, for every task
on the host. Here that work is spread over the children's cores. The parent decides
which tasks a child may send (no interceptor and no codec, the client unchanged) and
gives every child the same :class:`ReportSettings` at start.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import grpc
from temporalio.api.workflowservice.v1 import RespondActivityTaskCompletedRequest

__all__ = ["ChildReporter", "Connection", "ReportSettings", "Reported", "field_head"]

logger = logging.getLogger("runner.report")

METHOD = "/temporal.api.workflowservice.v1.WorkflowService/RespondActivityTaskCompleted"
_RESULT = RespondActivityTaskCompletedRequest.DESCRIPTOR.fields_by_name["result"].number
_LENGTH_DELIMITED = 2


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field_head(number: int, length: int) -> bytes:
    """What precedes a length-delimited field's ``length`` bytes on the wire: its key
    (field ``number``, wire type 2) and its length, both varints."""
    return _varint(number << 3 | _LENGTH_DELIMITED) + _varint(length)


@dataclass(frozen=True)
class Connection:
    """How the worker reaches the frontend: its activity channel's (pool.activity.service)
    and each child's own. Picklable."""

    target: str
    # (root CA, client private key, client certificate chain) for TLS; None: plaintext.
    tls: tuple[bytes | None, bytes | None, bytes | None] | None
    options: tuple[tuple[str, Any], ...]
    metadata: tuple[tuple[str, str | bytes], ...]
    namespace: str
    identity: str


@dataclass(frozen=True)
class ReportSettings:
    """The worker's connection, and which results a child sends over it itself. It
    crosses in the ChildSpec."""

    connection: Connection
    from_size: int  # a result of fewer bytes goes back to the parent (it costs it little)
    up_to: int | None  # a larger one too: the parent fails it (the server's blob limit)
    gzip_up_to: int  # a request of at most this many bytes is gzipped (-1: none is)
    timeout: float = 30.0

    def wants(self, size: int) -> bool:
        """Whether a result of ``size`` bytes is the child's to send."""
        return size >= self.from_size and (self.up_to is None or size <= self.up_to)


class Reported(NamedTuple):
    """The server's answer to a completion a child sent."""

    code: str  # the grpc.StatusCode's name: "OK", or "NOT_FOUND" (already resolved)
    seconds: float  # how long the call took


class ChildReporter:
    """One child's connection for its completions, opened on first use."""

    def __init__(self, settings: ReportSettings) -> None:
        self.settings = settings
        self._send: Any = None
        self._warned = False

    def _method(self) -> Any:
        if self._send is None:
            s = self.settings.connection
            if s.tls is None:
                channel = grpc.insecure_channel(s.target, options=list(s.options))
            else:
                credentials = grpc.ssl_channel_credentials(*s.tls)
                channel = grpc.secure_channel(s.target, credentials, options=list(s.options))
            # No serializers: the request goes as the bytes we built, the answer is
            # not parsed (RespondActivityTaskCompletedResponse says nothing we use).
            self._send = channel.unary_unary(METHOD)
        return self._send

    def complete(self, token: bytes, result: bytes | memoryview) -> Reported | None:
        """Send the completion of the task ``token`` with ``result`` (serialised
        Payloads). The server's answer when it settles the task (OK, NOT_FOUND), or
        None when the parent must send it. Never raises."""
        s = self.settings
        head = RespondActivityTaskCompletedRequest(
            namespace=s.connection.namespace, task_token=token, identity=s.connection.identity
        ).SerializeToString()
        request = b"".join((head, field_head(_RESULT, len(result)), result))
        gzip = len(request) <= s.gzip_up_to
        started = time.monotonic()
        try:
            self._method()(
                request,
                timeout=s.timeout,
                metadata=s.connection.metadata,
                compression=grpc.Compression.Gzip if gzip else grpc.Compression.NoCompression,
            )
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.Call) else None
            if code == grpc.StatusCode.NOT_FOUND:
                return Reported(code.name, time.monotonic() - started)
            self._cannot_send(f"{getattr(code, 'name', code)}: {err}")
            return None
        except Exception as err:  # a channel that cannot be built, a bad option
            self._cannot_send(f"{type(err).__name__}: {err}")
            return None
        return Reported(grpc.StatusCode.OK.name, time.monotonic() - started)

    def _cannot_send(self, why: str) -> None:
        level = logging.DEBUG if self._warned else logging.WARNING
        self._warned = True
        logger.log(
            level,
            "A child could not send a completion to %s (%s); the worker sends it instead",
            self.settings.connection.target,
            why,
        )
