"""Codec steps that run in the parent for payloads a child converts.

    poll response ─▶ codec decode (here) ─▶ EncodedArgs ─▶ interceptors (decode on
    first access, here) ─▶ child: payload converter ─▶ activity ─▶ payload converter
    ─▶ result Payloads ─▶ codec encode (here) ─▶ Respond RPC

Children convert values to and from payloads (arguments, results, heartbeat details)
with the payload converter; the payload codec (which may be async, may do I/O, and
may hold keys) only ever runs here. (A child's failure is re-encoded here with
``DataConverter.encode_failure``, which applies the codec.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload

import temporalio.converter
import temporalio.exceptions
from temporalio.api.common.v1 import Payloads
from temporalio.api.failure.v1 import Failure

from pool._errors import ChildTraceback

__all__ = [
    "EncodedArgs",
    "codec_decoded",
    "codec_leaves",
    "decode_child_failure",
    "encode_payloads",
]


async def encode_payloads(dc: temporalio.converter.DataConverter, payloads: Payloads) -> None:
    """Apply the codec to ``payloads`` in place (a no-op without a codec)."""
    if dc.payload_codec is not None and payloads.payloads:
        await dc.payload_codec.encode_wrapper(payloads)


def codec_leaves(dc: temporalio.converter.DataConverter, payloads: Payloads) -> bool:
    """Whether the codec leaves ``payloads`` as they are (no codec, or nothing to decode):
    :func:`codec_decoded` then returns them, so their serialised bytes still hold."""
    return dc.payload_codec is None or not payloads.payloads


async def codec_decoded(dc: temporalio.converter.DataConverter, payloads: Payloads) -> Payloads:
    """``payloads`` with the codec applied in reverse: a new message; without a codec,
    ``payloads`` itself (copying a message with large payloads costs the parent's
    core a millisecond per MiB)."""
    codec = dc.payload_codec
    if codec is None or codec_leaves(dc, payloads):
        return payloads
    decoded = Payloads()
    decoded.payloads.extend(await codec.decode(list(payloads.payloads)))
    return decoded


class EncodedArgs(Sequence[Any]):
    """An activity's arguments still as payloads (codec already applied in reverse).

    Handed to the interceptors as ``ExecuteActivityInput.args``: one that reads them
    decodes them here, on first access; when none did, the child gets the payloads'
    bytes and decodes them itself (``RunTask.encoded_args``). A decoding error raises
    what the parent's path reports for it."""

    def __init__(
        self,
        payloads: Payloads,
        converter: temporalio.converter.PayloadConverter,
        type_hints: list[type] | None,
        serialized: bytes | memoryview | None = None,
    ) -> None:
        self.payloads = payloads
        # ``payloads`` serialised, when known (the poll response's own bytes of them).
        self.serialized = serialized
        self._converter = converter
        self._type_hints = type_hints
        self._values: list[Any] | None = None

    @property
    def decoded(self) -> bool:
        return self._values is not None

    def values(self) -> list[Any]:
        if self._values is None:
            try:
                self._values = self._converter.from_payloads(
                    list(self.payloads.payloads), type_hints=self._type_hints
                )
            except Exception as err:
                raise temporalio.exceptions.ApplicationError(
                    f"Failed decoding arguments: {type(err).__name__}: {err}"
                ) from err
        return self._values

    def __len__(self) -> int:
        return len(self.payloads.payloads)

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        return self.values()[index]

    def __eq__(self, other: object) -> bool:
        return self.values() == list(other) if isinstance(other, Sequence) else NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self.values())


def decode_child_failure(data: bytes, dc: temporalio.converter.DataConverter) -> BaseException:
    """A failure a child encoded (payload converter only) as the error it stands for,
    with the child's traceback as its cause. The error keeps the proto, so reporting it
    again sends the child's failure as it is."""
    failure = Failure.FromString(data)
    error = dc.failure_converter.from_failure(failure, dc.payload_converter)
    if failure.stack_trace and error.__cause__ is None:
        error.__cause__ = ChildTraceback(failure.stack_trace)
    return error
