"""Code that runs inside the pool's child processes, and the protocol both sides speak.

Public modules, imported by the parent too:

    runner.messages   what crosses the task pipe (RunTask, TaskDone, ...) and its wire form
    runner.frames     the pipe's framing (FrameReader, send_frame)
    runner.context    the glue to temporalio's activity context (entered in the child, and
                      in the parent for thread and async activities)
    runner.failures   the failure reported when the data converter cannot build one
    runner.metrics    activity.metric_meter() buffered in the child, replayed by the parent
    runner.trace      the OpenTelemetry context across the process hop
    runner.report     a child's own completion RPC for a large result (ReportSettings)

Private, the child's own: ``_child`` (its loop and the cancel protocol), ``_task`` (one
task from PackedTask to TaskDone), ``_conversion`` (payloads and failures in the child),
``_shipper`` (heartbeats), ``_pipe`` (writing frames and log records to the parent),
``_process`` (its process group, the parent's death, exit codes), ``_native`` (native
thread pools), ``_forkserver`` (the fork server's first preload module, named to the
parent as ``FORKSERVER_PRELOAD``). ``runner`` may import ``shared_state``; it never
imports ``pool``.
"""

from ._child import child_main
from ._process import EXIT_BROKEN, EXIT_PARENT_GONE
from .messages import (
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
    dumps_frame,
    loads,
    task_from_wire,
    task_to_wire,
)

FORKSERVER_PRELOAD = "runner._forkserver"

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
    "dumps_frame",
    "loads",
    "task_from_wire",
    "task_to_wire",
    # entry point
    "FORKSERVER_PRELOAD",
    "child_main",
]
