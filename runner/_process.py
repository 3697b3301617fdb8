"""The child as a process: its group, its parent's death, its exit codes, its authkeys.

Each child leads its own process group, which the activity's subprocesses join. When
the parent dies (control or task pipe EOF, or the parent-death signal) the child
SIGKILLs that group, itself included; when the child ends otherwise, the parent does.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
from typing import Any, NoReturn

import multiprocess

__all__ = [
    "EXIT_BROKEN",
    "EXIT_PARENT_GONE",
    "adopt_authkeys",
    "die_with_parent",
    "exit_with_group",
    "lead_own_group",
]

# Named exit codes, so the parent can say what happened.
EXIT_PARENT_GONE = 70  # the control pipe closed: the parent died
EXIT_BROKEN = 71  # the child failed before it was ready (see ChildBroken)

# What Linux sends us when our parent (the fork server or the worker) dies. Not SIGKILL:
# that would end this process alone and leave the activity's subprocesses behind, so the
# handler takes the whole group down instead (see exit_with_group).
_PARENT_DEATH_SIGNAL = signal.SIGHUP


def lead_own_group() -> None:
    """Make this child the leader of a new process group (same session).

    Subprocesses an activity starts join it, so one ``killpg`` ends them with the
    child: the parent's on any exit of the child, ours when the parent dies.
    """
    with contextlib.suppress(OSError):  # pragma: no cover - already a group leader
        os.setpgid(0, 0)


def exit_with_group(code: int) -> NoReturn:
    """Exit, taking every process of our group (the activity's subprocesses) along.

    Only when we lead the group: never signal the worker's own group. The SIGKILL
    reaches this process too, so it ends by that signal rather than ``code``.
    """
    if os.getpgrp() == os.getpid():
        with contextlib.suppress(OSError):
            os.killpg(os.getpid(), signal.SIGKILL)
    os._exit(code)


def _on_parent_death(signum: int, frame: Any) -> None:
    exit_with_group(EXIT_PARENT_GONE)


def die_with_parent() -> None:
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


def adopt_authkeys(authkeys: tuple[bytes, bytes]) -> None:
    """Take the parent's process authkeys (stdlib ``multiprocessing``, ``multiprocess``),
    as a stock ``ProcessPoolExecutor`` child has the first: manager proxies sent to
    this child authenticate with them."""
    stdlib_key, multiprocess_key = authkeys
    multiprocessing.current_process().authkey = stdlib_key
    multiprocess.current_process().authkey = multiprocess_key
