"""A child's own completion RPC (runner.report) against a local gRPC server that
answers as the frontend would: what it sends, and what each answer means for the
parent. The whole path against the dev server is in tests/pool/test_payload_path.py."""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from temporalio.api.common.v1 import Payloads
from temporalio.api.workflowservice.v1 import (
    RespondActivityTaskCompletedRequest,
    RespondActivityTaskCompletedResponse,
)
from temporalio.converter import DataConverter

from runner.report import ChildReporter, Connection, Reported, ReportSettings, field_head


class Frontend:
    """RespondActivityTaskCompleted only: records each request and its metadata, and
    answers ``status`` (OK unless a test sets another)."""

    def __init__(self) -> None:
        self.requests: list[RespondActivityTaskCompletedRequest] = []
        self.metadata: list[dict[str, Any]] = []
        self.status = grpc.StatusCode.OK
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
        handler = grpc.unary_unary_rpc_method_handler(self._completed)
        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "temporal.api.workflowservice.v1.WorkflowService",
                    {"RespondActivityTaskCompleted": handler},
                ),
            )
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def _completed(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.requests.append(RespondActivityTaskCompletedRequest.FromString(request))
        self.metadata.append(dict(context.invocation_metadata()))
        if self.status is not grpc.StatusCode.OK:
            context.abort(self.status, "as the test says")
        return RespondActivityTaskCompletedResponse().SerializeToString()


@pytest.fixture
def frontend() -> Iterator[Frontend]:
    server = Frontend()
    server.server.start()
    try:
        yield server
    finally:
        server.server.stop(grace=None).wait()


def _settings(port: int, timeout: float = 10.0, **connection: Any) -> ReportSettings:
    values: dict[str, Any] = {
        "target": f"127.0.0.1:{port}",
        "tls": None,
        "options": (),
        "metadata": (("temporal-namespace", "ns1"), ("authorization", "Bearer k3y")),
        "namespace": "ns1",
        "identity": "worker-1",
    }
    return ReportSettings(
        Connection(**{**values, **connection}),
        from_size=1,
        up_to=None,
        gzip_up_to=32 * 1024,
        timeout=timeout,
    )


def _result(text: str) -> bytes:
    converter = DataConverter.default.payload_converter
    return Payloads(payloads=converter.to_payloads([text])).SerializeToString()


@pytest.mark.parametrize("size", [10, 100_000], ids=["gzipped", "as-is"])
def test_the_completion_reaches_the_server_as_the_parent_would_send_it(frontend, size) -> None:
    result = _result("x" * size)
    reporter = ChildReporter(_settings(frontend.port))
    reported = reporter.complete(b"token-1", memoryview(result))
    assert reported is not None and reported.code == "OK" and reported.seconds >= 0
    [request] = frontend.requests
    assert request.task_token == b"token-1"
    assert (request.namespace, request.identity) == ("ns1", "worker-1")
    assert request.result.SerializeToString() == result
    assert frontend.metadata[0]["authorization"] == "Bearer k3y"


def test_not_found_settles_the_task_too(frontend) -> None:
    frontend.status = grpc.StatusCode.NOT_FOUND  # already resolved, or timed out
    reported = ChildReporter(_settings(frontend.port)).complete(b"t", _result("r"))
    assert reported is not None and reported.code == "NOT_FOUND"


def test_any_other_answer_hands_the_result_back_warning_once(frontend, caplog) -> None:
    frontend.status = grpc.StatusCode.UNAVAILABLE
    reporter = ChildReporter(_settings(frontend.port))
    with caplog.at_level(logging.DEBUG, logger="runner.report"):
        assert reporter.complete(b"t", _result("r")) is None
        assert reporter.complete(b"t", _result("r")) is None
    levels = [r.levelno for r in caplog.records if "could not send a completion" in r.message]
    assert levels == [logging.WARNING, logging.DEBUG]
    assert "UNAVAILABLE" in caplog.records[0].getMessage()


def test_a_server_that_is_not_there_hands_the_result_back(frontend) -> None:
    port = frontend.port
    frontend.server.stop(grace=None).wait()  # nothing listens there now
    assert ChildReporter(_settings(port, timeout=5.0)).complete(b"t", _result("r")) is None


def test_bad_settings_hand_the_result_back() -> None:
    settings = _settings(1, tls=(b"not a certificate", None, None))
    assert ChildReporter(settings).complete(b"t", _result("r")) is None


@pytest.mark.unit
@pytest.mark.parametrize("length", [0, 127, 128, 1 << 20])
def test_field_head_is_protobufs_key_and_length(length) -> None:
    payloads = Payloads()
    payloads.payloads.add().data = b"d" * length
    body = payloads.SerializeToString()
    # RespondActivityTaskCompletedRequest's field 2 is its result: key, length, bytes.
    request = RespondActivityTaskCompletedRequest()
    request.result.CopyFrom(payloads)
    assert request.SerializeToString() == field_head(2, len(body)) + body


@pytest.mark.unit
def test_reported_crosses_the_pipe_as_a_plain_tuple() -> None:
    import pickle

    assert pickle.loads(pickle.dumps(Reported("OK", 0.5))) == ("OK", 0.5)
