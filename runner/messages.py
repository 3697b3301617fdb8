"""Messages between the parent and its children, defined once for both sides.

Every message is a small frozen dataclass moved as bytes that we serialise
ourselves (`dumps`/`loads`): `multiprocess` would pickle them with the slow
pure-Python pickler. The stdlib's C pickler goes first (a task message in
~15 us); cloudpickle (~40 us: its ``reducer_override`` runs for every object)
only when the stdlib cannot, e.g. a lambda or a class defined in a function
among the arguments or the result, or when the message refers to ``__main__``.

Two pipes per child:

* the task pipe (duplex): parent -> child ``RunTask`` / ``Stop``;
  child -> parent ``ChildReady`` / ``TaskDone`` / ``ChildLog``. Only the child's
  main thread reads it; writes take a lock (log records come from any thread).
* the control pipe (parent -> child): ``CancelTask`` / ``WorkerShutdown``, read
  by the child's listener thread, so cancellation reaches a busy child. Its EOF
  tells the child that the parent is gone.

The two messages of every task, ``RunTask`` and ``TaskDone``, cross as plain tuples
(``task_to_wire`` / ``task_from_wire``, ``done_to_wire`` / ``done_from_wire``): no
class to look up or reduce on either side, and no field names. A tuple on the task
pipe is always one of these two; every other message is its dataclass. Their large
payload fields (``encoded_args``, ``result``) travel beside the pickle
(``dumps_frame``, protocol 5 out-of-band buffers): neither side copies them into or
out of a pickle, nor scans them for ``__main__``.
"""

from __future__ import annotations

import dataclasses
import operator
import pickle
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import cloudpickle
import temporalio.activity
import temporalio.common

from .report import Reported, ReportSettings

__all__ = [
    "ActivitySpec",
    "CancelTask",
    "ChildBroken",
    "ChildLog",
    "ChildReady",
    "ChildSpec",
    "Outcome",
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
]


def dumps(msg: object) -> bytes:
    return _pickled(msg, None)


def _pickled(msg: object, buffers: list[pickle.PickleBuffer] | None) -> bytes:
    """``msg``'s pickle; with ``buffers``, its out-of-band buffers land there."""
    found: list[pickle.PickleBuffer] = []
    callback = None if buffers is None else found.append
    try:
        data = pickle.dumps(msg, protocol=5, buffer_callback=callback)
    except (pickle.PicklingError, AttributeError, TypeError):
        data = None
    # The stdlib refers to ``__main__`` objects by name, and a class defined under
    # ``if __name__ == "__main__":`` does not exist in the other process:
    # cloudpickle sends those by value.
    if data is None or b"__main__" in data:
        found.clear()
        data = cloudpickle.dumps(msg, protocol=5, buffer_callback=callback)
    if buffers is not None:
        buffers.extend(found)
    return data


# Bytes from which a payload crosses the task pipe beside its message's pickle
# (out_of_band); below it, copying it into the pickle costs less than the header.
OUT_OF_BAND_FROM = 1 << 16
# A frame with buffers: this marker, the pickle's length, the number of buffers, then
# each buffer's length; the pickle; the buffers. A plain pickle starts with PROTO (0x80).
_WITH_BUFFERS = struct.Struct("!cII")
_MARKER = b"B"


def out_of_band(data: bytes | memoryview | None) -> Any:
    """``data`` as a message field that :func:`dumps_frame` sends beside the pickle
    rather than copied into it (and that ``loads`` returns as a read-only memoryview
    of the received frame), if it is large enough to be worth it."""
    if data is not None and len(data) >= OUT_OF_BAND_FROM:
        return pickle.PickleBuffer(data)
    return data


def dumps_frame(msg: object) -> list[bytes | memoryview]:
    """``msg`` as the parts of one task-pipe frame (``send_frame(fd, *parts)``): its
    pickle, and the :func:`out_of_band` fields' bytes uncopied beside it."""
    buffers: list[pickle.PickleBuffer] = []
    data = _pickled(msg, buffers)
    if not buffers:
        return [data]
    views = [buffer.raw() for buffer in buffers]
    head = _WITH_BUFFERS.pack(_MARKER, len(data), len(views))
    lengths = struct.pack(f"!{len(views)}Q", *(len(view) for view in views))
    return [head + lengths, data, *views]


