"""Where payloads are converted (issue 13): the parent applies only the codec, a child
decodes the arguments with the activity's type hints and encodes the result; with an
interceptor the arguments are decoded in the parent only when it reads them; a
converter that cannot go to a child keeps the parent's path. Real dev server."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import pytest
import temporalio.client
import temporalio.converter
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.enums.v1 import EventType
from temporalio.exceptions import ApplicationError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

import pool
from pool.activity.dispatch.codec import EncodedArgs
from pool.activity.service import ActivityService
from tests.helpers import workflow_id
from tests.pool import _payload_activities as P

ACTIVITIES = [
    P.where,
    P.reverses,
    P.needs_int,
    P.returns_an_object,
    P.returns_a_lock,
    P.retries_with_details,
]


def _client(client: temporalio.client.Client, dc: temporalio.converter.DataConverter) -> Any:
    return temporalio.client.Client(**{**client.config(), "data_converter": dc})


async def _run(
    client: temporalio.client.Client, task_queue: str, name: str, args: list[Any], **kw: Any
) -> tuple[Any, Payload]:
    """Run one activity through the pool; its result and the result's payload as the
    server stored it."""
    async with pool.Worker(
        client,
        task_queue=task_queue,
        activities=ACTIVITIES,
        workflows=[P.RunOne],
        processes=1,
        **kw,
    ):
        handle = await client.start_workflow(
            P.RunOne.run, args=[name, args], id=workflow_id(), task_queue=task_queue
        )
        result = await handle.result()
    stored = Payload()
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            stored = event.activity_task_completed_event_attributes.result.payloads[0]
    return result, stored


def _built_by(stored: Payload) -> int:
    """The pid that converted the stored payload (under the marking codec)."""
    assert P.CODEC_KEY in stored.metadata  # the codec ran on the result
    inner = Payload.FromString(stored.data[::-1])
    return int(inner.metadata[P.PID_KEY])


@pytest.fixture
def coded(client: temporalio.client.Client) -> Any:
    return _client(client, dataclasses.replace(P.PID_CONVERTER, payload_codec=P.MarkingCodec()))


async def test_the_child_decodes_the_arguments_and_encodes_the_result(
    coded: temporalio.client.Client, task_queue: str
) -> None:
    result, stored = await _run(coded, task_queue, "where", [{"name": "a", "size": 3}])
    # Decoded in the child, with the activity's type hint (a dataclass, not a dict).
    assert result["decoded_here"] is True
    assert (result["type"], result["size"]) == ("Item", 3)
    assert result["pid"] != os.getpid()
    # The child built the result's payload; the codec ran in the worker's process.
    assert _built_by(stored) == result["pid"]
    assert int(stored.metadata[P.CODEC_KEY]) == os.getpid()


class _Reads(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ReadsArgs(next)


class _ReadsArgs(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        assert isinstance(input.args[0], P.Item)  # decoded here, with the type hint
        return await super().execute_activity(input)


class _PassesThrough(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return ActivityInboundInterceptor(next)


@pytest.mark.parametrize("reads", [True, False], ids=["reads-args", "passes-through"])
async def test_with_an_interceptor_the_arguments_are_decoded_where_they_are_first_read(
    coded: temporalio.client.Client, task_queue: str, reads: bool
) -> None:
    interceptor = _Reads() if reads else _PassesThrough()
    result, stored = await _run(
        coded, task_queue, "where", [{"name": "a", "size": 4}], interceptors=[interceptor]
    )
    assert (result["type"], result["size"]) == ("Item", 4)
    assert result["decoded_here"] is (not reads)
    # Interceptors see the result as a value: it is converted in the worker's process.
    assert _built_by(stored) == os.getpid()


async def test_heartbeat_details_of_an_earlier_attempt_are_decoded_in_the_child(
    coded: temporalio.client.Client, task_queue: str
) -> None:
    result, _ = await _run(coded, task_queue, "retries_with_details", [{"name": "n", "size": 7}])
    assert result == {"details": ["n", 7], "decoded_here": True}


async def test_arguments_the_child_cannot_decode_fail_the_activity_as_in_the_parent(
    coded: temporalio.client.Client, task_queue: str
) -> None:
    result, _ = await _run(coded, task_queue, "needs_int", ["not a number"])
    assert result["error"] == "ApplicationError"
    assert result["message"].startswith("Failed decoding arguments: ")


async def test_a_result_the_child_cannot_encode_fails_the_activity(
    coded: temporalio.client.Client, task_queue: str
) -> None:
    result, _ = await _run(coded, task_queue, "returns_an_object", [])
    assert result["error"] == "ApplicationError"
    assert "return value could not be converted to a payload" in result["message"]


async def test_with_an_interceptor_a_result_that_cannot_be_pickled_fails_the_activity(
    coded: temporalio.client.Client, task_queue: str
) -> None:
    # The interceptor gets the value itself: it must cross the pipe pickled.
    result, _ = await _run(coded, task_queue, "returns_a_lock", [], interceptors=[_PassesThrough()])
    assert result["error"] == "ApplicationError"
    assert "could not be pickled to return it from the child" in result["message"]


async def test_a_converter_that_cannot_reach_the_children_converts_in_the_worker(
    client: temporalio.client.Client, task_queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    unpicklable = _client(client, P.unpicklable_converter())
    with caplog.at_level(logging.WARNING, logger="pool.worker"):
        result, stored = await _run(unpicklable, task_queue, "where", [{"name": "b", "size": 5}])
    assert (result["type"], result["size"], result["decoded_here"]) == ("Item", 5, False)
    assert int(stored.metadata[P.PID_KEY]) == os.getpid()
    warnings = [r for r in caplog.records if "cannot be sent to the child" in r.getMessage()]
    assert len(warnings) == 1


# -- large results sent by the children themselves (runner.report) --------------------------


async def _reverse_through(
    client: temporalio.client.Client, task_queue: str, size: int, **config: Any
) -> tuple[str, Payload, int]:
    """``reverses`` on ``size`` characters: its result, the stored payload and how many
    completions the children sent themselves."""
    data = "".join(chr(ord("a") + i % 26) for i in range(size))
    async with pool.Worker(
        client,
        task_queue=task_queue,
        activities=ACTIVITIES,
        workflows=[P.RunOne],
        pool_config=pool.PoolConfig(processes=1, **config),
    ) as worker:
        handle = await client.start_workflow(
            P.RunOne.run, args=["reverses", [data]], id=workflow_id(), task_queue=task_queue
        )
        result = await handle.result()
        sent = worker.snapshot().sent_by_children
    assert result == data[::-1]
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            return result, event.activity_task_completed_event_attributes.result.payloads[0], sent
    raise AssertionError("no ActivityTaskCompleted event")


async def test_a_large_result_is_sent_to_the_server_by_its_child(
    client: temporalio.client.Client, task_queue: str
) -> None:
    pids = _client(client, P.PID_CONVERTER)
    _, stored, sent = await _reverse_through(pids, task_queue, 200_000)
    assert sent == 1
    assert int(stored.metadata[P.PID_KEY]) != os.getpid()  # built in the child


@pytest.mark.parametrize(
    ("size", "config"),
    [(1_000, {}), (200_000, {"child_reports_from": None})],
    ids=["below-the-size", "turned-off"],
)
async def test_a_small_result_or_one_with_reports_off_goes_through_the_worker(
    client: temporalio.client.Client, task_queue: str, size: int, config: dict[str, Any]
) -> None:
    _, _, sent = await _reverse_through(client, task_queue, size, **config)
    assert sent == 0


async def test_with_a_codec_the_worker_sends_the_result(
    coded: temporalio.client.Client, task_queue: str
) -> None:
    _, stored, sent = await _reverse_through(coded, task_queue, 200_000)
    assert sent == 0
    assert int(stored.metadata[P.CODEC_KEY]) == os.getpid()  # the codec ran here


async def test_a_child_that_cannot_reach_the_server_hands_its_result_back(
    client: temporalio.client.Client,
    task_queue: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    real = ActivityService.child_settings

    def unreachable(self: ActivityService, from_size: int, up_to: int | None) -> Any:
        # Port 1 on loopback: nothing listens there, the call fails at once.
        settings = real(self, from_size, up_to)
        connection = dataclasses.replace(settings.connection, target="127.0.0.1:1")
        return dataclasses.replace(settings, connection=connection)

    monkeypatch.setattr(ActivityService, "child_settings", unreachable)
    with caplog.at_level(logging.WARNING, logger="runner.report"):
        _, _, sent = await _reverse_through(client, task_queue, 200_000)
    assert sent == 0  # the worker sent it, and the workflow got the result
    tried = [r for r in caplog.records if "could not send a completion" in r.getMessage()]
    assert len(tried) == 1 and "127.0.0.1:1" in tried[0].getMessage()


# -- EncodedArgs, without a server ---------------------------------------------------------


def _encoded(values: list[Any], hints: list[type] | None = None) -> EncodedArgs:
    converter = temporalio.converter.DataConverter.default.payload_converter
    return EncodedArgs(Payloads(payloads=converter.to_payloads(values)), converter, hints)


@pytest.mark.parametrize("mode", ["auto", "gzip", "none"])
async def test_large_payloads_cross_under_every_rpc_compression(
    client: temporalio.client.Client, task_queue: str, mode: str
) -> None:
    """200 KiB each way: above what "auto" compresses, so its poll and its completion
    go uncompressed, as every call does with "none" and none does with "gzip"."""
    data = "".join(chr(ord("a") + i % 26) for i in range(200_000))
    async with pool.Worker(
        client,
        task_queue=task_queue,
        activities=ACTIVITIES,
        workflows=[P.RunOne],
        pool_config=pool.PoolConfig(processes=1, rpc_compression=mode),  # type: ignore[arg-type]
    ) as worker:
        assert worker.process_pool is not None
        assert worker.process_pool.config.rpc_compression == mode
        handle = await client.start_workflow(
            P.RunOne.run, args=["reverses", [data]], id=workflow_id(), task_queue=task_queue
        )
        assert await handle.result() == data[::-1]


@pytest.mark.unit
def test_encoded_args_decode_only_when_read() -> None:
    args = _encoded([{"name": "x", "size": 1}, 2], [P.Item, int])
    assert len(args) == 2 and not args.decoded  # the length needs no decoding
    assert args[0] == P.Item("x", 1)
    assert args.decoded and list(args) == [P.Item("x", 1), 2]


@pytest.mark.unit
def test_encoded_args_that_cannot_be_decoded_raise_the_parents_error() -> None:
    args = _encoded(["text"], [int])
    with pytest.raises(ApplicationError, match=r"^Failed decoding arguments: "):
        args[0]
