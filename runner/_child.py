"""The child process: receive a task, run the activity, send the outcome back.

    parent ──task pipe──▶ main thread: PackedTask ─▶ TaskRun (runner._task) ─▶ TaskDone ──▶ parent
    parent ──ctrl pipe──▶ listener thread: CancelTask / WorkerShutdown
                            └─ sets the local cancel event, then SIGUSR1 to the
                               main thread, whose handler raises CancelledError
    activity.heartbeat() ─▶ newest details kept locally ─▶ shipper thread
                            (runner._shipper) ─▶ SharedStateManager hub ─▶ parent
    a large result the parent lets it send ─▶ runner.report ─▶ Temporal server; the
                            TaskDone then says how the server answered

``activity.heartbeat()`` and ``activity.is_cancelled()`` touch only local memory;
everything that costs a system call happens on the helper threads. The process
plumbing (its group, the parent's death, exit codes) is runner._process; what the
child writes to its pipe, logs included, is runner._pipe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass, replace
from typing import Any

import temporalio.converter
import temporalio.exceptions

from . import _native
from . import context as _context
from . import metrics as _metrics
from ._conversion import argument_transfer_error, failure_bytes, unpicklable_result
from ._pipe import CANCEL_SIGNAL, PipeWriter, log_to_parent
from ._process import (
    EXIT_BROKEN,
    EXIT_PARENT_GONE,
    adopt_authkeys,
    die_with_parent,
    exit_with_group,
    lead_own_group,
)
from ._shipper import Beats, Shipper
from ._task import TaskRun, error_outcome, take_early_cancel
from .frames import FrameReader
from .messages import (
    ActivitySpec,
    CancelTask,
    ChildBroken,
    ChildReady,
    ChildSpec,
    PackedTask,
    Stop,
    TaskDone,
    WorkerShutdown,
    done_to_wire,
    dumps,
    dumps_frame,
    loads,
    task_from_wire,
)
from .report import ChildReporter

__all__ = ["EXIT_BROKEN", "EXIT_PARENT_GONE", "child_main"]

logger = logging.getLogger("runner")


@dataclass(eq=False)
class _Current:
    task_id: int
    holder: Any
    raise_enabled: bool
    beats: Beats


class _Child:
    def __init__(self, spec: ChildSpec, task_conn: Any, ctrl_conn: Any, writer: PipeWriter) -> None:
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
        self._shipper = Shipper(loads(spec.heartbeat_sender), self._heartbeat_failed)
        self._reporter = ChildReporter(spec.report) if spec.report is not None else None
        self.writer = writer

    # -- set-up ---------------------------------------------------------------

    def load(self) -> None:
        """Rebuild what the parent sent; then run the initializer, as the stock
        ``ProcessPoolExecutor`` does before a child's first task."""
        self._activities = loads(self._spec.activities)
        self._converter = loads(self._spec.converter)
        # Narrowing the converter per task costs ~9 us; skip it when narrowing gives
        # the same converter back (the default converter's case).
        self._contextual = _context.narrows_per_task(self._converter)
        if self._spec.initializer is not None:
            initializer, initargs = loads(self._spec.initializer)
            initializer(*initargs)

    def install_signals(self) -> None:
        # A terminal Ctrl-C reaches the whole process group: the parent decides.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(CANCEL_SIGNAL, self._on_cancel_signal)

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
                exit_with_group(EXIT_PARENT_GONE)
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
            signal.pthread_kill(self._main_ident, CANCEL_SIGNAL)

    def _heartbeat_failed(self, beats: Beats, err: BaseException) -> None:
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
                exit_with_group(EXIT_PARENT_GONE)
            try:
                msg = loads(data)
            except Exception as err:
                # A task whose arguments cannot be rebuilt here: fail it, live on.
                # Its id is unreadable too; -1 means "the task this child runs".
                failure = failure_bytes(self._converter, argument_transfer_error(err))
                done = TaskDone(task_id=-1, outcome="failed", failure=failure)
                self.writer.send(dumps(done_to_wire(done)))
                continue
            if type(msg) is not tuple:
                assert isinstance(msg, Stop), msg
                return
            task = task_from_wire(msg)
            done = self._report(task, self.run(task))
            del msg, data, task  # the task's frame (its arguments' bytes) is not needed now
            try:
                parts = dumps_frame(done_to_wire(done))
            except Exception as err:
                parts = dumps_frame(done_to_wire(unpicklable_result(self._converter, done, err)))
            self.writer.send(*parts)

    def run(self, task: PackedTask) -> TaskDone:
        # The parent only sends registered types; "" is the dynamic activity.
        spec = self._activities.get(task.activity_type) or self._activities[""]
        run = TaskRun(task, spec, self._converter, self._contextual, self._shipper)
        current = _Current(
            task_id=task.task_id,
            holder=run.holder,
            raise_enabled=run.raise_enabled,
            beats=run.beats,
        )
        if self._cancelled.is_set():
            self._cancelled.clear()  # no task is current: nothing sets it meanwhile
        self._shipper.begin(run.beats)
        early = self._become_current(current)
        ctx_token = self._contexts.enter(
            info=run.info,
            heartbeat=run.heartbeat,
            shield=self._raiser.shielded if run.raise_enabled else None,
            payload_converter=run.converter.payload_converter,
            cancellation_details=run.holder,
            metric_meter=_metrics.BufferedMeter(run.recorded),
        )
        cpu_start = time.process_time()
        value: Any = None
        failure: bytes | None = None
        try:
            value = self._call(run, current, early)
            outcome = "completed"
        except _context.CompleteAsyncError:
            outcome = "complete_async"
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as err:
            outcome = error_outcome(err, self._cancelled.is_set())
            if outcome == "failed":
                # The parent logs the failure on temporalio.activity.logger, as stock.
                logger.debug(
                    "Activity %s failed in child %d", task.activity_type, os.getpid(), exc_info=True
                )
            failure = failure_bytes(run.converter, err)
        finally:
            cpu = time.process_time() - cpu_start
            run.beats.end()
            _context.exit_activity_context(ctx_token)
            with self._lock:
                self._current = None
        return run.done(outcome, value, failure, cpu)

    def _report(self, task: PackedTask, done: TaskDone) -> TaskDone:
        """Send a completed task's result to the server when the parent lets this child
        (``task.report``) and its size is the child's to send; ``done`` says so then."""
        reporter = self._reporter
        result = done.result
        if (
            reporter is None
            or not task.report
            or done.outcome != "completed"
            or result is None
            or done.heartbeat_error is not None
            or not reporter.settings.wants(len(result))
        ):
            return done
        reported = reporter.complete(task.task_token, result)
        return done if reported is None else replace(done, result=None, reported=reported)

    def _become_current(self, current: _Current) -> Any | None:
        """Make ``current`` the task cancels reach; its early cancel, if one came."""
        with self._lock:
            self._current = current
            if not self._early_cancels:
                return None
            early, self._early_cancels = take_early_cancel(self._early_cancels, current.task_id)
            return early

    def _call(self, run: TaskRun, current: _Current, early: Any | None) -> Any:
        """Run the task with the cancel signal's raise armed (unless the activity opted out)."""
        try:
            if run.raise_enabled:
                self._raiser.arm()
            if early is not None:
                self._deliver_cancel(current, early)
                if run.raise_enabled and self._raiser.take():
                    raise temporalio.exceptions.CancelledError("Cancelled")
            return run.call()
        finally:
            self._raiser.disarm()


def _start(spec_bytes: bytes, task_conn: Any, ctrl_conn: Any, writer: PipeWriter) -> _Child:
    """Everything before ``ChildReady``: whatever fails here is a start failure."""
    spec: ChildSpec = loads(spec_bytes)
    adopt_authkeys(spec.authkeys)
    log_to_parent(writer, spec.log_level)
    # Before the activities' modules are imported (child.load): they read these.
    _native.limit_native_threads(spec.native_threads)
    if spec.cpu_affinity:
        _native.pin_to_core(spec.index)
    child = _Child(spec, task_conn, ctrl_conn, writer)
    child.install_signals()
    child.listen()
    child.load()
    return child


def _report_start_failure(writer: PipeWriter, err: BaseException) -> None:
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
    lead_own_group()
    die_with_parent()
    writer = PipeWriter(task_conn, _context.CancelRaiser())
    try:
        child = _start(spec_bytes, task_conn, ctrl_conn, writer)
    except BaseException as err:
        try:
            _report_start_failure(writer, err)
        finally:
            os._exit(EXIT_BROKEN)
    child.serve()
