"""Sync activities in a user-supplied ``ThreadPoolExecutor``, as the stock worker
runs them: ``CancelledError`` is raised inside the thread on cancellation unless
the activity shields itself or opted out with ``no_thread_cancel_exception``."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import temporalio.exceptions

import runner.context

__all__ = ["ThreadCancelRaiser", "run_in_thread"]

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)


class ThreadCancelRaiser:
    """Raises ``CancelledError`` asynchronously in one thread, honouring shields."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread_id: int | None = None
        self._depth = 0
        self._pending = False

    def bind(self) -> None:
        with self._lock:
            self._thread_id = threading.get_ident()
            if self._pending and self._depth == 0:
                self._raise_locked()

    def unbind(self) -> None:
        with self._lock:
            tid, self._thread_id = self._thread_id, None
            if tid is not None:
                # Clear an exception set but not yet delivered: it must never land
                # in the executor's own loop after the activity returned.
                _set_async_exc(tid, ctypes.py_object())  # type: ignore[arg-type]

    def request(self) -> None:
        with self._lock:
            self._pending = True
            if self._thread_id is not None and self._depth == 0:
                self._raise_locked()

    def _raise_locked(self) -> None:
        assert self._thread_id is not None
        self._pending = False
        _set_async_exc(self._thread_id, ctypes.py_object(temporalio.exceptions.CancelledError))

    @contextmanager
    def shielded(self) -> Iterator[None]:
        with self._lock:
            self._depth += 1
        try:
            yield None
        finally:
            with self._lock:
                self._depth -= 1
                fire = self._depth == 0 and self._pending
                if fire:
                    self._pending = False
            if fire:
                raise temporalio.exceptions.CancelledError("Cancelled")


def run_in_thread(
    context_kwargs: dict[str, Any],
    raiser: ThreadCancelRaiser | None,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
) -> Any:
    token = runner.context.enter_activity_context(**context_kwargs)
    try:
        if raiser is None:
            return fn(*args)
        raiser.bind()
        try:
            return fn(*args)
        finally:
            raiser.unbind()
    finally:
        runner.context.exit_activity_context(token)
