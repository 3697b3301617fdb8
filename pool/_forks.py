"""Workers do not cross forks, as in temporalio.

temporalio's runtime (Rust, with threads of its own) records the pid that made it,
and its bridge refuses to create or use a worker in a forked copy of that process
with an ``AssertionError``: "Cannot create worker across forks (original runtime
PID is P, current is C)", "Cannot use worker across forks (...)". pool.Worker keeps
the rule also when it has no temporalio worker inside (activities only):

    create  ask the bridge: a call it rejects before doing anything when the
            client's runtime is from another process (its own pid check)
    run     the process that created the worker must be the one running it
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

import temporalio.bridge.client
import temporalio.client
import temporalio.service

__all__ = ["check_create", "check_use"]

# An RPC name the bridge does not know: after its pid check it fails at once, sending nothing.
_PROBE = temporalio.bridge.client.RpcCall("__pool_fork_check__", b"", False, {}, None)
_RUNTIME_PID = re.compile(r"original runtime PID is (\d+)")


def check_create(client: temporalio.client.Client) -> None:
    """Raise stock's error if ``client``'s runtime belongs to another process."""
    service: object = client.service_client
    if not isinstance(service, temporalio.service._BridgeServiceClient):
        service = getattr(service, "worker_service_client", None)  # a wrapper, as stock
    bridge = getattr(service, "_bridge_client", None)
    if bridge is None:  # not connected yet, or no bridge: no runtime to check
        return
    try:
        pending = bridge._ref.call_workflow_service(_PROBE)
    except AssertionError as err:
        found = _RUNTIME_PID.search(str(err))
        if found is None:
            raise
        raise AssertionError(
            f"Cannot create worker across forks (original runtime PID is {found[1]}, "
            f"current is {os.getpid()})"
        ) from None
    except RuntimeError:  # no running event loop: the pid check passed before that
        return
    pending.add_done_callback(_retrieve)


def _retrieve(pending: asyncio.Future[Any]) -> None:
    if not pending.cancelled():
        pending.exception()  # "Unknown RPC call": expected


def check_use(created_in: int) -> None:
    """Raise stock's error if this process did not create the worker."""
    current = os.getpid()
    if current != created_in:
        raise AssertionError(
            f"Cannot use worker across forks (the worker was created in PID {created_in}, "
            f"current is {current})"
        )
