"""The worker's HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz``.

    HTTP thread (one per request) ─▶ run_coroutine_threadsafe ─▶ the worker's loop
        /metrics   Prometheus text, collected on the loop (live state is only ever
                   read there)
        /healthz   200 when the loop answers within ``loop_timeout``: the process is
                   alive and not stuck (a liveness probe restarts it otherwise)
        /readyz    200 when the worker runs, its polls succeed and a child is ready;
                   503 with the failing checks otherwise (a readiness probe)
    any other path ─▶ 404 naming the three

Kubernetes semantics: liveness says "restart me", readiness says "do not count on me
now". Bodies are JSON (``/metrics`` excepted), so a probe's log says what failed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

if TYPE_CHECKING:
    from ..worker import Worker

__all__ = ["HealthServer"]

logger = logging.getLogger("pool.health")

T = TypeVar("T")

_PATHS = ("/metrics", "/healthz", "/readyz")


class LoopUnresponsive(Exception):
    """The worker's event loop did not run a callback in time."""


class HealthServer:
    """Serves the three paths for one worker from a background HTTP thread."""

    def __init__(
        self,
        worker: Worker,
        registry: CollectorRegistry,
        *,
        address: str,
        port: int,
        loop: asyncio.AbstractEventLoop | None = None,
        loop_timeout: float = 2.0,
    ) -> None:
        self._worker = worker
        self._registry = registry
        self._loop = loop or asyncio.get_running_loop()
        self._loop_timeout = loop_timeout
        self._server = ThreadingHTTPServer((address, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="pool-http", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def shutdown(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)

    def on_loop(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the worker's loop and return its result (from the HTTP thread)."""

        async def call() -> T:
            return fn()

        try:
            future = asyncio.run_coroutine_threadsafe(call(), self._loop)
        except RuntimeError as err:  # the loop is closed
            raise LoopUnresponsive(f"the worker's event loop is gone ({err})") from None
        try:
            return future.result(self._loop_timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise LoopUnresponsive(
                f"the worker's event loop did not answer within {self._loop_timeout:g} s "
                "(something blocks it)"
            ) from None

    def respond(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for one GET."""
        try:
            if path == "/metrics":
                text = self.on_loop(lambda: generate_latest(self._registry))
                return 200, CONTENT_TYPE_LATEST, text
            if path == "/healthz":
                self.on_loop(lambda: None)
                return _json(200, {"status": "ok"})
            if path == "/readyz":
                checks = self.on_loop(self._worker.readiness)
                ready = all(value == "ok" for value in checks.values())
                return _json(200 if ready else 503, {"ready": ready, "checks": checks})
        except LoopUnresponsive as err:
            return _json(503, {"status": "unresponsive", "error": str(err)})
        return _json(404, {"error": f"unknown path {path!r}; try one of {', '.join(_PATHS)}"})


def _json(status: int, body: dict[str, Any]) -> tuple[int, str, bytes]:
    return status, "application/json", (json.dumps(body) + "\n").encode()


def _handler_for(server: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, content_type, body = server.respond(urlsplit(self.path).path)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("%s %s", self.address_string(), format % args)

    return Handler
