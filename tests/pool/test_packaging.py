"""What tools expect of an installed package: a version, type information, license
metadata, and a console script that behaves as ``python -m pool``."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pool.testing import DevServer

DIST = "temporal-process-pool"
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
    env["TEMPORAL_CONFIG_FILE"] = str(tmp_path / "no-such-temporal.toml")
    return env


def test_version_flag_prints_ours_and_temporalios() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pool", "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert importlib.metadata.version(DIST) in done.stdout
    assert f"temporalio {importlib.metadata.version('temporalio')}" in done.stdout


@pytest.mark.unit
@pytest.mark.parametrize("package", ["pool", "runner", "shared_state"])
def test_packages_are_typed(package: str) -> None:
    assert (importlib.resources.files(package) / "py.typed").is_file()


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_wheel_is_typed_for_mypy(tmp_path: Path) -> None:
    """Built and installed as a user gets it, ``import pool`` type-checks (no
    ``import-untyped``), and the license file ships."""
    pip = (sys.executable, "-m", "pip")
    built = _run(*pip, "wheel", "--no-deps", "-q", "-w", "dist", str(REPO), cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {"pool/py.typed", "runner/py.typed", "shared_state/py.typed"} <= names
    # Every subpackage ships (the rooms of pool/ are packages of their own).
    assert {"pool/activity/__init__.py", "pool/supervisor/__init__.py"} <= names
    assert any(name.endswith("licenses/LICENSE") for name in names), sorted(names)

    venv = tmp_path / "venv"
    made = _run(sys.executable, "-m", "venv", "--without-pip", str(venv), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    python = str(venv / "bin" / "python")
    installed = _run(
        *pip, "--python", python, "install", "--no-deps", "-q", str(wheel), cwd=tmp_path
    )
    assert installed.returncode == 0, installed.stderr
    (tmp_path / "user_code.py").write_text(
        "import pool\n\nworker_type: type[pool.Worker] = pool.Worker\n"
    )
    mypy = (sys.executable, "-m", "mypy", "--no-incremental", "--python-executable", python)
    checked = _run(*mypy, "user_code.py", cwd=tmp_path)
    assert "import-untyped" not in checked.stdout, checked.stdout
    assert "import-not-found" not in checked.stdout, checked.stdout


@pytest.mark.unit
def test_license_is_an_spdx_expression() -> None:
    metadata = importlib.metadata.metadata(DIST)
    assert metadata["License-Expression"] == "MIT"
    classifiers = metadata.get_all("Classifier") or []
    assert "Operating System :: POSIX :: Linux" in classifiers


def test_console_script_imports_from_the_current_directory(
    tmp_path: Path, dev_server: DevServer
) -> None:
    """``temporal-pool run app`` finds ``./app.py`` as ``python -m pool run app`` does: it
    gets as far as the server (here: a namespace that does not exist)."""
    (tmp_path / "cwd_app.py").write_text(
        "from temporalio import activity\n\n\n@activity.defn\ndef hello() -> str:\n"
        "    return 'hi'\n"
    )
    done = subprocess.run(
        [
            *(str(BIN / "temporal-pool"), "run", "cwd_app", "-q", "q"),
            *("--address", dev_server.address, "--namespace", "no-such-ns"),
        ],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "unknown module" not in done.stderr, done.stderr
    assert "namespace 'no-such-ns' does not exist" in done.stderr, done.stderr


@pytest.mark.parametrize("shadow", ["runner.py", "shared_state/__init__.py"])
def test_a_users_module_that_shadows_ours_is_named(tmp_path: Path, shadow: str) -> None:
    path = tmp_path / shadow
    path.parent.mkdir(exist_ok=True)
    path.write_text("VALUE = 1\n")
    done = subprocess.run(
        [sys.executable, "-c", "import pool"], cwd=tmp_path, capture_output=True, text=True
    )
    culprit = tmp_path / shadow.split("/")[0]
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ImportError: {culprit} shadows the "), done.stderr
    assert "Rename your" in last
