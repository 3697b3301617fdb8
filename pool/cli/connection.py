"""Connection settings and the connection itself.

    flags > TEMPORAL_* environment > TOML profile > defaults
      ─▶ resolve_connection() ─▶ Connection(address, namespace, api_key, tls, rpc_metadata)
      ─▶ connect(): Client.connect bounded in time ─▶ DescribeNamespace ─▶ temporalio Client

An unreadable config or TLS file is LaunchError(EXIT_CONFIG); an unreachable server or
refused credentials EXIT_CONNECT; a namespace the server does not have EXIT_NAMESPACE.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from .errors import EXIT_CONFIG, EXIT_CONNECT, EXIT_NAMESPACE, LaunchError, one_line

__all__ = ["DEFAULT_ADDRESS", "DEFAULT_NAMESPACE", "Connection", "connect", "resolve_connection"]

DEFAULT_ADDRESS = "127.0.0.1:7233"
DEFAULT_NAMESPACE = "default"

# temporalio's Client.connect retries on its own; an unreachable or black-holed server must
# still end the launcher quickly with EXIT_CONNECT rather than hang it.
_CONNECT_TIMEOUT = 10.0
# One connection attempt (passed to Client.connect as connect_timeout).
_CONNECT_ATTEMPT_TIMEOUT = timedelta(seconds=5)
# DescribeNamespace on a healthy frontend answers in milliseconds.
_NAMESPACE_CHECK_TIMEOUT = timedelta(seconds=5)


@dataclass(frozen=True)
class Connection:
    """Arguments for ``Client.connect``, merged from flags, environment and profile."""

    address: str
    namespace: str
    api_key: str | None = None
    tls: Any = False  # bool | temporalio.service.TLSConfig
    rpc_metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def tls_label(self) -> str:
        if self.tls is False:
            return "plaintext"
        if getattr(self.tls, "client_cert", None):
            return "mTLS"
        return "TLS"


def resolve_connection(args: argparse.Namespace, environ: Mapping[str, str]) -> Connection:
    """Flags > ``TEMPORAL_*`` environment > TOML profile > built-in defaults."""
    profile = _load_profile(args, environ)
    api_key = args.api_key or profile.api_key
    return Connection(
        address=args.address or profile.address or DEFAULT_ADDRESS,
        namespace=args.namespace or profile.namespace or DEFAULT_NAMESPACE,
        api_key=api_key,
        tls=_connect_tls(_merged_tls(args, profile), api_key),
        rpc_metadata=dict(profile.grpc_meta),
    )


def _load_profile(args: argparse.Namespace, environ: Mapping[str, str]) -> Any:
    """The TOML client-config profile with ``TEMPORAL_*`` applied over it."""
    from temporalio.envconfig import ClientConfigProfile

    config_file = args.config_file
    if config_file is not None and not Path(config_file).is_file():
        raise LaunchError(
            EXIT_CONFIG,
            f"--config-file {config_file}: no such file: pass the path of a Temporal TOML "
            "client-config file",
        )
    try:
        return ClientConfigProfile.load(
            profile=args.profile,
            config_source=Path(config_file) if config_file else None,
            override_env_vars=dict(environ),
        )
    except Exception as err:
        raise LaunchError(
            EXIT_CONFIG,
            f"cannot load the Temporal client configuration: {one_line(err)}. Check --profile "
            "/ TEMPORAL_PROFILE and the TOML file (--config-file / TEMPORAL_CONFIG_FILE)",
        ) from None


def _merged_tls(args: argparse.Namespace, profile: Any) -> Any:
    """The profile's TLS section with the ``--tls*`` flags over it (a ClientConfigTLS)."""
    from temporalio.envconfig import ClientConfigTLS

    tls = profile.tls or ClientConfigTLS()
    tls = dataclasses.replace(
        tls,
        server_root_ca_cert=Path(args.tls_ca) if args.tls_ca else tls.server_root_ca_cert,
        client_cert=Path(args.tls_cert) if args.tls_cert else tls.client_cert,
        client_private_key=Path(args.tls_key) if args.tls_key else tls.client_private_key,
        server_name=args.tls_server_name or tls.server_name,
    )
    if args.tls is not None:
        tls = dataclasses.replace(tls, disabled=not args.tls)
    elif any((args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)):
        tls = dataclasses.replace(tls, disabled=False)
    if (tls.client_cert is None) != (tls.client_private_key is None):
        raise LaunchError(
            EXIT_CONFIG,
            "mTLS needs both a client certificate and its key: pass --tls-cert and --tls-key "
            "together (or set both in the profile)",
        )
    return tls


