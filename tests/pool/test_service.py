"""The activity side's connection settings and per-call compression, pure (retry rules:
activity/test_retry.py)."""

from __future__ import annotations

import grpc
import pytest
import temporalio.service

import pool
from pool.activity.service import COMPRESS_UP_TO, call_compression, channel_settings

pytestmark = pytest.mark.unit


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


def _never() -> int:
    raise AssertionError("the request's size was measured where it is not needed")


@pytest.mark.parametrize(
    ("mode", "method", "size", "expected"),
    [
        ("gzip", "RespondActivityTaskCompleted", 10 << 20, grpc.Compression.Gzip),
        ("gzip", "PollActivityTaskQueue", 100, grpc.Compression.Gzip),
        ("none", "RecordActivityTaskHeartbeat", 100, grpc.Compression.NoCompression),
        ("auto", "RecordActivityTaskHeartbeat", 100, grpc.Compression.Gzip),
        ("auto", "RespondActivityTaskCompleted", COMPRESS_UP_TO, grpc.Compression.Gzip),
        (
            "auto",
            "RespondActivityTaskCompleted",
            COMPRESS_UP_TO + 1,
            grpc.Compression.NoCompression,
        ),
        ("auto", "PollActivityTaskQueue", 100, grpc.Compression.NoCompression),
    ],
)
def test_each_call_is_compressed_as_the_mode_says(mode, method, size, expected) -> None:
    assert call_compression(mode, method, lambda: size) == expected


def test_the_size_is_measured_only_when_the_mode_needs_it() -> None:
    assert call_compression("gzip", "RespondActivityTaskCompleted", _never) is grpc.Compression.Gzip
    assert call_compression("none", "X", _never) is grpc.Compression.NoCompression
    assert call_compression("auto", "PollActivityTaskQueue", _never) is (
        grpc.Compression.NoCompression
    )


def test_an_unknown_compression_is_a_config_error_naming_the_choices() -> None:
    with pytest.raises(pool.WorkerConfigError, match="'auto', 'gzip' or 'none'"):
        pool.PoolConfig(rpc_compression="brotli")  # type: ignore[arg-type]
