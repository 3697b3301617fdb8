"""Codec steps that run in the parent for payloads built in a child.

Children convert values to payloads (heartbeat details) and exceptions to
``Failure`` protos with the plain payload converter; the payload codec (which may
be async, may do I/O, and may hold keys) only ever runs here.
"""

from __future__ import annotations

import temporalio.converter
from temporalio.api.common.v1 import Payloads
from temporalio.api.failure.v1 import Failure

__all__ = ["encode_failure_payloads", "encode_payloads"]


async def encode_payloads(dc: temporalio.converter.DataConverter, payloads: Payloads) -> None:
    """Apply the codec to ``payloads`` in place (a no-op without a codec)."""
    if dc.payload_codec is not None and payloads.payloads:
        await dc.payload_codec.encode_wrapper(payloads)


async def encode_failure_payloads(dc: temporalio.converter.DataConverter, failure: Failure) -> None:
    """Apply the codec to every payload a failure (and its causes) carries."""
    codec = dc.payload_codec
    if codec is None:
        return
    while True:
        if failure.HasField("encoded_attributes"):
            wrapper = Payloads(payloads=[failure.encoded_attributes])
            await codec.encode_wrapper(wrapper)
            failure.encoded_attributes.CopyFrom(wrapper.payloads[0])
        for info_field, payloads_field in (
            ("application_failure_info", "details"),
            ("timeout_failure_info", "last_heartbeat_details"),
            ("canceled_failure_info", "details"),
            ("reset_workflow_failure_info", "last_heartbeat_details"),
        ):
            if failure.HasField(info_field):  # type: ignore[arg-type]
                info = getattr(failure, info_field)
                if info.HasField(payloads_field):
                    await codec.encode_wrapper(getattr(info, payloads_field))
        if not failure.HasField("cause"):
            return
        failure = failure.cause
