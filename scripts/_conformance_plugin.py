"""pytest plugin of ``scripts/sdk_conformance.py``: swaps ``pool.Worker`` in, records outcomes.

    pytest -p _conformance_plugin --conformance-record OUT.jsonl [--conformance-swap]
      pytest_configure          --conformance-swap: import pool (it keeps the stock class)
      module loaded ──> swap    every global of a module in the test package (``tests``,
                                ``tests.*``) that is temporalio's Worker becomes pool.Worker:
                                ``from temporalio.worker import Worker`` in the test modules,
                                ``tests.helpers.new_worker``, ``ExternalPythonWorker``; run after
                                collection and again before each test (late imports)
      pytest_collection_finish  {"collected": [node ids]}, {"swapped": ["module.name", ...]}
      pytest_runtest_logreport  {"nodeid", "when", "outcome", "message", "duration"} per phase
      (OUT.jsonl is flushed after every line, so a run killed by its overall timeout still
      tells which tests ran)

``temporalio.worker.Worker`` itself stays the stock class: ``pool.Worker`` builds its inner
workflow worker through that attribute, and sdk-python's tests reach ``Worker`` only through
names they imported.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Any

import pytest
import temporalio.worker

TEST_PACKAGE = "tests"
STOCK_WORKER = temporalio.worker.Worker
# Longest failure message kept per phase; the full text is in pytest's own output.
_MESSAGE_CHARS = 500


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "sdk conformance (scripts/sdk_conformance.py)")
    group.addoption(
        "--conformance-record",
        metavar="PATH",
        help="write collected tests, swapped names and every test phase's outcome as JSON lines",
    )
    group.addoption(
        "--conformance-swap",
        action="store_true",
        help="put pool.Worker wherever the test package imported temporalio's Worker",
    )


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("--conformance-record")
    swap = bool(config.getoption("--conformance-swap"))
    if path or swap:
        config.pluginmanager.register(_Conformance(path, swap), "conformance-recorder")


def swap_worker(modules: dict[str, Any], replacement: type) -> list[str]:
    """Rebind, in each module of the test package, every global that is the stock Worker.

    Returns the rebound names as ``module.name`` (only those changed by this call)."""
    swapped = []
    for mod_name, module in list(modules.items()):
        if module is None or not _in_test_package(mod_name):
            continue
        for name, value in list(vars(module).items()):
            if value is STOCK_WORKER:
                setattr(module, name, replacement)
                swapped.append(f"{mod_name}.{name}")
    return swapped


def _in_test_package(mod_name: str) -> bool:
    return mod_name == TEST_PACKAGE or mod_name.startswith(TEST_PACKAGE + ".")


class _Conformance:
    def __init__(self, record_path: str | None, swap: bool) -> None:
        # Open for the whole session; closed in pytest_unconfigure.
        self._out: IO[str] | None = (
            Path(record_path).open("w") if record_path else None  # noqa: SIM115
        )
        self._replacement: type | None = None
        if swap:
            import pool

            self._replacement = pool.Worker

    def _write(self, entry: dict[str, Any]) -> None:
        if self._out is not None:
            self._out.write(json.dumps(entry) + "\n")
            self._out.flush()

    def _swap(self) -> list[str]:
        if self._replacement is None:
            return []
        return swap_worker(sys.modules, self._replacement)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self._write({"collected": [item.nodeid for item in session.items]})
        self._write({"swapped": self._swap()})

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        late = self._swap()
        if late:
            self._write({"swapped": late})

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._write(
            {
                "nodeid": report.nodeid,
                "when": report.when,
                "outcome": report.outcome,
                "xfail": hasattr(report, "wasxfail"),
                "message": _message(report),
                "duration": round(report.duration, 3),
            }
        )

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


def _message(report: pytest.TestReport) -> str:
    """One line naming what failed: the crash location and message, or the skip reason."""
    if report.passed:
        return ""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # a skip: (path, lineno, reason)
        return str(longrepr[2])[:_MESSAGE_CHARS]
    crash = getattr(longrepr, "reprcrash", None)
    if crash is None:
        text = str(longrepr)
    else:
        where = f"{Path(crash.path).name}:{crash.lineno}"
        in_test = _last_test_line(longrepr)
        if in_test and in_test != where:
            where = f"{in_test} (raised at {where})"
        text = f"{where}: {crash.message}"
    return " ".join(text.split())[:_MESSAGE_CHARS]


def _last_test_line(longrepr: Any) -> str | None:
    """``file.py:N`` of the innermost traceback entry inside the test package's files."""
    entries = getattr(getattr(longrepr, "reprtraceback", None), "reprentries", [])
    found = None
    for entry in entries:
        loc = getattr(entry, "reprfileloc", None)
        if loc is not None and f"/{TEST_PACKAGE}/" in f"/{loc.path}":
            found = f"{Path(loc.path).name}:{loc.lineno}"
    return found
