"""pool.activity.wire: the protobuf shortcuts agree with protobuf itself."""

from __future__ import annotations

import pytest
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.workflowservice.v1 import (
    PollActivityTaskQueueResponse,
    RespondActivityTaskCompletedRequest,
)

from pool.activity.wire import Spliced, as_message, field_bytes

pytestmark = pytest.mark.unit

INPUT = PollActivityTaskQueueResponse.DESCRIPTOR.fields_by_name["input"].number


def _payloads(size: int) -> Payloads:
    return Payloads(payloads=[Payload(metadata={"encoding": b"binary/plain"}, data=b"r" * size)])


def _poll_response(size: int) -> PollActivityTaskQueueResponse:
    resp = PollActivityTaskQueueResponse(task_token=b"token", activity_id="a1", attempt=3)
    resp.activity_type.name = "crunch"
    resp.input.CopyFrom(_payloads(size))
    resp.heartbeat_details.CopyFrom(_payloads(7))  # another embedded message after it
    resp.start_to_close_timeout.FromSeconds(30)
    resp.priority.fairness_weight = 0.5  # a fixed32 field
    return resp


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_384, 300_000])
def test_a_fields_bytes_are_its_own_serialisation(size):
    resp = _poll_response(size)
    raw = resp.SerializeToString()
    got = field_bytes(raw, INPUT)
    assert got is not None and got.obj is raw  # a view, not a copy
    assert bytes(got) == resp.input.SerializeToString()
    assert Payloads.FromString(bytes(got)) == resp.input


def test_an_absent_field_has_no_bytes():
    assert (
        field_bytes(PollActivityTaskQueueResponse(task_token=b"t").SerializeToString(), INPUT)
        is None
    )


def test_a_field_that_appears_twice_is_left_to_protobuf():
    raw = _poll_response(10).SerializeToString()
    second = PollActivityTaskQueueResponse(input=_payloads(3)).SerializeToString()
    merged = PollActivityTaskQueueResponse.FromString(raw + second)
    assert len(merged.input.payloads) == 2  # what protobuf does with the two
    assert field_bytes(raw + second, INPUT) is None


@pytest.mark.parametrize(
    "cut", [1, 5, -1, -100], ids=["after-a-key", "inside-a-length", "last-byte", "inside-a-value"]
)
def test_bytes_that_do_not_parse_have_no_field(cut):
    raw = _poll_response(300).SerializeToString()
    assert field_bytes(raw[:cut], INPUT) is None


def test_a_field_of_another_wire_type_is_not_taken():
    # Field 13 (attempt) is a varint: asking for it as bytes gets nothing.
    assert field_bytes(_poll_response(5).SerializeToString(), 13) is None


@pytest.mark.parametrize("size", [0, 1, 127, 128, 300_000])
def test_a_spliced_request_is_the_message_with_the_field_set(size):
    result = _payloads(size)
    base = RespondActivityTaskCompletedRequest(task_token=b"token", identity="me", namespace="ns")
    spliced = Spliced(base, "result", memoryview(result.SerializeToString()))
    whole = RespondActivityTaskCompletedRequest()
    whole.CopyFrom(base)
    whole.result.CopyFrom(result)
    wire = spliced.SerializeToString()
    assert RespondActivityTaskCompletedRequest.FromString(wire) == whole
    assert spliced.ByteSize() == len(wire) == whole.ByteSize()
    assert as_message(spliced) == whole


def test_a_field_the_message_already_has_cannot_be_spliced_in():
    base = RespondActivityTaskCompletedRequest(result=_payloads(1))
    with pytest.raises(ValueError, match="already has its 'result'"):
        Spliced(base, "result", b"")
