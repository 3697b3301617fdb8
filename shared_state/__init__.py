"""Cross-process shared state for activity executors: events and a heartbeat channel,
hosted in a ``multiprocess`` manager server process.

``SharedStateManager`` is a ``temporalio.worker.SharedStateManager``, so the stock
``temporalio.worker.Worker`` accepts it as well as ours. See ``_manager.py`` for the
data-flow picture. ``shared_state`` never imports ``pool`` or ``runner``.
"""

from ._errors import (
    HeartbeatDetailsError,
    SharedStateClosedError,
    SharedStateError,
    SharedStateUnreachableError,
)
from ._manager import SharedStateManager
from ._sender import HeartbeatSender

__all__ = [
    # manager and sender
    "HeartbeatSender",
    "SharedStateManager",
    # errors
    "HeartbeatDetailsError",
    "SharedStateClosedError",
    "SharedStateError",
    "SharedStateUnreachableError",
]
