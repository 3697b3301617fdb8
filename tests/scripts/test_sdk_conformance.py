"""scripts/sdk_conformance.py without sdk-python or a server: the plugin swaps pool.Worker
into a small fake ``tests`` package run by a pytest subprocess, and the report folds what
the plugin recorded into outcomes and causes."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sdk_conformance", SCRIPTS / "sdk_conformance.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


S = _load_script()

_FAKE_PACKAGE = {
    "tests/__init__.py": "",
    "tests/helpers.py": """
        from temporalio.worker import Worker

        def new_worker():
            return Worker
    """,
    "tests/late.py": """
        from temporalio.worker import Worker
    """,
    "tests/test_fake.py": """
        import temporalio.worker
        from temporalio.worker import Worker

        import pool
        from tests import helpers

        def test_names_are_swapped():
            assert Worker is pool.Worker
            assert helpers.new_worker() is pool.Worker

        def test_the_package_attribute_stays_stock():
            assert temporalio.worker.Worker is not pool.Worker

        def test_imports_a_module_late():
            import tests.late

        def test_a_late_import_is_swapped_before_the_next_test():
            import tests.late
            assert tests.late.Worker is pool.Worker

        def test_fails():
            assert 1 == 2
    """,
}


def _run_fake(tmp_path: Path, *plugin_args: str) -> Any:
    for rel, text in _FAKE_PACKAGE.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(textwrap.dedent(text))
    record = tmp_path / "record.jsonl"
    proc = subprocess.run(
        [
            sys.executable, "-m", "pytest", "tests/test_fake.py", "-q", "-p", "no:cacheprovider",
            "-p", "_conformance_plugin", "--conformance-record", str(record), *plugin_args,
        ],
        cwd=tmp_path,
        env={"PYTHONPATH": f"{SCRIPTS}:{tmp_path}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr  # test_fails fails
    result = S.RunResult("pool", 0.0)
    S.read_record(record, result)
    return result


def test_the_plugin_swaps_pool_worker_into_the_test_package(tmp_path: Path) -> None:
    result = _run_fake(tmp_path, "--conformance-swap")
    fake = "tests/test_fake.py::"
    assert {n.removeprefix(fake): result.final(n) for n in result.collected} == {
        "test_names_are_swapped": "passed",
        "test_the_package_attribute_stays_stock": "passed",
        "test_imports_a_module_late": "passed",
        "test_a_late_import_is_swapped_before_the_next_test": "passed",
        "test_fails": "failed",
    }
    assert sorted(result.swapped) == [
        "tests.helpers.Worker",
        "tests.late.Worker",
        "tests.test_fake.Worker",
    ]
    assert "test_fake.py:" in result.message[fake + "test_fails"]
    assert "assert 1 == 2" in result.message[fake + "test_fails"]


def test_without_swap_the_plugin_only_records(tmp_path: Path) -> None:
    result = _run_fake(tmp_path)
    assert result.swapped == []
    assert result.final("tests/test_fake.py::test_names_are_swapped") == "failed"
    assert result.final("tests/test_fake.py::test_the_package_attribute_stays_stock") == "passed"


_HANGING_PACKAGE = {
    "tests/__init__.py": "",
    # sdk-python's conftest defines -E; the script always passes it.
    "tests/conftest.py": """
        def pytest_addoption(parser):
            parser.addoption("-E", "--workflow-environment", default="local")
    """,
    "tests/test_hang.py": """
        import signal
        import threading

        def test_before():
            pass

        def test_hangs_where_pytest_timeout_cannot_reach():
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            threading.Event().wait()

        def test_after():
            pass
    """,
}


def test_a_hung_test_is_killed_and_the_rest_run_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for rel, text in _HANGING_PACKAGE.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(textwrap.dedent(text))
    monkeypatch.setattr(S, "LOG_DIR", tmp_path / "logs")
    # The hang is caught after timeout + grace without output: long enough that a loaded
    # machine's gap between two quick tests is not taken for one.
    monkeypatch.setattr(S, "STALL_GRACE", 5.0)
    args = S.parse_args(["--sdk-path", str(tmp_path), "--timeout", "1", "--overall-timeout", "90"])
    result = S.run_mode("stock", tmp_path, ["tests/test_hang.py"], "127.0.0.1:1", args)
    hang = "tests/test_hang.py::test_hangs_where_pytest_timeout_cannot_reach"
    assert {n: result.final(n) for n in result.collected} == {
        "tests/test_hang.py::test_before": "passed",
        hang: "hung",
        "tests/test_hang.py::test_after": "passed",
    }
    assert "no progress for 6 s" in result.message[hang]
    assert not result.timed_out


def _record(tmp_path: Path, *entries: dict[str, object]) -> Path:
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return path


def _phase(nodeid: str, when: str, outcome: str, message: str = "") -> dict[str, object]:
    return {
        "nodeid": nodeid, "when": when, "outcome": outcome,
        "xfail": False, "message": message, "duration": 0.1,
    }  # fmt: skip


def test_phases_fold_into_one_outcome_per_test(tmp_path: Path) -> None:
    ids = [f"tests/t.py::{n}" for n in ("ok", "bad", "setup_err", "teardown_err", "skip", "hung")]
    ok, bad, setup_err, teardown_err, skip, hung = ids
    path = _record(
        tmp_path,
        {"collected": ids},
        {"swapped": ["tests.t.Worker"]},
        _phase(ok, "setup", "passed"), _phase(ok, "call", "passed"),
        _phase(ok, "teardown", "passed"),
        _phase(bad, "setup", "passed"), _phase(bad, "call", "failed", "t.py:3: assert 0"),
        _phase(bad, "teardown", "passed"),
        _phase(setup_err, "setup", "failed", "conftest.py:9: boom"),
        _phase(teardown_err, "call", "passed"),
        _phase(teardown_err, "teardown", "failed", "t.py:5: leak"),
        _phase(skip, "setup", "skipped", "needs time skipping"),
    )  # fmt: skip
    result = S.RunResult("pool", 1.0)
    S.read_record(path, result)
    assert [result.final(n) for n in ids] == [
        "passed", "failed", "error", "error", "skipped", "not run",
    ]  # fmt: skip
    assert result.message[bad] == "[call] t.py:3: assert 0"
    assert result.message[teardown_err] == "[teardown] t.py:5: leak"
    assert result.failing() == [bad, setup_err, teardown_err, hung]
    assert result.done == {ok, bad, teardown_err}  # teardown seen
    assert result.running == skip  # setup seen last, no teardown
    assert dict(result.by_file()["tests/t.py"]) == {
        "passed": 1, "failed": 1, "error": 2, "skipped": 1, "not run": 1,
    }  # fmt: skip


def _result(mode: str, outcomes: dict[str, str], messages: dict[str, str]) -> Any:
    result = S.RunResult(mode, 1.0, collected=list(outcomes), swapped=["tests.x.Worker"])
    result.outcome.update(outcomes)
    result.message.update(messages)
    return result


def test_failures_are_classified_and_summarised(monkeypatch: pytest.MonkeyPatch) -> None:
    known, other_known = "tests/a.py::test_limit", "tests/a.py::test_private"
    new, both = "tests/a.py::test_new", "tests/b.py::test_flaky"
    monkeypatch.setattr(
        S,
        "KNOWN_DIFFERENCES",
        {known: ("removed by design", "DID NOT RAISE"), other_known: ("private", "_x")},
    )
    pool = _result(
        "pool",
        {known: "failed", other_known: "failed", new: "failed", both: "error",
         "tests/b.py::test_ok": "passed"},
        {known: "[call] a.py:1: Failed: DID NOT RAISE", other_known: "[call] a.py:2: Timeout",
         new: "[call] a.py:3: assert 1 == 2"},
    )  # fmt: skip
    stock = _result(
        "stock",
        {known: "passed", other_known: "passed", new: "passed", both: "failed",
         "tests/b.py::test_ok": "passed"},
        {both: "[call] b.py:1: flaky"},
    )  # fmt: skip
    lines = S.failure_lines(pool, stock)
    assert lines == [
        f"{known} [failed]: known difference: removed by design",
        f"{other_known} [failed]: known difference, but failed for another reason "
        "(expected '_x'): [call] a.py:2: Timeout",
        f"{new} [failed]: [call] a.py:3: assert 1 == 2",
        f"{both} [error]: fails in stock too (stock: [call] b.py:1: flaky); pool: error",
    ]
    assert S.summary_lines(pool, stock) == [
        "a.py: 0/3 passed (stock 3/3)",
        "b.py: 1/2 passed (stock 1/2)",
    ]
    assert S.is_expected(known, pool) and not S.is_expected(other_known, pool)


def test_a_directory_that_is_not_an_sdk_checkout_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        S.check_checkout(tmp_path, list(S.DEFAULT_FILES))
    assert exited.value.code == 2
    assert f"error: {tmp_path} is not an sdk-python checkout" in capsys.readouterr().err
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "conftest.py").write_text("")
    with pytest.raises(SystemExit):
        S.check_checkout(tmp_path, list(S.DEFAULT_FILES))
    assert "not found in" in (err := capsys.readouterr().err)
    assert "tests/worker/test_activity.py, tests/worker/test_worker.py" in err


def test_ref_needs_fetch_from(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        S.parse_args(["--sdk-path", "x", "--ref", "1.35.0"])
    assert "--ref needs --fetch-from" in capsys.readouterr().err


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        check=True,
        capture_output=True,
    )


def test_fetch_from_exports_the_tests_of_the_installed_release(tmp_path: Path) -> None:
    import temporalio

    repo, into = tmp_path / "sdk-python", tmp_path / "export"
    (repo / "tests" / "worker").mkdir(parents=True)
    (repo / "temporalio").mkdir()
    (repo / "temporalio" / "__init__.py").write_text("")
    (repo / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    (repo / "tests" / "conftest.py").write_text("")
    (repo / "tests" / "worker" / "test_activity.py").write_text("RELEASE = True\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "release")
    _git(repo, "tag", temporalio.__version__)
    (repo / "tests" / "worker" / "test_activity.py").write_text("RELEASE = False\n")
    _git(repo, "commit", "-qam", "later")
    into.mkdir()

    source = S.export_checkout(repo, None, into)

    assert source.startswith(f"{temporalio.__version__} (")
    assert (into / "tests" / "worker" / "test_activity.py").read_text() == "RELEASE = True\n"
    assert (into / "pyproject.toml").is_file()
    assert not (into / "temporalio").exists()  # the installed temporalio is the one tested
