"""The child process: receive a task, run the activity, send the outcome back.

    parent ──task pipe──▶ main thread: PackedTask ─▶ activity fn ─▶ TaskDone ──▶ parent
    parent ──ctrl pipe──▶ listener thread: CancelTask / WorkerShutdown
                            └─ sets the local cancel event, then SIGUSR1 to the
                               main thread, whose handler raises CancelledError
    activity.heartbeat() ─▶ newest details kept locally ─▶ shipper thread
                            (converts, throttles) ─▶ SharedStateManager hub ─▶ parent

``activity.heartbeat()`` and ``activity.is_cancelled()`` touch only local memory;
everything that costs a system call happens on the helper threads.

Each child leads its own process group, which the activity's subprocesses join. When
the parent dies (control or task pipe EOF, or the parent-death signal) the child
SIGKILLs that group, itself included; when the child ends otherwise, the parent does.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import multiprocess
import temporalio.activity
import temporalio.api.common.v1
import temporalio.api.failure.v1
import temporalio.converter
import temporalio.exceptions

from . import _native
from . import context as _context
from . import metrics as _metrics
from . import trace as _trace
from .frames import FrameReader, send_frame
from .messages import (
    ActivitySpec,
    CancelTask,
    ChildBroken,
    ChildLog,
    ChildReady,
    ChildSpec,
    PackedTask,
    Stop,
    TaskDone,
    WorkerShutdown,
    done_to_wire,
    dumps,
    loads,
    task_from_wire,
)

__all__ = ["EXIT_BROKEN", "EXIT_PARENT_GONE", "child_main"]

logger = logging.getLogger("runner")

# Named exit codes, so the parent can say what happened.
EXIT_PARENT_GONE = 70  # the control pipe closed: the parent died
EXIT_BROKEN = 71  # the child failed before it was ready (see ChildBroken)

_CANCEL_SIGNAL = signal.SIGUSR1


# What Linux sends us when our parent (the fork server or the worker) dies. Not SIGKILL:
# that would end this process alone and leave the activity's subprocesses behind, so the
# handler takes the whole group down instead (see _exit_with_group).
_PARENT_DEATH_SIGNAL = signal.SIGHUP


def _lead_own_group() -> None:
    """Make this child the leader of a new process group (same session).

    Subprocesses an activity starts join it, so one ``killpg`` ends them with the
    child: the parent's on any exit of the child, ours when the parent dies.
    """
    with contextlib.suppress(OSError):  # pragma: no cover - already a group leader
        os.setpgid(0, 0)


def _exit_with_group(code: int) -> NoReturn:
    """Exit, taking every process of our group (the activity's subprocesses) along.

    Only when we lead the group: never signal the worker's own group. The SIGKILL
    reaches this process too, so it ends by that signal rather than ``code``.
    """
    if os.getpgrp() == os.getpid():
        with contextlib.suppress(OSError):
            os.killpg(os.getpid(), signal.SIGKILL)
    os._exit(code)


def _on_parent_death(signum: int, frame: Any) -> None:
    _exit_with_group(EXIT_PARENT_GONE)


def _die_with_parent() -> None:
    """Ask Linux to signal us when our parent (the fork server or the worker) dies.

    The handler runs on the main thread between two bytecodes: an activity inside one
    long C call that holds the GIL delays it until the call returns.
    """
    signal.signal(_PARENT_DEATH_SIGNAL, _on_parent_death)
    # A mask inherited from whoever started us must not hold it back.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {_PARENT_DEATH_SIGNAL})
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, _PARENT_DEATH_SIGNAL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        pass


@dataclass(eq=False)
class _Beats:
    """Heartbeat state of one running task; a fresh one per task."""

    token: bytes
    interval: float
    converter: temporalio.converter.PayloadConverter
    latest: tuple[Any, ...] | None = None
    pending: tuple[Any, ...] | None = None
    scheduled: bool = False
    ended: bool = False
    # What the shipper sleeps on between heartbeats, set by end(). The shipper makes
    # it: a task that never heartbeats (most) costs no Event.
    wakeup: threading.Event | None = None
    error: BaseException | None = None

    def end(self) -> None:
        # ended first, then wakeup: the shipper sets wakeup first, then reads ended,
        # so one of the two sees the other.
        self.ended = True
        wakeup = self.wakeup
        if wakeup is not None:
            wakeup.set()

    def convert(self, details: tuple[Any, ...]) -> bytes:
        payloads = self.converter.to_payloads(details)
        return temporalio.api.common.v1.Payloads(payloads=payloads).SerializeToString()


class _Shipper:
    """Ships the newest heartbeat details to the parent, at most once per interval."""

    def __init__(self, sender: Any, on_error: Any) -> None:
        self._sender = sender
        self._on_error = on_error
        self._wake = threading.Event()
        self._current: _Beats | None = None
        self._thread: threading.Thread | None = None

    def begin(self, beats: _Beats) -> None:
        self._current = beats

    def wake(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="heartbeat-shipper", daemon=True)
            self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            beats = self._current
            if beats is not None:
                self._ship(beats)

    def _ship(self, beats: _Beats) -> None:
        wakeup = beats.wakeup
        if wakeup is None:
            wakeup = beats.wakeup = threading.Event()
        while not beats.ended:
            details = beats.pending
            if details is None:
                # Clear the flag, then look again: a heartbeat() that set pending
                # before seeing the flag cleared would otherwise be missed.
                beats.scheduled = False
                if beats.pending is None:
                    return
                beats.scheduled = True
                continue
            beats.pending = None
            try:
                data = beats.convert(details)
            except Exception as err:
                self._on_error(beats, err)
                return
            if self._sender is not None:
                try:
                    self._sender.send_heartbeat(beats.token, data)
                except Exception:
                    # The parent's side notices a dead manager and fails the worker;
                    # here we only say so and keep the activity running.
                    logger.exception("Could not ship a heartbeat to the parent")
            wakeup.wait(beats.interval)


@dataclass(eq=False)
class _Current:
    task_id: int
    holder: Any
    raise_enabled: bool
    beats: _Beats


class _PipeWriter:
    """Writes whole messages to the task pipe from any thread.

    A lock keeps messages from interleaving; in the main thread, while the cancel
    signal's handler may raise (``raiser.armed``: an activity runs), the signal is
    blocked during the write, so a ``CancelledError`` can never cut a message in half
    (it lands right after the write instead). Only the main thread arms the raiser,
    so between tasks (``TaskDone``, ``ChildReady``) the write needs no blocking.
    """

    def __init__(self, conn: Any, raiser: _context.CancelRaiser) -> None:
        self._fd = conn.fileno()
        self._lock = threading.Lock()
        self._main_ident = threading.main_thread().ident
        self.raiser = raiser

    def send(self, data: bytes) -> None:
        block = self.raiser.armed and threading.get_ident() == self._main_ident
        if block:
            signal.pthread_sigmask(signal.SIG_BLOCK, {_CANCEL_SIGNAL})
        try:
            with self._lock:
                send_frame(self._fd, data)
        finally:
            if block:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {_CANCEL_SIGNAL})


_RECORD_DROP = ("args", "exc_info", "msg")


class _PipeLogHandler(logging.Handler):
    """Sends every record to the parent, whose own handlers format and write it.

    Records carry ``child_pid`` and, inside an activity, ``temporal_activity`` (the
    same keys temporalio's ``activity.logger`` adds)."""

    def __init__(self, writer: _PipeWriter) -> None:
        super().__init__()
        self._writer = writer
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = dict(record.__dict__)
            fields["msg"] = record.getMessage()
            fields["args"] = None
            if record.exc_info:
                fields["exc_text"] = self._formatter.formatException(record.exc_info)
            fields["exc_info"] = None
            fields["child_pid"] = os.getpid()
            if "temporal_activity" not in fields and temporalio.activity.in_activity():
                fields["temporal_activity"] = _context.log_fields(temporalio.activity.info())
            try:
                data = dumps(ChildLog(record=fields))
            except Exception:
                safe = {
                    k: v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)
                    for k, v in fields.items()
                }
                data = dumps(ChildLog(record=safe))
            self._writer.send(data)
        except Exception:
            self.handleError(record)


class _Child:
    def __init__(
        self, spec: ChildSpec, task_conn: Any, ctrl_conn: Any, writer: _PipeWriter
    ) -> None:
        self._spec = spec
        self._task_conn = task_conn
        self._ctrl_conn = ctrl_conn
        self._activities: dict[str, ActivitySpec] = {}
        self._converter = temporalio.converter.DataConverter.default
        self._contextual = False
        self._shutdown_event = threading.Event()
        # The running task's cancel event, cleared before each task. Only the task in
        # _current is ever cancelled, under _lock, so no late cancel of one task can
        # reach the next.
        self._cancelled = threading.Event()
        self._contexts = _context.ChildContexts(self._cancelled, self._shutdown_event)
        self._raiser = writer.raiser
        self._current: _Current | None = None
        self._early_cancels: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._main_ident = threading.get_ident()
        # A manager proxy: rebuilt only now, once the authkeys are set.
        self._shipper = _Shipper(loads(spec.heartbeat_sender), self._heartbeat_failed)
        self.writer = writer

    # -- set-up ---------------------------------------------------------------

    def load(self) -> None:
        """Rebuild what the parent sent; then run the initializer, as the stock
        ``ProcessPoolExecutor`` does before a child's first task."""
        self._activities = loads(self._spec.activities)
        self._converter = loads(self._spec.converter)
        # Narrowing the converter per task costs ~9 us; skip it when narrowing gives
        # the same converter back (the default converter's case).
        probe = temporalio.converter.ActivitySerializationContext(
            namespace="",
            activity_id="",
            activity_type="",
            activity_task_queue="",
            workflow_id=None,
            workflow_type=None,
            is_local=False,
        )
        self._contextual = self._converter.with_context(probe) is not self._converter
        if self._spec.initializer is not None:
            initializer, initargs = loads(self._spec.initializer)
            initializer(*initargs)

    def install_signals(self) -> None:
        # A terminal Ctrl-C reaches the whole process group: the parent decides.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(_CANCEL_SIGNAL, self._on_cancel_signal)

    def _on_cancel_signal(self, signum: int, frame: Any) -> None:
        if self._raiser.take():
            raise temporalio.exceptions.CancelledError("Cancelled")

    # -- control pipe -----------------------------------------------------------

    def listen(self) -> None:
        threading.Thread(target=self._listen, name="control-listener", daemon=True).start()

    def _listen(self) -> None:
        while True:
            try:
                msg = loads(self._ctrl_conn.recv_bytes())
            except (EOFError, OSError):
                # The parent is gone (even SIGKILLed): do not outlive it.
                _exit_with_group(EXIT_PARENT_GONE)
            if isinstance(msg, CancelTask):
                self._cancel(msg.task_id, msg.details)
            elif isinstance(msg, WorkerShutdown):
                self._shutdown_event.set()

    def _cancel(self, task_id: int, details: Any) -> None:
        with self._lock:
            current = self._current
            if current is None or current.task_id != task_id:
                # Arrived before the main thread picked the task up.
                self._early_cancels[task_id] = details
                return
            self._deliver_cancel(current, details)

    def _deliver_cancel(self, current: _Current, details: Any) -> None:
        """Cancel the running task: under _lock, or in the main thread (early cancels)."""
        if self._cancelled.is_set():
            return
        if current.holder.details is None:
            current.holder.details = details
        self._cancelled.set()
        # An activity that checks activity.is_cancelled() handles cancellation itself
        # (stock's process-pool contract): it is not interrupted, only killed if it
        # does not return within cancel_grace.
        cooperative = self._contexts.observed.observed
        if current.raise_enabled and not cooperative and self._raiser.request():
            signal.pthread_kill(self._main_ident, _CANCEL_SIGNAL)

    def _heartbeat_failed(self, beats: _Beats, err: BaseException) -> None:
        beats.error = err
        with self._lock:
            current = self._current
            if current is not None and current.beats is beats:
                self._deliver_cancel(current, None)

    # -- task loop ----------------------------------------------------------------

    def serve(self) -> None:
        self.writer.send(dumps(ChildReady(pid=os.getpid())))
        reader = FrameReader(self._task_conn.fileno())
        while True:
            try:
                data = reader.read()
            except (EOFError, OSError):
                _exit_with_group(EXIT_PARENT_GONE)
            try:
                msg = loads(data)
            except Exception as err:
                # A task whose arguments cannot be rebuilt here: fail it, live on.
                # Its id is unreadable too; -1 means "the task this child runs".
                self.writer.send(
                    dumps(
                        done_to_wire(
                            TaskDone(
                                task_id=-1,
                                outcome="failed",
                                failure=_failure_bytes(
                                    self._converter,
                                    temporalio.exceptions.ApplicationError(
                                        "The activity's arguments could not be unpickled in the "
                                        f"child process: {type(err).__name__}: {err}. Make every "
                                        "argument type importable from a module (not defined in "
                                        "a function).",
                                        type="ArgumentTransferError",
                                    ),
                                ),
                            )
                        )
                    )
                )
                continue
            if type(msg) is not tuple:
                assert isinstance(msg, Stop), msg
                return
            done = self.run(task_from_wire(msg))
            try:
                payload = dumps(done_to_wire(done))
            except Exception as err:
                payload = dumps(done_to_wire(_unpicklable_result(self._converter, done, err)))
            self.writer.send(payload)

    def run(self, task: PackedTask) -> TaskDone:
        # The parent only sends registered types; "" is the dynamic activity.
        spec = self._activities.get(task.activity_type) or self._activities[""]
        # The Info is unpacked when first asked for (activity.info(), a log record),
        # once; one a task never asks for costs nothing.
        unpacked: dict[str, temporalio.activity.Info] = {}

        # Heartbeat details of an earlier attempt that this child decodes (set below).
        details: list[list[Any]] = []

        def info() -> temporalio.activity.Info:
            got = unpacked.get("info")
            if got is None:
                fresh = task.unpack_info()
                if details:
                    fresh = dataclasses.replace(fresh, heartbeat_details=details[0])
                # setdefault: two threads asking at once both get the one Info.
                got = unpacked.setdefault("info", fresh)
            return got

        converter = self._converter
        if self._contextual:
            fields = info()
            converter = converter.with_context(
                temporalio.converter.ActivitySerializationContext(
                    namespace=fields.namespace,
                    activity_id=fields.activity_id,
                    activity_type=fields.activity_type,
                    activity_task_queue=fields.task_queue,
                    workflow_id=fields.workflow_id,
                    workflow_type=fields.workflow_type,
                    is_local=fields.is_local,
                )
            )
        beats = _Beats(
            token=task.task_token,
            interval=task.heartbeat_interval,
            converter=converter.payload_converter,
        )
        raise_enabled = not spec.no_thread_cancel_exception
        current = _Current(
            task_id=task.task_id,
            holder=_context.new_cancellation_holder(),
            raise_enabled=raise_enabled,
            beats=beats,
        )
        cancelled = self._cancelled
        if cancelled.is_set():
            cancelled.clear()  # no task is current: nothing sets it meanwhile
        shipper = self._shipper

        def heartbeat(*details: Any) -> None:
            beats.latest = details
            beats.pending = details
            if not beats.scheduled:
                beats.scheduled = True
                shipper.wake()

        shipper.begin(beats)
        early = None
        with self._lock:
            self._current = current
            if self._early_cancels:
                early = self._early_cancels.pop(task.task_id, None)
                # Cancels of older tasks: those ran elsewhere (or never will).
                self._early_cancels = {
                    k: v for k, v in self._early_cancels.items() if k > task.task_id
                }
        recorded: list[_metrics.MetricEvent] = []
        ctx_token = self._contexts.enter(
            info=info,
            heartbeat=heartbeat,
            shield=self._raiser.shielded if raise_enabled else None,
            payload_converter=converter.payload_converter,
            cancellation_details=current.holder,
            metric_meter=_metrics.BufferedMeter(recorded),
        )
        cpu_start = time.process_time()
        outcome: str
        value: Any = None
        failure: bytes | None = None
        try:
            try:
                if raise_enabled:
                    self._raiser.arm()
                if early is not None:
                    self._deliver_cancel(current, early)
                    if raise_enabled and self._raiser.take():
                        raise temporalio.exceptions.CancelledError("Cancelled")
                args: Sequence[Any] = task.args
                if task.encoded_heartbeat is not None:
                    details.append(_decode_heartbeat(converter, task.encoded_heartbeat))
                    unpacked.pop("info", None)  # unpacked before the details were known
                if task.encoded_args is not None:
                    args = _decode_args(converter, task.encoded_args, spec.arg_types)
                with _trace.attached(task.trace_context):
                    value = spec.fn(*args)
            finally:
                self._raiser.disarm()
            outcome = "completed"
        except _context.CompleteAsyncError:
            outcome = "complete_async"
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as err:
            if isinstance(err, temporalio.exceptions.CancelledError) and cancelled.is_set():
                outcome = "cancelled"
            else:
                outcome = "failed"
                # The parent logs the failure on temporalio.activity.logger, as stock.
                logger.debug(
                    "Activity %s failed in child %d", task.activity_type, os.getpid(), exc_info=True
                )
            failure = _failure_bytes(converter, err)
        finally:
            cpu = time.process_time() - cpu_start
            beats.end()
            _context.exit_activity_context(ctx_token)
            with self._lock:
                self._current = None
        result: bytes | None = None
        if outcome == "completed" and task.encode_result:
            encoded = _encode_result(converter, value)
            value = None
            if isinstance(encoded, ResultError):
                outcome, failure = "failed", _failure_bytes(converter, encoded.error)
            else:
                result = encoded
        last_heartbeat: bytes | None = None
        heartbeat_error = beats.error
        if beats.latest is not None and heartbeat_error is None:
            try:
                last_heartbeat = beats.convert(beats.latest)
            except Exception as err:
                heartbeat_error = err
        error_bytes = None
        if heartbeat_error is not None:
            error_bytes = _failure_bytes(
                converter,
                temporalio.exceptions.ApplicationError(
                    "Heartbeat details could not be converted to payloads: "
                    f"{type(heartbeat_error).__name__}: {heartbeat_error}",
                    type="HeartbeatConversionError",
                ),
            )
        return TaskDone(
            task_id=task.task_id,
            outcome=outcome,  # type: ignore[arg-type]
            value=value,
            failure=failure,
            last_heartbeat=last_heartbeat,
            heartbeat_error=error_bytes,
            cpu_seconds=cpu,
            metrics=recorded or None,
            result=result,
        )


# -- payload conversion in the child (the parent applies only the codec) -------------
#
# The errors say what the parent's path says for the same failure
# (pool/activity/dispatch/decode.py), so a task fails alike wherever its payloads
# were converted.


def _decode_args(
    converter: temporalio.converter.DataConverter, data: bytes, arg_types: list[Any] | None
) -> list[Any]:
    payloads = temporalio.api.common.v1.Payloads.FromString(data).payloads
    if arg_types is not None and len(arg_types) != len(payloads):
        arg_types = None
    try:
        return converter.payload_converter.from_payloads(list(payloads), type_hints=arg_types)
    except Exception as err:
        raise temporalio.exceptions.ApplicationError(
            f"Failed decoding arguments: {type(err).__name__}: {err}"
        ) from err


def _decode_heartbeat(converter: temporalio.converter.DataConverter, data: bytes) -> list[Any]:
    payloads = temporalio.api.common.v1.Payloads.FromString(data).payloads
    try:
        return converter.payload_converter.from_payloads(list(payloads))
    except Exception as err:
        raise temporalio.exceptions.ApplicationError(
            f"Failed decoding heartbeat details: {type(err).__name__}: {err}",
            non_retryable=True,
        ) from err


@dataclass(frozen=True)
class ResultError:
    """A return value the payload converter refused."""

    error: BaseException


def _encode_result(
    converter: temporalio.converter.DataConverter, value: Any
) -> bytes | ResultError:
    try:
        payloads = converter.payload_converter.to_payloads([value])
    except Exception as err:
        error = temporalio.exceptions.ApplicationError(
            "The activity's return value could not be converted to a payload: "
            f"{type(err).__name__}: {err}",
            type="ResultConversionError",
        )
        error.__cause__ = err
        return ResultError(error)
    return temporalio.api.common.v1.Payloads(payloads=payloads).SerializeToString()


def _failure_bytes(converter: temporalio.converter.DataConverter, err: BaseException) -> bytes:
    failure = temporalio.api.failure.v1.Failure()
    try:
        converter.failure_converter.to_failure(err, converter.payload_converter, failure)
    except Exception as inner:
        failure.Clear()
        failure.message = f"Failed building exception result: {inner}"
        failure.stack_trace = "".join(traceback.format_exception(err))
        failure.application_failure_info.SetInParent()
    return failure.SerializeToString()


def _unpicklable_result(
    converter: temporalio.converter.DataConverter, done: TaskDone, err: Exception
) -> TaskDone:
    what = "return value" if done.outcome == "completed" else "outcome"
    return TaskDone(
        task_id=done.task_id,
        outcome="failed",
        failure=_failure_bytes(
            converter,
            temporalio.exceptions.ApplicationError(
                f"The activity's {what} could not be pickled to return it from the child "
                f"process: {type(err).__name__}: {err}. Return plain data (or a type the "
                "data converter can serialise).",
                type="ResultTransferError",
            ),
        ),
        last_heartbeat=done.last_heartbeat,
        cpu_seconds=done.cpu_seconds,
        metrics=done.metrics,
    )


def _adopt_authkeys(authkeys: tuple[bytes, bytes]) -> None:
    """Take the parent's process authkeys (stdlib ``multiprocessing``, ``multiprocess``),
    as a stock ``ProcessPoolExecutor`` child has the first: manager proxies sent to
    this child authenticate with them."""
    stdlib_key, multiprocess_key = authkeys
    multiprocessing.current_process().authkey = stdlib_key
    multiprocess.current_process().authkey = multiprocess_key


def _log_to_parent(writer: _PipeWriter, level: int) -> None:
    """Every record goes to the parent's handlers (and is printed once, there)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_PipeLogHandler(writer))
    root.setLevel(level)


def _start(spec_bytes: bytes, task_conn: Any, ctrl_conn: Any, writer: _PipeWriter) -> _Child:
    """Everything before ``ChildReady``: whatever fails here is a start failure."""
    spec: ChildSpec = loads(spec_bytes)
    _adopt_authkeys(spec.authkeys)
    _log_to_parent(writer, spec.log_level)
    # Before the activities' modules are imported (child.load): they read these.
    _native.limit_native_threads(spec.native_threads)
    if spec.cpu_affinity:
        _native.pin_to_core(spec.index)
    child = _Child(spec, task_conn, ctrl_conn, writer)
    child.install_signals()
    child.listen()
    child.load()
    return child


def _report_start_failure(writer: _PipeWriter, err: BaseException) -> None:
    """Tell the parent why this child cannot start: its exception and traceback."""
    kind = type(err)
    name = kind.__qualname__
    if kind.__module__ != "builtins":
        name = f"{kind.__module__}.{name}"
    message = dumps(
        ChildBroken(
            pid=os.getpid(),
            error_type=name,
            message=str(err),
            traceback="".join(traceback.format_exception(err)),
        )
    )
    with contextlib.suppress(OSError):
        writer.send(message)


def child_main(spec_bytes: bytes, task_conn: Any, ctrl_conn: Any) -> None:
    """Entry point of a child process (the target of ``Process``)."""
    _lead_own_group()
    _die_with_parent()
    writer = _PipeWriter(task_conn, _context.CancelRaiser())
    try:
        child = _start(spec_bytes, task_conn, ctrl_conn, writer)
    except BaseException as err:
        try:
            _report_start_failure(writer, err)
        finally:
            os._exit(EXIT_BROKEN)
    child.serve()
