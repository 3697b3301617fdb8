"""The supervisor room: the process pool (spawn, watch, recycle, kill children) and
its lookahead (when a busy child may back a poll).

    reserve() ─▶ ProcessPool.run(task) ─▶ task pipe ─▶ child ─▶ TaskDone ─▶ future
                       ▲ Lookahead: windows learnt from run and poll times
"""

from .children import ChildKilled, ChildMemoryExceeded, ChildSnapshot, TaskTransferError
from .lookahead import Lookahead
from .pool import PoolSnapshot, ProcessPool

__all__ = [
    "ChildKilled",
    "ChildMemoryExceeded",
    "ChildSnapshot",
    "Lookahead",
    "PoolSnapshot",
    "ProcessPool",
    "TaskTransferError",
]
