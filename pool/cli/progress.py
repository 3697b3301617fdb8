"""Live progress for the demo and the load tests: a rich progress bar on a terminal,
a plain line now and then otherwise (CI logs, pipes).

    ProgressBar(total, out) ─ update(done, status) ─▶ terminal: rich bar (redrawn)
                                                    └▶ otherwise: "progress: ..." lines,
                                                       at most one per ``every`` seconds
"""

from __future__ import annotations

import time
from typing import TextIO

__all__ = ["ProgressBar"]

_WIDTH = 24  # the plain line's bar


class ProgressBar:
    def __init__(self, *, total: int, label: str, out: TextIO, every: float = 1.0) -> None:
        self.total = total
        self._label = label
        self._out = out
        self._every = every
        self._last = float("-inf")
        self.tty = out.isatty()
        self._bar = None
        if self.tty:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                console=Console(file=out),
                transient=False,
            )
            self._task = self._bar.add_task(label, total=total, status="")
            self._bar.start()

    def update(self, done: int, status: str = "", *, final: bool = False) -> None:
        done = min(done, self.total)
        if self._bar is not None:
            self._bar.update(self._task, completed=done, status=status)
            return
        now = time.monotonic()
        if final or now - self._last >= self._every:
            self._last = now
            filled = round(_WIDTH * done / self.total) if self.total else _WIDTH
            bar = "#" * filled + "." * (_WIDTH - filled)
            line = f"progress: [{bar}] {done}/{self.total} {self._label} {status}"
            self._out.write(line.rstrip() + "\n")
            self._out.flush()

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
