"""The supervisor room: the process pool (spawn, watch, recycle, kill children), the
scheduling of tasks onto them and the pure decisions both make.

    reserve() ─▶ Reservation ─▶ ProcessPool.run(task, reservation=)
              ─▶ task pipe ─▶ child ─▶ TaskDone ─▶ future
         ▲ Scheduler: promises, idle children, lookahead windows (Lookahead), prefetch
    sentinel ─▶ Supervision.on_exit ─▶ policy.decide_exit ─▶ respawn / backoff / fatal

pool.py the facade; supervision.py the children as a set; children.py one child's
process; scheduler.py, lookahead.py and policy.py pure (no processes, no I/O).
"""

from .children import ChildKilled, ChildMemoryExceeded, ChildSnapshot, TaskTransferError
from .lookahead import Lookahead
from .pool import PoolSnapshot, ProcessPool
from .scheduler import Reservation

__all__ = [
    "ChildKilled",
    "ChildMemoryExceeded",
    "ChildSnapshot",
    "Lookahead",
    "PoolSnapshot",
    "ProcessPool",
    "Reservation",
    "TaskTransferError",
]
