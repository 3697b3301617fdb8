"""What the child writes to its task pipe from any thread: whole frames, and its logs.

main thread (TaskDone, ChildReady) ─┐
listener / shipper / user threads ──┼─▶ PipeWriter (lock; cancel signal blocked
logging (PipeLogHandler: ChildLog) ─┘   while an activity runs) ─▶ task pipe ─▶ parent
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

import temporalio.activity

from . import context as _context
from .frames import send_frame
from .messages import ChildLog, dumps

__all__ = ["CANCEL_SIGNAL", "PipeLogHandler", "PipeWriter", "log_to_parent"]

# What the listener thread sends the main thread to raise CancelledError there.
CANCEL_SIGNAL = signal.SIGUSR1


class PipeWriter:
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

    def send(self, *parts: bytes | memoryview) -> None:
        """One message, the concatenation of ``parts`` (``dumps`` / ``dumps_frame``)."""
        block = self.raiser.armed and threading.get_ident() == self._main_ident
        if block:
            signal.pthread_sigmask(signal.SIG_BLOCK, {CANCEL_SIGNAL})
        try:
            with self._lock:
                send_frame(self._fd, *parts)
        finally:
            if block:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {CANCEL_SIGNAL})


def record_fields(record: logging.LogRecord, exc_text: str | None) -> dict[str, Any]:
    """A record's fields as the parent rebuilds it: the message formatted, the
    exception as text, plus ``child_pid`` and, inside an activity,
    ``temporal_activity`` (the keys temporalio's ``activity.logger`` adds)."""
    fields = dict(record.__dict__)
    fields["msg"] = record.getMessage()
    fields["args"] = None
    if exc_text is not None:
        fields["exc_text"] = exc_text
    fields["exc_info"] = None
    fields["child_pid"] = os.getpid()
    if "temporal_activity" not in fields and temporalio.activity.in_activity():
        fields["temporal_activity"] = _context.log_fields(temporalio.activity.info())
    return fields


def plain_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with every value that is not a plain scalar replaced by its repr."""
    return {
        k: v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)
        for k, v in fields.items()
    }


class PipeLogHandler(logging.Handler):
    """Sends every record to the parent, whose own handlers format and write it."""

    def __init__(self, writer: PipeWriter) -> None:
        super().__init__()
        self._writer = writer
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            exc_text = None
            if record.exc_info:
                exc_text = self._formatter.formatException(record.exc_info)
            fields = record_fields(record, exc_text)
            try:
                data = dumps(ChildLog(record=fields))
            except Exception:
                data = dumps(ChildLog(record=plain_fields(fields)))
            self._writer.send(data)
        except Exception:
            self.handleError(record)


def log_to_parent(writer: PipeWriter, level: int) -> None:
    """Every record goes to the parent's handlers (and is printed once, there)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(PipeLogHandler(writer))
    root.setLevel(level)