def loads(body: bytes | bytearray | memoryview) -> Any:
    """A message from :func:`dumps` or :func:`dumps_frame`."""
    if body[:1] != _MARKER:
        return pickle.loads(body)
    view = memoryview(body)
    _, size, count = _WITH_BUFFERS.unpack_from(view)
    at = _WITH_BUFFERS.size + 8 * count
    lengths = struct.unpack_from(f"!{count}Q", view, _WITH_BUFFERS.size)
    data = view[at : at + size]
    at += size
    buffers = []
    for length in lengths:
        buffers.append(view[at : at + length])
        at += length
    return pickle.loads(data, buffers=buffers)


@dataclass(frozen=True)
class ChildSpec:
    """Everything a child needs, sent once when it starts."""

    index: int
    # cloudpickled ``dict[str, ActivitySpec]``: each callable crosses once per child.
    activities: bytes
    # cloudpickled DataConverter without codec (codecs run in the parent).
    converter: bytes
    # A pickled temporalio SharedHeartbeatSender (shared_state), or None. Unpickled
    # after the authkeys are set: a manager proxy authenticates as it is rebuilt.
    heartbeat_sender: bytes
    log_level: int
    # The parent's ``current_process().authkey`` of the stdlib ``multiprocessing`` and of
    # ``multiprocess``: a stdlib manager's proxies (temporalio's documented
    # SharedStateManager) authenticate with the stdlib one, which a child started
    # through ``multiprocess`` would not have.
    authkeys: tuple[bytes, bytes]
    # cloudpickled ``(initializer, initargs)``, run once before the first task, or None.
    initializer: bytes | None = None
    # Threads per native thread pool (runner._native); None leaves them alone.
    native_threads: int | None = None
    # Pin the child to one core (its index, round robin over the allowed cores).
    cpu_affinity: bool = False
    # How the child sends large results to the server itself (runner.report), or None.
    report: ReportSettings | None = None


@dataclass(frozen=True)
class ActivitySpec:
    fn: Any
    no_thread_cancel_exception: bool
    # The activity's parameter types, for decoding its arguments in the child
    # (None: decode without type hints, as temporalio does for an unannotated function).
    arg_types: list[Any] | None = None


@dataclass(frozen=True)
class RunTask:
    task_id: int
    activity_type: str
    args: tuple[Any, ...]
    info: temporalio.activity.Info
    # Seconds between heartbeats shipped to the parent (the sdk-core throttle).
    heartbeat_interval: float
    # The parent's OpenTelemetry context as headers (runner.trace), if any.
    trace_context: dict[str, str] | None = None
    # Set when the child converts: the arguments as serialised Payloads (the codec
    # already applied in reverse), decoded in the child with the activity's
    # ``arg_types``; ``args`` is empty then.
    encoded_args: bytes | memoryview | None = None
    # The same for ``info.heartbeat_details`` (``info`` carries none then).
    encoded_heartbeat: bytes | None = None
    # Return a completed task's value as serialised Payloads (``TaskDone.result``).
    encode_result: bool = False
    # Send that result to the server itself when ``ChildSpec.report`` wants its size.
    report: bool = False


@dataclass(frozen=True)
class PackedTask:
    """A ``RunTask`` as the child receives it: its Info still packed
    (:func:`pack_info`), unpacked only when the activity asks for it."""

    task_id: int
    activity_type: str
    args: tuple[Any, ...]
    packed_info: tuple[Any, ...]
    heartbeat_interval: float
    trace_context: dict[str, str] | None = None
    # A large one is a read-only memoryview of the frame it came in (out_of_band).
    encoded_args: bytes | memoryview | None = None
    encoded_heartbeat: bytes | None = None
    encode_result: bool = False
    report: bool = False

    @property
    def task_token(self) -> bytes:
        token: bytes = self.packed_info[_TASK_TOKEN]
        return token

    def unpack_info(self) -> temporalio.activity.Info:
        """A new Info equal to the RunTask's (every call unpacks again)."""
        return unpack_info(self.packed_info)


