"""``python -m pool server``: the embedded Temporal dev server in the foreground.

check ports, binary, --db-file ─▶ DevServer.start() ─▶ one line: address, UI, data
  ─▶ wait: a signal (EXIT_OK) or the server exiting on its own (EXIT_FATAL, with the
     end of its log) ─▶ DevServer.stop()
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from .errors import EXIT_CONFIG, EXIT_FATAL, EXIT_OK, LaunchError, one_line, require
from .signals import Signals, first_done

__all__ = ["server_command"]


def server_command(args: argparse.Namespace) -> int:
    """``python -m pool server``: check the ports, start the dev server, wait for a signal."""
    from ..testing import DevServer, DevServerError, find_temporal_binary, port_in_use

    for flag, port in (("--port", args.port), ("--ui-port", args.ui_port)):
        if port is None:
            continue
        require(1 <= port <= 65535, f"{flag} must be between 1 and 65535, got {port}")
        require(
            not port_in_use(args.ip, port),
            f"{flag} {port} is already in use on {args.ip} (another Temporal server?): stop "
            f"it, or pass {flag} with a free port",
        )
    try:
        find_temporal_binary()
    except DevServerError as err:
        raise LaunchError(EXIT_CONFIG, one_line(err)) from None
    if args.db_file is not None:
        parent = Path(args.db_file).resolve().parent
        require(parent.is_dir(), f"--db-file {args.db_file}: directory {parent} does not exist")
    server = DevServer(
        ip=args.ip,
        port=args.port,
        ui=args.ui or args.ui_port is not None,
        ui_port=args.ui_port,
        db_filename=args.db_file,
        namespaces=("default", *args.namespace),
    )
    try:
        server.start()
    except DevServerError as err:
        print(f"python -m pool server: error: {err}", file=sys.stderr, flush=True)
        return EXIT_FATAL
    try:
        ui = f"http://{server.ip}:{server.ui_port}" if server.ui_port else "off"
        data = f"file {args.db_file}" if args.db_file else "in memory (lost at exit)"
        print(
            f"Temporal dev server listening on {server.address} | namespaces: "
            f"{', '.join(server.namespaces)} | UI: {ui} | data: {data} | server pid "
            f"{server.pid} | Ctrl-C to stop",
            flush=True,
        )
        code = asyncio.run(_wait_for_stop(server))
    finally:
        server.stop()
    if code == EXIT_OK:
        print("Temporal dev server stopped", flush=True)
    return code


def _log_tail(path: Path | None, lines: int = 20) -> str:
    """The last lines of the server's log (read now: stopping the server deletes it)."""
    try:
        text = path.read_text(errors="replace") if path is not None else ""
    except OSError as err:
        return f"(log unreadable: {err})"
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(log empty)"


async def _wait_for_stop(server: Any) -> int:
    """Until SIGINT/SIGTERM (EXIT_OK) or the server process exits by itself (EXIT_FATAL)."""
    loop = asyncio.get_running_loop()
    signals = Signals(loop)
    exited = asyncio.Event()
    pidfd: int | None = None
    try:
        try:
            # Readable when the process exits, without reaping it (Linux 5.3+).
            pidfd = os.pidfd_open(server.pid)  # type: ignore[attr-defined]
            loop.add_reader(pidfd, exited.set)
        except (AttributeError, OSError):
            pidfd = None
        waits: list[Any] = [signals.first.wait()]
        if pidfd is not None:
            waits.append(exited.wait())
        await first_done(*waits)
        if signals.first.is_set():
            return EXIT_OK
        print(
            f"python -m pool server: error: the dev server (pid {server.pid}) exited on its own; "
            f"the end of its log:\n{_log_tail(server.log_path)}",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_FATAL
    finally:
        if pidfd is not None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        signals.close()
