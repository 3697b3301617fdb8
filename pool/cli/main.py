"""``python -m pool``: parse the command line, run one command, exit with its code.

argv ─▶ args.build_parser() ─▶ logging on stderr ─▶ run_command    (pool/cli/run.py)
                                                  ─▶ demo_command   (pool/cli/demo.py)
                                                  ─▶ server_command (pool/cli/server.py)
     ─▶ LaunchError: one line on stderr, its exit code; Ctrl-C in start-up: 130
     ─▶ exit_skipping_teardown(code)
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from .args import build_parser
from .demo import demo_command
from .errors import EXIT_INTERRUPTED, EXIT_USAGE, LaunchError, one_line
from .run import run_command
from .server import server_command

__all__ = ["exit_skipping_teardown", "main", "run_cli"]

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": run_command,
    "demo": demo_command,
    "server": server_command,
}


def run_cli(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the command, return its exit code (errors already printed)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help (0) or a bad command line (EXIT_USAGE)
        return done.code if isinstance(done.code, int) else EXIT_USAGE
    # SIGTERM before the loop installs its own handlers behaves like Ctrl-C.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    command_name = f"python -m pool {args.command_name}"
    try:
        _configure_logging(args)
        return int(_COMMANDS[args.command_name](args))
    except LaunchError as err:
        print(f"{command_name}: error: {one_line(err.message, 1000)}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        print(f"{command_name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def exit_skipping_teardown(code: int) -> NoReturn:
    """Run the exit handlers, then end the process without interpreter teardown.

    temporalio's Rust bridge can take the GIL from its own threads while CPython
    finalizes, which aborts (PyGILState_Release) or segfaults a process that made an RPC
    shortly before exiting (temporalio/sdk-python#300, open; here 4 exits in 10 after a
    failed namespace check). By now everything this process started is stopped; the atexit
    handlers (logging, multiprocess finalizers) still run, the teardown is skipped.
    """
    import atexit

    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """``python -m pool`` and the ``temporal-pool`` script: run, then exit with the code."""
    _current_directory_importable()
    exit_skipping_teardown(run_cli(argv))


def _current_directory_importable() -> None:
    """``python -m`` puts the current directory first on ``sys.path``; a console script
    puts its own bin directory there instead. Do as ``python -m`` does, so that
    ``temporal-pool run app`` finds ``app.py`` exactly as ``python -m pool run app`` does."""
    cwd = os.getcwd()
    if not any(entry in ("", cwd) for entry in sys.path):
        sys.path.insert(0, cwd)


def _configure_logging(args: argparse.Namespace) -> None:
    """One stderr handler: run's --log-level and --log-format, demo's --log-level, and
    warnings only for server."""
    from .logs import LINE_FORMAT, JsonFormatter

    level = getattr(args, "log_level", "WARNING")
    log_format = getattr(args, "log_format", "text")

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(LINE_FORMAT)
    )
    logging.basicConfig(level=getattr(logging, level), handlers=[handler])