def task_to_wire(task: RunTask) -> tuple[Any, ...]:
    """``task`` as it crosses the task pipe (in the parent)."""
    return (
        task.task_id,
        task.activity_type,
        task.args,
        pack_info(task.info),
        task.heartbeat_interval,
        task.trace_context,
        out_of_band(task.encoded_args),
        task.encoded_heartbeat,
        task.encode_result,
        task.report,
    )


def task_from_wire(wire: tuple[Any, ...]) -> PackedTask:
    """What :func:`task_to_wire` sent (in the child)."""
    return PackedTask(*wire)


@dataclass(frozen=True)
class Stop:
    """Finish the current loop iteration and exit 0 (recycling, shutdown)."""


@dataclass(frozen=True)
class CancelTask:
    task_id: int
    # temporalio.activity.ActivityCancellationDetails
    details: Any


@dataclass(frozen=True)
class WorkerShutdown:
    """The worker began shutting down: ``activity.is_worker_shutdown()`` turns true."""


@dataclass(frozen=True)
class ChildReady:
    pid: int


@dataclass(frozen=True)
class ChildBroken:
    """The child failed before it was ready (its spec, the heartbeat channel, the
    activities, the converter or the initializer); it exits next."""

    pid: int
    error_type: str  # the qualified name of the exception's class
    message: str
    traceback: str  # formatted in the child


@dataclass(frozen=True)
class ChildLog:
    """A log record from the child (``LogRecord.__dict__``, made picklable), for the
    parent's handlers."""

    record: dict[str, Any]


Outcome = Literal["completed", "failed", "cancelled", "complete_async"]


@dataclass(frozen=True)
class TaskDone:
    task_id: int
    outcome: Outcome
    # completed: the return value (the parent encodes it with the data converter),
    # or None with ``result`` set (``RunTask.encode_result``);
    # failed / cancelled: a serialised temporalio.api.failure.v1.Failure (no codec yet).
    value: Any = None
    failure: bytes | None = None
    # Newest heartbeat details as serialised temporalio.api.common.v1.Payloads
    # (codec not applied), or None when the activity never heartbeated.
    last_heartbeat: bytes | None = None
    # Set when a heartbeat could not be converted: the activity is failed with it.
    heartbeat_error: bytes | None = None
    cpu_seconds: float = 0.0
    # What the activity recorded through activity.metric_meter() (runner.metrics).
    metrics: list[tuple[Any, ...]] | None = None
    # completed with ``RunTask.encode_result``: the value as serialised Payloads
    # (payload converter only; the parent applies the codec). In the parent a large
    # one is a read-only memoryview of the frame it came in (out_of_band).
    result: bytes | memoryview | None = None
    # completed, and the child sent the result to the server itself (RunTask.report):
    # the server's answer; ``result`` is None then.
    reported: Reported | None = None


def done_to_wire(done: TaskDone) -> tuple[Any, ...]:
    """``done`` as it crosses the task pipe (in the child)."""
    return (
        done.task_id,
        done.outcome,
        done.value,
        done.failure,
        done.last_heartbeat,
        done.heartbeat_error,
        done.cpu_seconds,
        done.metrics,
        out_of_band(done.result),
        done.reported,
    )


def done_from_wire(wire: tuple[Any, ...]) -> TaskDone:
    """What :func:`done_to_wire` sent (in the parent)."""
    return TaskDone(*wire)


# -- the packed activity Info ------------------------------------------------------------
#
# Pickled as a dataclass, an Info spells out its twenty-odd field names and sends its
# datetimes, timedeltas, Priority and RetryPolicy through the generic reduce path:
# ~25 us to pickle and unpickle, every task. Packed, it is a tuple of plain values in
# field order (datetimes and timedeltas as integer microseconds), ~5x cheaper, and
# unpacks to an equal Info (in the child, only when asked for: see PackedTask). Every
# slot that is not packed travels as itself; a value of an unexpected type in a packed
# slot travels as a one-item list, so nothing is lost.
# tests/runner/test_messages.py checks every field and fails loudly when a temporalio
# release changes the shape of Info.

_Info = temporalio.activity.Info
_Priority = temporalio.common.Priority
_RetryPolicy = temporalio.common.RetryPolicy

INFO_FIELDS = tuple(f.name for f in dataclasses.fields(_Info))
_PRIORITY_FIELDS = tuple(f.name for f in dataclasses.fields(_Priority))
_RETRY_FIELDS = tuple(f.name for f in dataclasses.fields(_RetryPolicy))

