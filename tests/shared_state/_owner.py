"""A process that owns a manager and waits to be killed (for the orphan test)."""

from __future__ import annotations

import threading
from typing import Any

from shared_state import SharedStateManager


def own_a_manager(conn: Any) -> None:
    manager = SharedStateManager.create()
    conn.send((manager.pid, manager.address))
    conn.close()
    threading.Event().wait(60)
