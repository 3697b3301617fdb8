"""The activity side's connection settings and per-call compression, pure (retry rules:
activity/test_retry.py)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
import temporalio.service

import pool
from pool.activity.service import (
    COMPRESS_UP_TO,
    ActivityService,
    call_compression,
    channel_settings,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("tls", "api_key", "secure"),
    [(False, None, False), (True, None, True), (None, "k3y", True)],
)
def test_channel_settings_follow_the_client(tls, api_key, secure):
    settings = channel_settings(_client(tls, api_key))
    metadata = dict(settings.metadata)
    assert metadata["temporal-namespace"] == "ns1"
    assert metadata["x-team"] == "blue"
    assert (settings.tls is not None) == secure
    assert ("authorization" in metadata) == bool(api_key)
    if api_key:
        assert metadata["authorization"] == "Bearer k3y"
    assert settings.identity == "me@host"


def _client(tls: object, api_key: str | None) -> Any:
    config = temporalio.service.ConnectConfig(
        target_host="127.0.0.1:7233",
        tls=tls,  # type: ignore[arg-type]
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
    return FakeClient()


def test_tls_material_is_kept_for_the_children() -> None:
    tls = temporalio.service.TLSConfig(
        server_root_ca_cert=b"ca", client_cert=b"cert", client_private_key=b"key", domain="d.x"
    )
    settings = channel_settings(_client(tls, None))
    assert settings.tls == (b"ca", b"key", b"cert")
    assert ("grpc.ssl_target_name_override", "d.x") in settings.options


@pytest.mark.parametrize("mode", ["auto", "gzip", "none"])
async def test_children_compress_as_the_parent_would(mode) -> None:
    service = ActivityService(_client(None, "k3y"), "worker-1", compression=mode)
    try:
        child = service.child_settings(64 * 1024, 4 << 20)
        for size in (100, COMPRESS_UP_TO, COMPRESS_UP_TO + 1, 1 << 20):
            parent = call_compression(mode, "RespondActivityTaskCompleted", lambda s=size: s)
            assert (size <= child.gzip_up_to) == (parent is grpc.Compression.Gzip), size
        assert child.connection.tls == (None, None, None)
        assert ("authorization", "Bearer k3y") in child.connection.metadata
        assert (child.connection.identity, child.connection.namespace) == ("worker-1", "ns1")
        assert child.wants(64 * 1024) and child.wants(4 << 20)
        assert not child.wants(64 * 1024 - 1) and not child.wants((4 << 20) + 1)
        assert service.generation == 0
        service.replace_client(_client(None, None))
        assert service.generation == 1
        assert service.child_settings(1, None).connection.tls is None
    finally:
        await service.close()


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


@pytest.mark.parametrize("value", [-1, 1.5, True, "64K"])
def test_child_reports_from_must_be_bytes_or_none(value) -> None:
    with pytest.raises(pool.WorkerConfigError, match="child_reports_from must be a number"):
        pool.PoolConfig(child_reports_from=value)