_info_values = operator.attrgetter(*INFO_FIELDS)
_priority_values = operator.attrgetter(*_PRIORITY_FIELDS)
_retry_values = operator.attrgetter(*_RETRY_FIELDS)

# Positions of the packed slots (a renamed field fails here, at import).
_DATETIMES = tuple(
    INFO_FIELDS.index(name)
    for name in ("current_attempt_scheduled_time", "scheduled_time", "started_time")
)
_TIMEDELTAS = tuple(
    INFO_FIELDS.index(name)
    for name in ("heartbeat_timeout", "schedule_to_close_timeout", "start_to_close_timeout")
)
_TASK_TOKEN = INFO_FIELDS.index("task_token")
_PRIORITY = INFO_FIELDS.index("priority")
_RETRY_POLICY = INFO_FIELDS.index("retry_policy")
_RETRY_TIMEDELTAS = tuple(
    _RETRY_FIELDS.index(name) for name in ("initial_interval", "maximum_interval")
)

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_MICROSECOND = timedelta(microseconds=1)


def _pack_datetime(value: Any) -> Any:
    if type(value) is datetime and value.tzinfo is _UTC and not value.fold:
        return (value - _EPOCH) // _MICROSECOND
    return None if value is None else [value]


def _unpack_datetime(value: Any) -> Any:
    if type(value) is int:
        return _EPOCH + timedelta(0, 0, value)
    return None if value is None else value[0]


def _pack_timedelta(value: Any) -> Any:
    if type(value) is timedelta:
        return value // _MICROSECOND
    return None if value is None else [value]


def _unpack_timedelta(value: Any) -> Any:
    if type(value) is int:
        return timedelta(0, 0, value)
    return None if value is None else value[0]


def _rebuild(cls: type, names: tuple[str, ...], values: Any) -> Any:
    # What unpickling a dataclass does: no __init__, the fields set directly.
    obj: Any = object.__new__(cls)
    obj.__dict__.update(zip(names, values, strict=True))
    return obj


def _pack_priority(value: Any) -> Any:
    if type(value) is _Priority:
        return _priority_values(value)
    return None if value is None else [value]


def _unpack_priority(value: Any) -> Any:
    if type(value) is tuple:
        return _rebuild(_Priority, _PRIORITY_FIELDS, value)
    return None if value is None else value[0]


def _pack_retry_policy(value: Any) -> Any:
    if type(value) is not _RetryPolicy:
        return None if value is None else [value]
    values = list(_retry_values(value))
    for i in _RETRY_TIMEDELTAS:
        values[i] = _pack_timedelta(values[i])
    return tuple(values)


def _unpack_retry_policy(value: Any) -> Any:
    if type(value) is not tuple:
        return None if value is None else value[0]
    values = list(value)
    for i in _RETRY_TIMEDELTAS:
        values[i] = _unpack_timedelta(values[i])
    return _rebuild(_RetryPolicy, _RETRY_FIELDS, values)


def pack_info(info: temporalio.activity.Info) -> tuple[Any, ...]:
    """``info`` as a tuple of plain values, for :func:`unpack_info` in the other process."""
    values = list(_info_values(info))
    for i in _DATETIMES:
        values[i] = _pack_datetime(values[i])
    for i in _TIMEDELTAS:
        values[i] = _pack_timedelta(values[i])
    values[_PRIORITY] = _pack_priority(values[_PRIORITY])
    values[_RETRY_POLICY] = _pack_retry_policy(values[_RETRY_POLICY])
    return tuple(values)


def unpack_info(packed: tuple[Any, ...]) -> temporalio.activity.Info:
    """The Info that :func:`pack_info` packed: every field equal."""
    values = list(packed)
    for i in _DATETIMES:
        values[i] = _unpack_datetime(values[i])
    for i in _TIMEDELTAS:
        values[i] = _unpack_timedelta(values[i])
    values[_PRIORITY] = _unpack_priority(values[_PRIORITY])
    values[_RETRY_POLICY] = _unpack_retry_policy(values[_RETRY_POLICY])
    info: temporalio.activity.Info = _rebuild(_Info, INFO_FIELDS, values)
    return info
