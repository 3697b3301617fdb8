"""The activity side's connection settings, pure (retry rules: activity/test_retry.py)."""

from __future__ import annotations

import pytest
import temporalio.service

from pool.activity.service import channel_settings

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
