"""The dispatch room: one polled task in, exactly one outcome out.

Dispatcher      dispatcher.py      wires the steps below for each task, owns the tasks
                                   in flight, cancellation and local deadlines
Task, State     task.py            one task's record and its lifecycle state
decode          decode.py          poll response -> arguments, Info, headers
codec           codec.py           the payload codec steps that stay in the parent
conversion      conversion.py      whether the children can convert payloads themselves
executors       child_executor.py  sync activities in a child process
                thread_executor.py sync activities in the user's ThreadPoolExecutor
                loop_executor.py   async activities on the worker's loop
HeartbeatDetails details.py        heartbeat details -> the heartbeat manager
decide          outcome.py         PURE: how the chain ended -> what to report
Reporter        report.py          outcome -> Respond{Completed,Failed,Canceled}
"""

from .dispatcher import Dispatcher, DispatchSettings
from .task import RunningTask, State

__all__ = ["DispatchSettings", "Dispatcher", "RunningTask", "State"]
