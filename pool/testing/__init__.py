"""Test helpers: an embedded Temporal dev server (devserver.py), free-port helpers, and
fakes of the dispatcher's neighbours (fakes.py, imported by its own name).

    DevServer.start() ─▶ `temporal server start-dev` as a child process, ready to connect
    free_port / port_in_use ─▶ ports for a server or a metrics endpoint

Used by the test suite, the scripts, and by `python -m pool demo` / `python -m pool server`.
"""

from __future__ import annotations

from .devserver import DevServer, DevServerError, find_temporal_binary, free_port, port_in_use

__all__ = ["DevServer", "DevServerError", "find_temporal_binary", "free_port", "port_in_use"]
