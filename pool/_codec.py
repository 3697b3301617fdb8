"""Codec steps that run in the parent for payloads built in a child.

Children convert values to payloads (heartbeat details) with the plain payload
converter; the payload codec (which may be async, may do I/O, and may hold keys)
only ever runs here. (A child's failure is re-encoded here with
``DataConverter.encode_failure``, which applies the codec.)
"""

from __future__ import annotations

import temporalio.converter
from temporalio.api.common.v1 import Payloads
from temporalio.api.failure.v1 import Failure

from ._errors import ChildTraceback

__all__ = ["decode_child_failure", "encode_payloads"]


async def encode_payloads(dc: temporalio.converter.DataConverter, payloads: Payloads) -> None:
    """Apply the codec to ``payloads`` in place (a no-op without a codec)."""
    if dc.payload_codec is not None and payloads.payloads:
        await dc.payload_codec.encode_wrapper(payloads)


def decode_child_failure(data: bytes, dc: temporalio.converter.DataConverter) -> BaseException:
    """A failure a child encoded (payload converter only) as the error it stands for,
    with the child's traceback as its cause. The error keeps the proto, so reporting it
    again sends the child's failure as it is."""
    failure = Failure.FromString(data)
    error = dc.failure_converter.from_failure(failure, dc.payload_converter)
    if failure.stack_trace and error.__cause__ is None:
        error.__cause__ = ChildTraceback(failure.stack_trace)
    return error
