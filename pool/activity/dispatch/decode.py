"""A poll response as what the activity needs: arguments, info, headers.

    PollActivityTaskQueueResponse
        ─▶ task_converter(): the client's converter with the task's serialization context
        ─▶ decode_args(): values (parent converts) or EncodedArgs (codec only, the child
                          converts unless an interceptor reads them)
        ─▶ decode_heartbeat(): the earlier attempt's details, for info() or for the child
        ─▶ build_info() ─▶ temporalio.activity.Info
        ─▶ decode_headers(): through the codec when header_codec_behavior says so

A decoding error is raised as the ApplicationError stock reports for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import temporalio.activity
import temporalio.common
import temporalio.converter
import temporalio.exceptions
from google.protobuf import duration_pb2, timestamp_pb2
from temporalio.api.common.v1 import Payload
from temporalio.api.workflowservice.v1 import PollActivityTaskQueueResponse

from .codec import EncodedArgs, codec_decoded, codec_leaves

__all__ = [
    "build_info",
    "decode_args",
    "decode_headers",
    "decode_heartbeat",
    "duration",
    "task_converter",
]


def _ts(ts: timestamp_pb2.Timestamp) -> datetime:
    return ts.ToDatetime().replace(tzinfo=timezone.utc)


def duration(resp: PollActivityTaskQueueResponse, name: str) -> timedelta | None:
    """One of the response's timeouts; None when unset (they arrive as zero durations)."""
    if not resp.HasField(name):  # type: ignore[arg-type]
        return None
    value: duration_pb2.Duration = getattr(resp, name)
    if value.seconds == 0 and value.nanos == 0:
        return None
    return value.ToTimedelta()


def task_converter(
    dc: temporalio.converter.DataConverter,
    resp: PollActivityTaskQueueResponse,
    namespace: str,
    task_queue: str,
) -> temporalio.converter.DataConverter:
    """``dc`` with this task's serialization context."""
    return dc.with_context(
        temporalio.converter.ActivitySerializationContext(
            namespace=resp.workflow_namespace or namespace,
            activity_id=resp.activity_id,
            activity_type=resp.activity_type.name,
            activity_task_queue=task_queue,
            workflow_id=resp.workflow_execution.workflow_id or None,
            workflow_type=resp.workflow_type.name or None,
            is_local=False,
        )
    )


async def decode_args(
    resp: PollActivityTaskQueueResponse,
    defn: temporalio.activity._Definition,
    dc: temporalio.converter.DataConverter,
    in_child: bool,
    input_bytes: bytes | memoryview | None = None,
) -> Sequence[Any]:
    """The task's arguments: decoded here, or (``in_child``) through the codec only,
    as :class:`EncodedArgs` that the child decodes unless an interceptor reads them.
    ``input_bytes``: ``resp.input`` serialised as it came, which the child gets as they
    are when no codec changes them."""
    payloads = resp.input.payloads
    arg_types = defn.arg_types
    if not defn.name:
        arg_types = [temporalio.common.RawValue] * len(payloads)
    elif arg_types is not None and len(arg_types) != len(payloads):
        arg_types = None
    try:
        if in_child:
            as_sent = input_bytes if codec_leaves(dc, resp.input) else None
            decoded = await codec_decoded(dc, resp.input)
            return EncodedArgs(decoded, dc.payload_converter, arg_types, as_sent)
        args = await dc.decode(payloads, type_hints=arg_types) if payloads else []
    except Exception as err:
        raise temporalio.exceptions.ApplicationError(
            f"Failed decoding arguments: {type(err).__name__}: {err}"
        ) from err
    return args if defn.name else [args]


async def decode_heartbeat(
    resp: PollActivityTaskQueueResponse, dc: temporalio.converter.DataConverter, in_child: bool
) -> tuple[list[Any], bytes | None]:
    """The earlier attempt's heartbeat details: decoded here for ``info()``, or
    (``in_child``) through the codec only, as serialised Payloads for the child."""
    payloads = resp.heartbeat_details.payloads
    if not payloads:
        return [], None
    try:
        if in_child:
            return [], (await codec_decoded(dc, resp.heartbeat_details)).SerializeToString()
        return await dc.decode(payloads), None
    except Exception as err:
        raise temporalio.exceptions.ApplicationError(
            f"Failed decoding heartbeat details: {type(err).__name__}: {err}",
            non_retryable=True,
        ) from err


async def decode_headers(
    resp: PollActivityTaskQueueResponse, dc: temporalio.converter.DataConverter, codec: bool
) -> dict[str, Payload]:
    """The task's headers for the interceptors, through the codec when ``codec`` (the
    client's ``header_codec_behavior``) says so."""
    headers = dict(resp.header.fields)
    if codec and dc.payload_codec is not None and headers:
        names = list(headers)
        decoded = await dc.payload_codec.decode([headers[name] for name in names])
        headers = dict(zip(names, decoded, strict=True))
    return headers


def build_info(
    resp: PollActivityTaskQueueResponse,
    namespace: str,
    task_queue: str,
    heartbeat_details: list[Any],
) -> temporalio.activity.Info:
    by_workflow = bool(resp.workflow_execution.workflow_id)
    return temporalio.activity.Info(
        activity_id=resp.activity_id,
        activity_type=resp.activity_type.name,
        attempt=resp.attempt,
        current_attempt_scheduled_time=_ts(resp.current_attempt_scheduled_time),
        heartbeat_details=heartbeat_details,
        heartbeat_timeout=duration(resp, "heartbeat_timeout"),
        is_local=False,
        namespace=resp.workflow_namespace or namespace,
        schedule_to_close_timeout=duration(resp, "schedule_to_close_timeout"),
        scheduled_time=_ts(resp.scheduled_time),
        start_to_close_timeout=duration(resp, "start_to_close_timeout"),
        started_time=_ts(resp.started_time),
        task_queue=task_queue,
        task_token=resp.task_token,
        workflow_id=resp.workflow_execution.workflow_id or None,
        workflow_namespace=resp.workflow_namespace or None,
        workflow_run_id=resp.workflow_execution.run_id or None,
        workflow_type=resp.workflow_type.name or None,
        priority=temporalio.common.Priority._from_proto(resp.priority),
        retry_policy=temporalio.common.RetryPolicy.from_proto(resp.retry_policy)
        if resp.HasField("retry_policy")
        else None,
        activity_run_id=None if by_workflow else (resp.activity_run_id or None),
    )
