"""A payload codec for the tests: marks and reverses every payload's bytes, so a test
can tell that encoding happened in the parent (children never see a codec)."""

from __future__ import annotations

from collections.abc import Sequence

from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec


class ReversingCodec(PayloadCodec):
    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [
            Payload(metadata={"encoding": b"binary/reversed"}, data=p.SerializeToString()[::-1])
            for p in payloads
        ]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for p in payloads:
            if p.metadata.get("encoding") != b"binary/reversed":
                out.append(p)
                continue
            out.append(Payload.FromString(p.data[::-1]))
        return out
