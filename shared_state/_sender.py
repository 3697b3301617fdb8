"""The heartbeat sender: picklable, connects lazily wherever it is called."""

from __future__ import annotations

import pickle
from typing import Any

import temporalio.worker

from ._client import CALL_TIMEOUT, HubClient
from ._errors import HeartbeatDetailsError

__all__ = ["HeartbeatSender", "decode_details", "encode_details"]


def encode_details(details: tuple[Any, ...]) -> bytes:
    """Pickle heartbeat details in the sending process, so the manager server never has
    to import the user's types: stdlib pickle, then cloudpickle for lambdas and the like."""
    try:
        return pickle.dumps(details, pickle.HIGHEST_PROTOCOL)
    except Exception as first:
        try:
            import cloudpickle

            return bytes(cloudpickle.dumps(details, pickle.HIGHEST_PROTOCOL))
        except Exception:
            raise HeartbeatDetailsError(
                f"heartbeat details {_short(details)} cannot be pickled "
                f"({type(first).__name__}: {first}); heartbeat with plain data "
                "(numbers, strings, dicts, lists, dataclasses defined at module level)"
            ) from first


def decode_details(data: bytes) -> tuple[Any, ...]:
    details = pickle.loads(data)
    return tuple(details)


def _short(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class HeartbeatSender(temporalio.worker.SharedHeartbeatSender):
    """Posts ``(task_token, details)`` to the manager's heartbeat hub: one round trip,
    never waiting for room (the hub keeps only the newest details per token).

    Pickles (stdlib or cloudpickle) as its socket address, authkey and hub id; the
    connection is made on first use in each process and thread. Raises
    ``SharedStateUnreachableError`` within ``timeout`` seconds when the manager is gone.
    """

    def __init__(
        self, address: str, authkey: bytes, hub_ident: str, timeout: float = CALL_TIMEOUT
    ) -> None:
        self._address = address
        self._authkey = bytes(authkey)
        self._hub_ident = hub_ident
        self._timeout = timeout
        self._client = HubClient(self._address, self._authkey, hub_ident, timeout)

    @property
    def address(self) -> str:
        return self._address

    @property
    def timeout(self) -> float:
        return self._timeout

    def send_heartbeat(self, task_token: bytes, *details: Any) -> None:
        self._client.call("post", task_token, encode_details(details))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._address, self._authkey, self._hub_ident, self._timeout))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HeartbeatSender):
            return NotImplemented
        return (self._address, self._authkey, self._hub_ident) == (
            other._address,
            other._authkey,
            other._hub_ident,
        )

    def __hash__(self) -> int:
        return hash((self._address, self._hub_ident))

    def __repr__(self) -> str:
        return f"<HeartbeatSender [address={self._address}, hub={self._hub_ident}]>"
