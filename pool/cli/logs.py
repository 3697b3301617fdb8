"""Log formats for the launcher: the classic line, or one JSON object per line.

    logging.LogRecord ─▶ JsonFormatter ─▶ {"time", "level", "logger", "message",
                                            "process", extra fields..., "exception"}

Extra fields are whatever the record carries beyond the standard attributes: the
activity context (``temporal_activity``, as temporalio's activity logger adds it),
``child_pid`` for a record a child sent, ``__temporal_error_identifier``; a value
that is not JSON is written as its ``repr``.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

__all__ = ["LINE_FORMAT", "JsonFormatter"]

LINE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

# Attributes every LogRecord has (the rest came from ``extra``).
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=repr, ensure_ascii=False)
