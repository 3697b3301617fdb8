"""``python -m pool``: run, signals, bad configuration, demo and server, each launched as a
real subprocess against the session's dev server; plus the pure parts (sizes, discovery,
connection-setting precedence) in-process."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import grpc
import psutil
import pytest
import temporalio.client
import temporalio.service
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest, WorkflowServiceStub

from pool.cli.arg_types import parse_size
from pool.cli.args import build_parser
from pool.cli.connection import resolve_connection
from pool.cli.discovery import discover
from pool.cli.errors import (
    EXIT_CONFIG,
    EXIT_CONNECT,
    EXIT_NAMESPACE,
    EXIT_OK,
    EXIT_USAGE,
    LaunchError,
)
from pool.cli.run import pool_config
from pool.testing import DevServer, free_port
from tests.helpers import assert_eventually, async_assert_eventually
from tests.pool.launcher_app import LingerWorkflow, ShoutWorkflow

REPO = Path(__file__).resolve().parents[2]
APP = "tests.pool.launcher_app"

# A launcher imports temporalio and starts its pool in ~1-2 s on this machine; these
# bounds leave room for a loaded CI box and still fail a hang quickly.
_READY_TIMEOUT = 30.0
_EXIT_TIMEOUT = 15.0


def _env(tmp_path: Path) -> dict[str, str]:
    """The test's environment without TEMPORAL_* settings, and no user config file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
    env["TEMPORAL_CONFIG_FILE"] = str(tmp_path / "no-such-temporal.toml")
    return env


