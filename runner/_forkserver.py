"""Imported only by the fork server (the first of its preload modules): ignore SIGHUP,
and when the fork server exits, remove the socket it listened on, and its directory
once empty.

    worker ──connect──▶ pymp-XXXX/listener-YYYY ──▶ fork server ──fork──▶ children

multiprocess binds that socket in the worker's temporary directory, which the worker
removes at a normal exit. A worker that is SIGKILLed cannot, but the fork server
outlives it: it exits (through ``SystemExit``, so ``atexit`` runs) once the worker and
every child have closed their ends of its "alive" pipe, and cleans up here.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal

from multiprocess import forkserver

__all__: list[str] = []

# Children forked from the fork server inherit this hook; they leave by os._exit, and the
# pid check keeps any process but the fork server itself from acting on it.
_FORK_SERVER_PID = os.getpid()


def _remove_listener() -> None:
    if os.getpid() != _FORK_SERVER_PID:
        return
    address = forkserver._forkserver._forkserver_address
    if not isinstance(address, str) or not address or address.startswith("\0"):
        return  # unset, or an abstract socket (nothing on disk)
    with contextlib.suppress(OSError):
        os.unlink(address)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(address))  # only if nothing else is in it


atexit.register(_remove_listener)
# A terminal's hangup reaches the worker's whole process group, the fork server included:
# the worker decides (the launcher stops gracefully), the fork server must not die first.
# Children set their own SIGHUP handler (runner._child), so nothing inherits the SIG_IGN.
signal.signal(signal.SIGHUP, signal.SIG_IGN)
