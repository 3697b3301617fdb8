"""Code that runs inside the pool's child processes.

Imported by the parent only for the message types and the child's entry point.
``runner`` may import ``shared_state``; it never imports ``pool``.
"""

from ._child import EXIT_BROKEN, EXIT_PARENT_GONE, child_main
from ._messages import (
    ActivitySpec,
    CancelTask,
    ChildBroken,
    ChildLog,
    ChildReady,
    ChildSpec,
    PackedTask,
    RunTask,
    Stop,
    TaskDone,
    WorkerShutdown,
    done_from_wire,
    done_to_wire,
    dumps,
    loads,
    task_from_wire,
    task_to_wire,
)

__all__ = [
    # exit codes
    "EXIT_BROKEN",
    "EXIT_PARENT_GONE",
    # messages
    "ActivitySpec",
    "CancelTask",
    "ChildBroken",
    "ChildLog",
    "ChildReady",
    "ChildSpec",
    "PackedTask",
    "RunTask",
    "Stop",
    "TaskDone",
    "WorkerShutdown",
    "done_from_wire",
    "done_to_wire",
    "dumps",
    "loads",
    "task_from_wire",
    "task_to_wire",
    # entry point
    "child_main",
]
