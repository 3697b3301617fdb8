"""Worker plugins, taken as the stock worker takes them.

client's worker plugins + Worker(plugins=...) ─▶ worker_plugins  (a warning for a type
    present in both)
options ─▶ configure: each plugin's configure_worker, in order ─▶ the options we plan
Worker.run ─▶ run_through: plugin 1's run_worker(plugin 2's(... the worker's own run))
the client ─▶ without_plugins: for temporalio's inner worker, which must not apply the
    client's plugins a second time
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import temporalio.client
import temporalio.worker

__all__ = ["configure", "run_through", "without_plugins", "worker_plugins"]

Run = Callable[[Any], Awaitable[None]]


def worker_plugins(
    client: temporalio.client.Client, plugins: Sequence[temporalio.worker.Plugin]
) -> list[temporalio.worker.Plugin]:
    """The client's worker plugins, then the worker's own, as the stock worker takes them."""
    from_client = [p for p in client.config()["plugins"] if isinstance(p, temporalio.worker.Plugin)]
    for plugin in from_client:
        if type(plugin) in [type(p) for p in plugins]:
            warnings.warn(
                f"The same plugin type {type(plugin)} is present from both client and worker. "
                "It may run twice and may not be the intended behavior.",
                stacklevel=3,  # the caller of Worker(...)
            )
    return [*from_client, *plugins]


def configure(
    plugins: Sequence[temporalio.worker.Plugin], config: dict[str, Any]
) -> dict[str, Any]:
    """The options after every plugin's ``configure_worker``, the first plugin first."""
    for plugin in plugins:
        config = dict(plugin.configure_worker(config))  # type: ignore[arg-type]
    return config


def run_through(plugins: Sequence[temporalio.worker.Plugin], innermost: Run) -> Run:
    """``innermost`` wrapped by each plugin's ``run_worker``, the first plugin outermost."""

    def wrap(plugin: temporalio.worker.Plugin, inner: Run) -> Run:
        return lambda worker: plugin.run_worker(worker, inner)

    run = innermost
    for plugin in reversed(plugins):
        run = wrap(plugin, run)
    return run


def without_plugins(client: temporalio.client.Client) -> temporalio.client.Client:
    """The client for temporalio's inner worker: this worker already applied the
    client's plugins (configure and run), so the inner one must not apply them again."""
    if not client.config()["plugins"]:
        return client
    config = client.config(active_config=True)
    config["plugins"] = []
    return temporalio.client.Client(**config)