def _connect_tls(tls: Any, api_key: str | None) -> Any:
    """``Client.connect``'s ``tls``: False, True (TLS implied by an API key) or a TLSConfig."""
    from temporalio.envconfig import ClientConfigTLS

    if tls.disabled is True:
        return False
    if tls == ClientConfigTLS():  # nothing configured
        return bool(api_key)
    try:
        return tls.to_connect_tls_config()
    except OSError as err:
        raise LaunchError(
            EXIT_CONFIG,
            f"cannot read the TLS file {err.filename}: {err.strerror}; check --tls-cert, "
            "--tls-key, --tls-ca (or the profile's tls section)",
        ) from None


def _describe_connect_error(err: BaseException) -> str:
    text = str(err)
    if "ConnectionRefused" in text or "Connection refused" in text:
        return "connection refused (nothing is listening there)"
    if "dns error" in text or "failed to lookup address" in text:
        return "the host name does not resolve"
    if "InvalidCertificate" in text or "certificate" in text.lower():
        return f"TLS handshake failed ({one_line(text, 200)})"
    return one_line(text, 300)


async def connect(conn: Connection, *, identity: str | None = None, runtime: Any = None) -> Any:
    """``Client.connect`` bounded in time, then a namespace check; LaunchError on failure."""
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
    from temporalio.client import Client
    from temporalio.service import RPCError, RPCStatusCode

    where = f"the Temporal server at {conn.address}"
    check = (
        "check --address (or TEMPORAL_ADDRESS / the profile), that the server is running "
        "(python -m pool server starts one locally), and the TLS settings"
    )
    try:
        client = await asyncio.wait_for(
            Client.connect(
                conn.address,
                namespace=conn.namespace,
                api_key=conn.api_key,
                tls=conn.tls,
                rpc_metadata=dict(conn.rpc_metadata),
                identity=identity,
                connect_timeout=_CONNECT_ATTEMPT_TIMEOUT,
                runtime=runtime,
            ),
            _CONNECT_TIMEOUT,
        )
    except asyncio.TimeoutError:
        raise LaunchError(
            EXIT_CONNECT,
            f"cannot connect to {where}: no answer within {_CONNECT_TIMEOUT:g} s; " + check,
        ) from None
    except Exception as err:
        raise LaunchError(
            EXIT_CONNECT, f"cannot connect to {where}: {_describe_connect_error(err)}; {check}"
        ) from None
    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=conn.namespace), timeout=_NAMESPACE_CHECK_TIMEOUT
        )
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise LaunchError(
                EXIT_NAMESPACE,
                f"namespace {conn.namespace!r} does not exist on {conn.address}: create it "
                f"(temporal operator namespace create --namespace {conn.namespace}) or pass "
                "the right --namespace",
            ) from None
        if err.status in (RPCStatusCode.UNAUTHENTICATED, RPCStatusCode.PERMISSION_DENIED):
            raise LaunchError(
                EXIT_CONNECT,
                f"{where} refused the credentials for namespace {conn.namespace!r} "
                f"({err.status.name}: {one_line(err.message, 200)}): check --api-key / "
                "TEMPORAL_API_KEY or the mTLS certificate",
            ) from None
        raise LaunchError(
            EXIT_CONNECT,
            f"{where} did not answer DescribeNamespace({conn.namespace!r}): "
            f"{err.status.name}: {one_line(err.message, 200)}",
        ) from None
    return client
