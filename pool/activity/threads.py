"""Sync activities in a user-supplied ``ThreadPoolExecutor``, as the stock worker
runs them: ``CancelledError`` is raised inside the thread on cancellation unless
the activity shields itself or opted out with ``no_thread_cancel_exception``."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any

import temporalio.exceptions

import runner.context

__all__ = ["ThreadCancelRaiser", "run_in_thread"]

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)


class ThreadCancelRaiser(runner.context.CancelRaiser):
    """Raises ``CancelledError`` asynchronously in the thread it is bound to.

    When to raise (pending, shields) is ``runner.context.CancelRaiser``'s decision;
    this adds only the delivery. Armed from the start: a cancel requested before the
    thread picks the activity up lands as it binds."""

    def __init__(self) -> None:
        super().__init__()
        self._thread_id: int | None = None
        self.arm()

    def bind(self) -> None:
        with self._lock:
            self._thread_id = threading.get_ident()
            if self.take():
                self._raise_locked()

    def unbind(self) -> None:
        with self._lock:
            tid, self._thread_id = self._thread_id, None
            if tid is not None:
                # Clear an exception set but not yet delivered: it must never land
                # in the executor's own loop after the activity returned.
                _set_async_exc(tid, ctypes.py_object())  # type: ignore[arg-type]

    def request(self) -> bool:
        with self._lock:
            fire = super().request() and self._thread_id is not None and self.take()
            if fire:
                self._raise_locked()
            return fire

    def _raise_locked(self) -> None:
        assert self._thread_id is not None
        _set_async_exc(self._thread_id, ctypes.py_object(temporalio.exceptions.CancelledError))


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