class _Launched:
    """A ``python -m pool`` subprocess whose output lines are collected by two threads."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pool", *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._pumps = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for t in self._pumps:
            t.start()

    @staticmethod
    def _pump(pipe: IO[str], lines: list[str]) -> None:
        for line in pipe:
            lines.append(line.rstrip("\n"))

    @property
    def stdout(self) -> str:
        return "\n".join(self.out)

    @property
    def stderr(self) -> str:
        return "\n".join(self.err)

    async def line(
        self, text: str, *, stderr: bool = False, timeout: float = _READY_TIMEOUT
    ) -> str:
        """The first output line containing ``text``, waiting for it to appear."""
        lines = self.err if stderr else self.out

        def find() -> str | None:
            for line in list(lines):
                if text in line:
                    return line
            rc = self.proc.poll()
            assert rc is None, f"exited with {rc} before printing {text!r}; stderr:\n{self.stderr}"
            return None

        return await async_assert_eventually(find, timeout=timeout)

    async def wait(self, timeout: float = _EXIT_TIMEOUT) -> int:
        rc = await asyncio.to_thread(self.proc.wait, timeout)
        for t in self._pumps:  # the rest of the output (children may hold the pipe briefly)
            await asyncio.to_thread(t.join, 5.0)
        return rc

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL: by pid, only this process."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(_EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Any]:
    started: list[_Launched] = []

    def start(*args: str) -> _Launched:
        launched = _Launched(list(args), _env(tmp_path))
        started.append(launched)
        return launched

    try:
        yield start
    finally:
        for launched in started:
            launched.stop()


def _run_args(dev_server: DevServer, task_queue: str, *extra: str) -> list[str]:
    return ["run", APP, "--task-queue", task_queue, "--address", dev_server.address, *extra]


# -- run, end to end --------------------------------------------------------------------


async def test_run_serves_a_workflow_and_exits_0_on_sigterm(
    dev_server: DevServer, client: temporalio.client.Client, task_queue: str, launch: Any
) -> None:
    worker = launch(*_run_args(dev_server, task_queue, "--processes", "1"))
    banner = await worker.line("pool worker started")
    assert f"task queue {task_queue!r}" in banner
    assert (
        "activities: shout, linger" in banner
        and "workflows: ShoutWorkflow, LingerWorkflow" in banner
    )
    assert "| 1 process (forkserver) |" in banner

    text, pid = await client.execute_workflow(
        ShoutWorkflow.run, "hello", id=f"wf-{uuid.uuid4()}", task_queue=task_queue
    )
    assert text == "HELLO"
    # Ran in one of the launcher's child processes, not in the launcher itself.
    descendants = {p.pid for p in psutil.Process(worker.proc.pid).children(recursive=True)}
    assert pid != worker.proc.pid and pid in descendants

    worker.signal(signal.SIGTERM)
    assert await worker.wait() == EXIT_OK, worker.stderr
    assert "Traceback" not in worker.stderr
    assert "shutting down" in worker.stderr


async def test_json_logs_are_one_object_per_line_with_the_activity_context(
    dev_server: DevServer, client: temporalio.client.Client, task_queue: str, launch: Any
) -> None:
    worker = launch(*_run_args(dev_server, task_queue, "--processes", "1", "--log-format", "json"))
    await worker.line("pool worker started")
    await client.execute_workflow(
        ShoutWorkflow.run, "hello", id=f"wf-{uuid.uuid4()}", task_queue=task_queue
    )
    await worker.line('"message": "shouting hello', stderr=True)
    worker.signal(signal.SIGTERM)
    assert await worker.wait() == EXIT_OK, worker.stderr
    records = [json.loads(line) for line in worker.err if line.strip()]  # every line is JSON
    [shouting] = [r for r in records if r["message"].startswith("shouting hello")]
    assert shouting["level"] == "INFO" and shouting["temporal_activity"]["activity_type"] == "shout"
    assert shouting["child_pid"] != worker.proc.pid
    assert {"time", "logger", "process"} <= shouting.keys()
    assert any(r["message"].startswith("Beginning worker shutdown") for r in records)


async def test_second_signal_cancels_running_activities_at_once(
    dev_server: DevServer,
    client: temporalio.client.Client,
    task_queue: str,
    launch: Any,
    tmp_path: Path,
) -> None:
    # A minute of graceful shutdown and a minute-long activity: only the second signal
    # can make the launcher exit within the deadline below.
    worker = launch(*_run_args(dev_server, task_queue, "--graceful-shutdown-timeout", "60"))
    await worker.line("pool worker started")
    marker = tmp_path / "linger-started"
    handle = await client.start_workflow(
        LingerWorkflow.run,
        args=[str(marker), 60.0],
        id=f"wf-{uuid.uuid4()}",
        task_queue=task_queue,
    )
    await async_assert_eventually(marker.exists, timeout=_READY_TIMEOUT)

    worker.signal(signal.SIGTERM)
    await worker.line("shutting down gracefully; 1 running activity", stderr=True)
    assert worker.proc.poll() is None  # still waiting for the activity
    worker.signal(signal.SIGINT)
    assert await worker.wait(timeout=10.0) == EXIT_OK, worker.stderr
    assert "cancelling 1 running activity now" in worker.stderr
    assert "Traceback" not in worker.stderr

    # The attempt was reported as the retryable WorkerShutdown failure, not left to time
    # out (the workflow itself waits for a worker to come back).
    history = await handle.fetch_history()
    failed = [
        e.activity_task_failed_event_attributes.failure
        for e in history.events
        if e.HasField("activity_task_failed_event_attributes")
    ]
    assert [f.application_failure_info.type for f in failed] == ["WorkerShutdown"]
    assert not failed[0].application_failure_info.non_retryable


# -- bad configuration: one line, a documented code, no traceback -----------------------

_BAD_CONFIG = {
    "unknown module": (["run", "no_such_module_xyz", "-q", "q"], EXIT_CONFIG, "unknown module"),
    "nothing to run": (["run", "json", "-q", "q"], EXIT_CONFIG, "no activities or workflows"),
    "processes 0": (
        ["run", APP, "-q", "q", "--processes", "0"],
        EXIT_CONFIG,
        "--processes must be at least 1",
    ),
    "hard below soft memory": (
        ["run", APP, "-q", "q", "--max-memory-per-child", "2G", "--hard-memory-per-child", "1G"],
        EXIT_CONFIG,
        "--hard-memory-per-child",
    ),
    "no crash-loop deaths allowed": (
        ["run", APP, "-q", "q", "--crash-loop-max-deaths", "0"],
        EXIT_CONFIG,
        "--crash-loop-max-deaths must be at least 1",
    ),
    "unknown profile": (
        ["run", APP, "-q", "q", "--profile", "no-such-profile"],
        EXIT_CONFIG,
        "Profile 'no-such-profile' not found",
    ),
    "unreachable server": (
        ["run", APP, "-q", "q", "--address", "127.0.0.1:{free_port}"],
        EXIT_CONNECT,
        "cannot connect to the Temporal server",
    ),
    "unknown namespace": (
        ["run", APP, "-q", "q", "--address", "{dev_server}", "--namespace", "no-such-ns"],
        EXIT_NAMESPACE,
        "namespace 'no-such-ns' does not exist",
    ),
}


@pytest.mark.parametrize("case", list(_BAD_CONFIG))
def test_bad_configuration_is_one_line_and_an_exit_code(
    case: str, dev_server: DevServer, tmp_path: Path
) -> None:
    args, code, expected = _BAD_CONFIG[case]
    args = [a.format(free_port=free_port(), dev_server=dev_server.address) for a in args]
    # subprocess.run kills the process if the timeout passes.
    done = subprocess.run(
        [sys.executable, "-m", "pool", *args],
        cwd=REPO,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=_READY_TIMEOUT,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("python -m pool run: error: ") and expected in lines[0]
    assert "Traceback" not in done.stderr and done.stdout == ""


@pytest.mark.unit
def test_crash_loop_flags_reach_the_pool_config() -> None:
    args = build_parser().parse_args(
        ["run", APP, "-q", "q", "--crash-loop-max-deaths", "3", "--crash-loop-window", "7.5"]
    )
    config = pool_config(args)
    assert (config.crash_loop_max_deaths, config.seconds("crash_loop_window")) == (3, 7.5)


@pytest.mark.unit
def test_the_rpc_compression_flag_reaches_the_pool_config() -> None:
    parser = build_parser()
    assert pool_config(parser.parse_args(["run", APP, "-q", "q"])).rpc_compression == "auto"
    args = parser.parse_args(["run", APP, "-q", "q", "--rpc-compression", "gzip"])
    assert pool_config(args).rpc_compression == "gzip"


@pytest.mark.unit
def test_the_child_reports_flag_takes_a_size_or_off() -> None:
    parser = build_parser()
    default = pool_config(parser.parse_args(["run", APP, "-q", "q"]))
    assert default.child_reports_from == 64 * 1024
    args = parser.parse_args(["run", APP, "-q", "q", "--child-reports-from", "1M"])
    assert pool_config(args).child_reports_from == 1 << 20
    args = parser.parse_args(["run", APP, "-q", "q", "--child-reports-from", "off"])
    assert pool_config(args).child_reports_from is None


def test_malformed_flag_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pool", "run", APP, "-q", "q", "--max-memory-per-child", "lots"],
        cwd=REPO,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=_READY_TIMEOUT,
    )
    assert done.returncode == EXIT_USAGE
    assert "'lots' is not a size" in done.stderr and "Traceback" not in done.stderr


# -- demo and server --------------------------------------------------------------------


async def test_demo_runs_the_sample_and_prints_the_summary(
    dev_server: DevServer, launch: Any
) -> None:
    demo = launch(
        "demo",
        "--address",
        dev_server.address,
        "--processes",
        "2",
        "--workflows",
        "2",
        "--activities-per-workflow",
        "3",
        "--work-ms",
        "50",
    )
    rc = await demo.wait(timeout=60.0)
    out = demo.stdout
    report = f"rc={rc}\nstdout:\n{out}\nstderr:\n{demo.stderr}"
    assert rc == EXIT_OK, report
    assert "Traceback" not in demo.stderr, report
    assert "progress: [" in out, report  # stdout is a pipe: periodic lines, not a redrawn one
    assert "6 (2 workflows x 3, 50 ms of CPU each), all completed" in out, report
    assert re.search(r"CPU efficiency\s+\d+\.\d %", out), report
    # Who ran what: each workflow's activities by child pid, and the per-child table.
    assert len(re.findall(r"pool-demo-\w+-\d\s+pid \d+ x\d", out)) == 2, report
    header = r"child\s+pid\s+state\s+tasks\s+activity CPU\s+process CPU\s+peak RSS"
    assert re.search(header, out), report
    tasks = [int(m) for m in re.findall(r"^\s+\d+\s+\d+\s+\w+\s+(\d+)\s", out, re.MULTILINE)]
    assert sum(tasks) == 6, report


async def test_server_answers_and_stops_on_sigterm(launch: Any) -> None:
    port = free_port()
    server = launch("server", "--port", str(port))
    line = await server.line(f"listening on 127.0.0.1:{port}")
    match = re.search(r"server pid (\d+)", line)
    assert match, line
    temporal_pid = int(match[1])

    def system_info() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            WorkflowServiceStub(channel).GetSystemInfo(GetSystemInfoRequest(), timeout=5.0)

    await asyncio.to_thread(system_info)
    server.signal(signal.SIGTERM)
    assert await server.wait() == EXIT_OK, server.stderr
    assert "Traceback" not in server.stderr
    assert_eventually(lambda: not psutil.pid_exists(temporal_pid), timeout=5.0)


def test_server_refuses_a_busy_port(dev_server: DevServer, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pool", "server", "--port", str(dev_server.port)],
        cwd=REPO,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=_READY_TIMEOUT,
    )
    assert done.returncode == EXIT_CONFIG
    assert done.stderr.count("\n") == 1 and "already in use" in done.stderr


# -- pure parts, in-process -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1048576", 1048576),
        ("512M", 512 * 1024**2),
        ("2G", 2 * 1024**3),
        ("1.5GiB", 3 * 1024**3 // 2),
        ("64kb", 65536),
    ],
)
@pytest.mark.unit
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_discover_finds_activities_and_workflows() -> None:
    found = discover([APP])
    assert found.activity_names == ["shout", "linger"]
    assert found.workflow_names == ["ShoutWorkflow", "LingerWorkflow"]
    one = discover([f"{APP}:ShoutWorkflow", f"{APP}:shout", APP])  # duplicates count once
    assert one.workflow_names == ["ShoutWorkflow", "LingerWorkflow"]
    assert one.activity_names == ["shout", "linger"]
    with pytest.raises(LaunchError) as err:
        discover([f"{APP}:nope"])
    assert err.value.code == EXIT_CONFIG and "no attribute 'nope'" in err.value.message


def _parse_run(*flags: str) -> Any:
    return build_parser().parse_args(["run", APP, "-q", "q", *flags])


def test_connection_precedence_flags_then_env_then_profile(tmp_path: Path) -> None:
    config = tmp_path / "temporal.toml"
    config.write_text(
        '[profile.default]\naddress = "profile-host:7233"\nnamespace = "profile-ns"\n'
        'api_key = "profile-key"\n[profile.other]\naddress = "other-host:7233"\n'
    )
    env = {"TEMPORAL_CONFIG_FILE": str(config)}
    conn = resolve_connection(_parse_run(), env)
    assert (conn.address, conn.namespace, conn.api_key) == (
        "profile-host:7233",
        "profile-ns",
        "profile-key",
    )
    assert conn.tls is True  # an API key turns TLS on, as temporalio.envconfig does

    env["TEMPORAL_ADDRESS"] = "env-host:7233"
    conn = resolve_connection(_parse_run("--namespace", "flag-ns", "--no-tls"), env)
    assert (conn.address, conn.namespace, conn.tls) == ("env-host:7233", "flag-ns", False)

    conn = resolve_connection(_parse_run("--address", "flag-host:1"), env)
    assert conn.address == "flag-host:1"

    conn = resolve_connection(_parse_run("--profile", "other", "--config-file", str(config)), {})
    assert (conn.address, conn.namespace, conn.api_key, conn.tls) == (
        "other-host:7233",
        "default",
        None,
        False,
    )


def test_mtls_flags_read_the_files(tmp_path: Path) -> None:
    cert, key, ca = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem"
    cert.write_bytes(b"CERT")
    key.write_bytes(b"KEY")
    ca.write_bytes(b"CA")
    flags = ["--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(ca)]
    conn = resolve_connection(_parse_run(*flags, "--tls-server-name", "sni"), {})
    assert isinstance(conn.tls, temporalio.service.TLSConfig)
    assert (conn.tls.client_cert, conn.tls.client_private_key) == (b"CERT", b"KEY")
    assert (conn.tls.server_root_ca_cert, conn.tls.domain) == (b"CA", "sni")
    assert conn.tls_label == "mTLS"
    with pytest.raises(LaunchError) as err:
        resolve_connection(_parse_run("--tls-cert", str(cert)), {})
    assert err.value.code == EXIT_CONFIG and "--tls-key" in err.value.message


# -- several launchers, metrics ---------------------------------------------------------


async def test_two_launchers_on_one_queue_share_the_work(
    dev_server: DevServer, client: temporalio.client.Client, task_queue: str, launch: Any
) -> None:
    first = launch(*_run_args(dev_server, task_queue, "--processes", "1"))
    second = launch(*_run_args(dev_server, task_queue, "--processes", "1"))
    await first.line("pool worker started")
    await second.line("pool worker started")
    results = await asyncio.gather(
        *(
            client.execute_workflow(
                ShoutWorkflow.run, f"w{i}", id=f"wf-{uuid.uuid4()}", task_queue=task_queue
            )
            for i in range(24)
        )
    )
    assert sorted(text for text, _ in results) == sorted(f"W{i}" for i in range(24))
    by_launcher = {
        launched.proc.pid: {p.pid for p in psutil.Process(launched.proc.pid).children(True)}
        for launched in (first, second)
    }
    served = {
        launcher for _, pid in results for launcher, kids in by_launcher.items() if pid in kids
    }
    assert served == set(by_launcher), "one launcher did all the work"


async def test_stopping_one_of_two_launchers_loses_nothing(
    dev_server: DevServer,
    client: temporalio.client.Client,
    task_queue: str,
    launch: Any,
    tmp_path: Path,
) -> None:
    """One launcher stops (SIGTERM, graceful) while both serve a load whose activities
    may not be retried: its running activity finishes, the other launcher takes the rest."""
    args = ("--processes", "1", "--graceful-shutdown-timeout", "30")
    first = launch(*_run_args(dev_server, task_queue, *args))
    second = launch(*_run_args(dev_server, task_queue, *args))
    await first.line("pool worker started")
    await second.line("pool worker started")
    markers = [tmp_path / f"linger-{i}" for i in range(8)]
    handles = [
        await client.start_workflow(
            LingerWorkflow.run, args=[str(m), 0.4], id=f"wf-{uuid.uuid4()}", task_queue=task_queue
        )
        for m in markers
    ]
    first_children = {p.pid for p in psutil.Process(first.proc.pid).children(recursive=True)}

    def first_is_running_one() -> bool:
        return any(m.exists() and int(m.read_text() or 0) in first_children for m in markers)

    await async_assert_eventually(first_is_running_one, timeout=_READY_TIMEOUT)
    first.signal(signal.SIGTERM)
    results = await asyncio.gather(*(h.result() for h in handles))
    assert results == ["finished"] * len(markers)  # none failed: maximum_attempts=1
    assert await first.wait() == EXIT_OK, first.stderr
    ran_on = {int(m.read_text()) for m in markers}
    assert ran_on & first_children and ran_on - first_children  # both did some


async def test_metrics_endpoints_of_a_launched_worker(
    dev_server: DevServer, client: temporalio.client.Client, task_queue: str, launch: Any
) -> None:
    import urllib.request

    pool_port, workflow_port = free_port(), free_port()
    worker = launch(
        *_run_args(
            dev_server,
            task_queue,
            "--processes",
            "1",
            "--metrics-port",
            str(pool_port),
            "--workflow-metrics-port",
            str(workflow_port),
        )
    )
    await worker.line("pool worker started")
    for i in range(2):
        await client.execute_workflow(
            ShoutWorkflow.run, f"m{i}", id=f"wf-{uuid.uuid4()}", task_queue=task_queue
        )

    def scrape(port: int) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.read().decode()

    pool_text = await asyncio.to_thread(scrape, pool_port)
    assert 'pool_activity_tasks_total{activity_type="shout",outcome="completed"} 2.0' in pool_text
    assert "pool_children_alive 1.0" in pool_text
    workflow_text = await asyncio.to_thread(scrape, workflow_port)
    assert "temporal_workflow_completed" in workflow_text
    worker.signal(signal.SIGTERM)
    assert await worker.wait() == EXIT_OK, worker.stderr


def test_bad_type_limit_and_metrics_flags_are_rejected(tmp_path: Path, launch: Any) -> None:
    for extra, fragment in (
        (["--activity-type-limit", "shout"], "write TYPE=N"),
        (["--metrics-port", "0"], "--metrics-port must be a port number"),
    ):
        launched = launch("run", APP, "-q", "q", *extra)
        assert launched.proc.wait(_EXIT_TIMEOUT) == EXIT_CONFIG
        for t in launched._pumps:
            t.join(5.0)
        assert fragment in launched.stderr and "Traceback" not in launched.stderr
