"""Protobuf wire-format shortcuts for the large fields the activity side only moves.

    poll response bytes ─▶ field_bytes(raw, input) ─▶ the arguments' Payloads as they
        came, for the child (never serialised again here)
    the child's result bytes ─▶ Spliced(request, "result", data) ─▶ the completion's
        wire form, the result appended (never parsed here)

Protobuf's encoding of a message is its fields' encodings in any order, and an embedded
message that appears twice is merged: each shortcut checks for what it cannot express
and the caller falls back to the messages themselves.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from runner.report import field_head

__all__ = ["Spliced", "as_message", "field_bytes"]

# Wire types (https://protobuf.dev/programming-guides/encoding/).
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


class Spliced:
    """A request and, beside it, one length-delimited field's bytes already serialised
    (a child's Payloads, possibly a memoryview of the frame they came in).

    Its wire form is the message's own bytes followed by that field: protobuf reads
    fields in any order, so this is the message with the field set, as long as the
    message itself leaves the field unset.
    """

    def __init__(self, message: Message, field: str, data: bytes | memoryview) -> None:
        number = message.DESCRIPTOR.fields_by_name[field].number
        if message.HasField(field):  # it would then be on the wire twice
            raise ValueError(f"{type(message).__name__} already has its {field!r} field set")
        self.message = message
        self.data = data
        self._head = field_head(number, len(data))

    def SerializeToString(self) -> bytes:  # protobuf's name: grpc's serializer calls it
        return b"".join((self.message.SerializeToString(), self._head, self.data))

    def ByteSize(self) -> int:
        return self.message.ByteSize() + len(self._head) + len(self.data)


def as_message(request: Any) -> Any:
    """The protobuf message a request stands for (a :class:`Spliced` one parsed whole,
    as the server reads it); any other request as it is."""
    if isinstance(request, Spliced):
        return type(request.message).FromString(request.SerializeToString())
    return request


def _read_varint(view: memoryview, at: int) -> tuple[int, int]:
    """The varint at ``at`` and where it ends; IndexError or ValueError when malformed."""
    value = shift = 0
    while True:
        byte = view[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def field_bytes(data: bytes, number: int) -> memoryview | None:
    """The bytes of the length-delimited top-level field ``number`` of the serialised
    message ``data``, without a copy: for an embedded message, exactly its own
    serialisation. None when the field is absent, appears more than once (protobuf
    would merge the occurrences) or ``data`` does not parse."""
    view = memoryview(data)
    found = None
    at, end = 0, len(view)
    try:
        while at < end:
            key, at = _read_varint(view, at)
            kind = key & 7
            if key >> 3 == number and kind != _LENGTH_DELIMITED:
                return None
            if kind == _VARINT:
                _, at = _read_varint(view, at)
            elif kind == _FIXED64:
                at += 8
            elif kind == _FIXED32:
                at += 4
            elif kind == _LENGTH_DELIMITED:
                length, at = _read_varint(view, at)
                if key >> 3 == number:
                    if found is not None:
                        return None
                    found = view[at : at + length]
                at += length
            else:  # a group (deprecated, not in the Temporal API)
                return None
    except (IndexError, ValueError):
        return None
    return found if at == end else None  # past the end: a length that lied
