"""Activities, a workflow and converters for tests/pool/test_payload_path.py (module
level: they cross into child processes). The converter tags every payload it builds
with the pid of the process that built it, and remembers in which processes it
decoded, so a test can tell where each conversion ran."""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import temporalio.converter
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

DECODED_IN: list[int] = []  # pids where the converter decoded (per process)
PID_KEY = "built-by-pid"
CODEC_KEY = "codec"


class PidPayloadConverter(temporalio.converter.DefaultPayloadConverter):
    def to_payloads(self, values: Sequence[Any]) -> list[Payload]:
        payloads = super().to_payloads(values)
        for payload in payloads:
            payload.metadata[PID_KEY] = str(os.getpid()).encode()
        return payloads

    def from_payloads(
        self, payloads: Sequence[Payload], type_hints: list[type] | None = None
    ) -> list[Any]:
        DECODED_IN.append(os.getpid())
        return super().from_payloads(payloads, type_hints)


PID_CONVERTER = temporalio.converter.DataConverter(payload_converter_class=PidPayloadConverter)


class MarkingCodec(temporalio.converter.PayloadCodec):
    """Reverses the payload's bytes and marks it: a child that got a payload the codec
    had not decoded would fail to parse it."""

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for p in payloads:
            wrapped = Payload(metadata=dict(p.metadata), data=p.SerializeToString()[::-1])
            wrapped.metadata[CODEC_KEY] = str(os.getpid()).encode()
            out.append(wrapped)
        return out

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [
            Payload.FromString(p.data[::-1]) if CODEC_KEY in p.metadata else p for p in payloads
        ]


def unpicklable_converter() -> temporalio.converter.DataConverter:
    # Defined in a function, the class is pickled by value, lock included: it fails.
    class LockedConverter(PidPayloadConverter):
        lock = threading.Lock()

    return temporalio.converter.DataConverter(payload_converter_class=LockedConverter)


@dataclasses.dataclass
class Item:
    name: str
    size: int


@activity.defn
def where(item: Item) -> dict[str, Any]:
    """Where the argument was decoded, and as what."""
    return {
        "pid": os.getpid(),
        "decoded_here": os.getpid() in DECODED_IN,
        "type": type(item).__name__,
        "size": item.size,
    }


@activity.defn
def reverses(data: str) -> str:
    return data[::-1]


@activity.defn
def needs_int(n: int) -> int:
    return n


@activity.defn
def returns_an_object() -> Any:
    return object()  # no payload converter takes it


@activity.defn
def returns_a_lock() -> Any:
    return threading.Lock()  # neither a payload nor picklable


@activity.defn
def retries_with_details(item: Item) -> dict[str, Any]:
    """The first attempt heartbeats and fails; the second returns the details."""
    info = activity.info()
    if info.attempt == 1:
        activity.heartbeat(item.name, item.size)
        raise ApplicationError("the first attempt fails after heartbeating")
    return {"details": list(info.heartbeat_details), "decoded_here": os.getpid() in DECODED_IN}


@workflow.defn(sandboxed=False)
class RunOne:
    @workflow.run
    async def run(self, name: str, args: list[Any]) -> Any:
        try:
            return await workflow.execute_activity(
                name,
                args=args,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(
                    maximum_attempts=2, initial_interval=timedelta(milliseconds=10)
                ),
            )
        except ActivityError as err:
            cause = err.cause
            return {"error": type(cause).__name__, "message": str(cause)}
