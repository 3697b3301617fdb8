"""``/healthz`` and ``/readyz`` beside ``/metrics``, with Kubernetes semantics, against
the real dev server."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest
import temporalio.client

import pool
from pool.observe.health import HealthServer
from pool.observe.prometheus import PoolMetrics
from pool.testing import DevServer, free_port
from tests.helpers import async_assert_eventually
from tests.pool import _activities as A


def _get(port: int, path: str) -> tuple[int, Any]:
    """(status, body): JSON decoded, /metrics as text."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            status, raw = resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read().decode()
    return status, raw if path == "/metrics" else json.loads(raw)


async def _aget(port: int, path: str) -> tuple[int, Any]:
    return await asyncio.to_thread(_get, port, path)


def _worker(client: temporalio.client.Client, task_queue: str) -> pool.Worker:
    return pool.Worker(client, task_queue=task_queue, activities=[A.pid_and_square], processes=1)


async def test_probes_follow_the_worker_lifecycle(client, task_queue) -> None:
    worker = _worker(client, task_queue)
    server = HealthServer(
        worker, PoolMetrics(worker).registry, address="127.0.0.1", port=free_port()
    )
    try:
        status, body = await _aget(server.port, "/readyz")
        assert (status, body["checks"]["worker"]) == (503, "starting")
        assert (await _aget(server.port, "/healthz"))[0] == 200  # alive, not yet ready
        async with worker:
            status, body = await _aget(server.port, "/readyz")
            assert status == 200, body
            assert body == {
                "ready": True,
                "checks": {"worker": "ok", "polling": "ok", "children": "ok"},
            }
            status, text = await _aget(server.port, "/metrics")
            assert status == 200 and "pool_children_alive 1.0" in text
            status, body = await _aget(server.port, "/nope")
            assert status == 404 and "/readyz" in body["error"]
        status, body = await _aget(server.port, "/readyz")
        assert (status, body["checks"]["worker"]) == (503, "shut down")
    finally:
        server.shutdown()


async def test_healthz_fails_while_the_loop_is_blocked(client, task_queue) -> None:
    worker = _worker(client, task_queue)
    server = HealthServer(
        worker,
        PoolMetrics(worker).registry,
        address="127.0.0.1",
        port=free_port(),
        loop_timeout=0.2,
    )
    answered = threading.Event()
    result: list[tuple[int, Any]] = []

    def probe() -> None:
        result.append(_get(server.port, "/healthz"))
        answered.set()

    try:
        threading.Thread(target=probe, daemon=True).start()
        # Block the loop (as a CPU-bound callback would) until the probe has answered.
        assert answered.wait(30)
        [(status, body)] = result
        assert status == 503 and body["status"] == "unresponsive", body
        assert (await _aget(server.port, "/healthz"))[0] == 200  # the loop is free again
    finally:
        server.shutdown()


@pytest.mark.integration
async def test_readyz_fails_while_polls_fail(task_queue) -> None:
    dev = DevServer()
    dev.start()
    try:
        client = await temporalio.client.Client.connect(dev.address)
        port = free_port()
        async with _worker(client, task_queue) as worker:
            _, server = pool.serve_metrics(worker, port)
            try:
                assert (await _aget(port, "/readyz"))[0] == 200
                await asyncio.to_thread(dev.stop)

                async def not_ready() -> dict[str, str]:
                    status, body = await _aget(port, "/readyz")
                    assert status == 503, body
                    return body["checks"]

                checks = await async_assert_eventually(not_ready, timeout=30)
                assert checks["polling"].startswith("activity polls fail"), checks
                assert (await _aget(port, "/healthz"))[0] == 200  # alive: no restart needed
            finally:
                server.shutdown()
    finally:
        dev.stop()
