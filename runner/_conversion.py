"""Payload conversion in the child: the parent applies only the codec.

    encoded Payloads bytes ─▶ decode_args / decode_heartbeat ─▶ activity ─▶ encode_result
    any exception ─▶ failure_bytes (a serialised temporalio Failure) ─▶ parent

The errors say what the parent's path says for the same failure
(pool/activity/dispatch/decode.py), so a task fails alike wherever its payloads were
converted; each one names the problem and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import temporalio.api.common.v1
import temporalio.api.failure.v1
import temporalio.converter
import temporalio.exceptions

from .failures import replace_with_fallback
from .messages import TaskDone

__all__ = [
    "ResultError",
    "argument_transfer_error",
    "decode_args",
    "decode_heartbeat",
    "encode_result",
    "failure_bytes",
    "heartbeat_conversion_error",
    "unpicklable_result",
]


def decode_args(
    converter: temporalio.converter.DataConverter,
    data: bytes | memoryview,
    arg_types: list[Any] | None,
) -> list[Any]:
    # protobuf parses any bytes-like object (its stubs say bytes).
    payloads = temporalio.api.common.v1.Payloads.FromString(cast(bytes, data)).payloads
    if arg_types is not None and len(arg_types) != len(payloads):
        arg_types = None
    try:
        return converter.payload_converter.from_payloads(list(payloads), type_hints=arg_types)
    except Exception as err:
        raise temporalio.exceptions.ApplicationError(
            f"Failed decoding arguments: {type(err).__name__}: {err}"
        ) from err


def decode_heartbeat(converter: temporalio.converter.DataConverter, data: bytes) -> list[Any]:
    payloads = temporalio.api.common.v1.Payloads.FromString(data).payloads
    try:
        return converter.payload_converter.from_payloads(list(payloads))
    except Exception as err:
        raise temporalio.exceptions.ApplicationError(
            f"Failed decoding heartbeat details: {type(err).__name__}: {err}",
            non_retryable=True,
        ) from err


@dataclass(frozen=True)
class ResultError:
    """A return value the payload converter refused."""

    error: BaseException


def encode_result(converter: temporalio.converter.DataConverter, value: Any) -> bytes | ResultError:
    try:
        payloads = converter.payload_converter.to_payloads([value])
    except Exception as err:
        error = temporalio.exceptions.ApplicationError(
            "The activity's return value could not be converted to a payload: "
            f"{type(err).__name__}: {err}",
            type="ResultConversionError",
        )
        error.__cause__ = err
        return ResultError(error)
    message = temporalio.api.common.v1.Payloads()
    message.payloads.extend(payloads)  # not payloads= : that copies field by field
    return message.SerializeToString()


def failure_bytes(converter: temporalio.converter.DataConverter, err: BaseException) -> bytes:
    """``err`` as the data converter's failure converter writes it; a plain failure
    with the traceback when the converter itself fails."""
    failure = temporalio.api.failure.v1.Failure()
    try:
        converter.failure_converter.to_failure(err, converter.payload_converter, failure)
    except Exception as inner:
        replace_with_fallback(failure, inner, err)
    return failure.SerializeToString()


def argument_transfer_error(err: BaseException) -> temporalio.exceptions.ApplicationError:
    """A task whose arguments could not be unpickled in the child."""
    return temporalio.exceptions.ApplicationError(
        "The activity's arguments could not be unpickled in the child process: "
        f"{type(err).__name__}: {err}. Make every argument type importable from a module "
        "(not defined in a function).",
        type="ArgumentTransferError",
    )


def heartbeat_conversion_error(err: BaseException) -> temporalio.exceptions.ApplicationError:
    """Heartbeat details the payload converter refused."""
    return temporalio.exceptions.ApplicationError(
        f"Heartbeat details could not be converted to payloads: {type(err).__name__}: {err}",
        type="HeartbeatConversionError",
    )


def unpicklable_result(
    converter: temporalio.converter.DataConverter, done: TaskDone, err: Exception
) -> TaskDone:
    """``done`` failed instead: its value (or exception) could not be pickled."""
    what = "return value" if done.outcome == "completed" else "outcome"
    return TaskDone(
        task_id=done.task_id,
        outcome="failed",
        failure=failure_bytes(
            converter,
            temporalio.exceptions.ApplicationError(
                f"The activity's {what} could not be pickled to return it from the child "
                f"process: {type(err).__name__}: {err}. Return plain data (or a type the "
                "data converter can serialise).",
                type="ResultTransferError",
            ),
        ),
        last_heartbeat=done.last_heartbeat,
        cpu_seconds=done.cpu_seconds,
        metrics=done.metrics,
    )
