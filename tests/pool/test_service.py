"""The activity side's connection settings and sdk-core retry rules, as pure logic."""

from __future__ import annotations

import time

import grpc
import grpc.aio
import pytest
import temporalio.service

from pool.activity.service import (
    NORMAL_RETRY,
    POLL_RETRY,
    _retry_delay,
    channel_settings,
    is_too_large,
)


def _error(code: grpc.StatusCode, details: str = "x") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code=code,
        initial_metadata=grpc.aio.Metadata(),
        trailing_metadata=grpc.aio.Metadata(),
        details=details,
    )


def _delay(code, attempt=1, elapsed=0.0, give_up_at=None, details="x"):
    from pool.activity.service import RETRYABLE

    return _retry_delay(
        _error(code, details),
        attempt,
        time.monotonic() - elapsed,
        NORMAL_RETRY,
        give_up_at,
        RETRYABLE,
    )


def test_transient_errors_back_off_like_core():
    first = _delay(grpc.StatusCode.UNAVAILABLE)
    assert 0.08 <= first <= 0.12  # 100 ms +-20 %
    third = _delay(grpc.StatusCode.UNAVAILABLE, attempt=3)
    assert 0.1 * 1.7**2 * 0.8 <= third <= 0.1 * 1.7**2 * 1.2
    assert _delay(grpc.StatusCode.UNAVAILABLE, attempt=20) is None  # 10 attempts at most
    assert _delay(grpc.StatusCode.UNAVAILABLE, elapsed=10.5) is None  # 10 s at most


def test_answers_are_not_retried():
    for code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
        assert _delay(code) is None


def test_resource_exhausted_waits_at_least_the_throttle_backoff():
    assert _delay(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 0.8
    too_large = "grpc: received message larger than max (5 vs. 4)"
    assert is_too_large(_error(grpc.StatusCode.RESOURCE_EXHAUSTED, too_large))
    assert _delay(grpc.StatusCode.RESOURCE_EXHAUSTED, details=too_large) is None


def test_a_result_is_held_until_the_tasks_own_deadline():
    later = time.monotonic() + 30
    assert _delay(grpc.StatusCode.UNAVAILABLE, elapsed=20, give_up_at=later) is not None
    assert _delay(grpc.StatusCode.UNAVAILABLE, elapsed=20, give_up_at=time.monotonic()) is None


def test_poll_backoff_is_capped():
    assert 0.16 <= POLL_RETRY.delay(1) <= 0.24
    assert POLL_RETRY.delay(50) <= 10 * 1.2


@pytest.mark.parametrize(
    ("tls", "api_key", "secure"),
    [(False, None, False), (True, None, True), (None, "k3y", True)],
)
def test_channel_settings_follow_the_client(tls, api_key, secure):
    config = temporalio.service.ConnectConfig(
        target_host="127.0.0.1:7233",
        tls=tls,
        api_key=api_key,
        identity="me@host",
        rpc_metadata={"X-Team": "blue"},
    )

    class FakeClient:  # just what channel_settings reads
        namespace = "ns1"
        identity = "me@host"
        rpc_metadata = config.rpc_metadata

        class service_client:
            pass

    FakeClient.service_client.config = config  # type: ignore[attr-defined]
    FakeClient.api_key = api_key  # type: ignore[attr-defined]
    settings = channel_settings(FakeClient())  # type: ignore[arg-type]
    metadata = dict(settings.metadata)
    assert metadata["temporal-namespace"] == "ns1"
    assert metadata["x-team"] == "blue"
    assert (settings.credentials is not None) == secure
    assert ("authorization" in metadata) == bool(api_key)
    if api_key:
        assert metadata["authorization"] == "Bearer k3y"
    assert settings.identity == "me@host"
