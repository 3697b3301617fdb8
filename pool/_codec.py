"""Codec steps that run in the parent for payloads built in a child.

Children convert values to payloads (heartbeat details) with the plain payload
converter; the payload codec (which may be async, may do I/O, and may hold keys)
only ever runs here. (A child's failure is re-encoded here with
``DataConverter.encode_failure``, which applies the codec.)
"""

from __future__ import annotations

import temporalio.converter
from temporalio.api.common.v1 import Payloads

__all__ = ["encode_payloads"]


async def encode_payloads(dc: temporalio.converter.DataConverter, payloads: Payloads) -> None:
    """Apply the codec to ``payloads`` in place (a no-op without a codec)."""
    if dc.payload_codec is not None and payloads.payloads:
        await dc.payload_codec.encode_wrapper(payloads)
