"""The code stays in rooms a reader can take in: no library module over 500 lines, no
function over 60 (read with ast, never imported).

    {pool,runner,shared_state}/**/*.py ─▶ line count, and every def's span (decorators
    and docstring included) ─▶ those over the limit, named with file:line
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pool", "runner", "shared_state")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def _sources() -> Iterator[tuple[str, str]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield str(path.relative_to(ROOT)), path.read_text()


def oversize(name: str, source: str) -> list[str]:
    """What in ``source`` is over the limits, one line each."""
    found = []
    lines = source.count("\n")
    if lines > MAX_MODULE_LINES:
        found.append(f"{name}: {lines} lines (at most {MAX_MODULE_LINES})")
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            span = (node.end_lineno or node.lineno) - first + 1
            if span > MAX_FUNCTION_LINES:
                found.append(
                    f"{name}:{node.lineno} {node.name}: {span} lines (at most {MAX_FUNCTION_LINES})"
                )
    return found


def test_the_walk_sees_every_package() -> None:
    names = [name for name, _ in _sources()]
    for package in PACKAGES:
        assert f"{package}/__init__.py" in names
    assert "pool/activity/dispatch/dispatcher.py" in names  # nested packages too


def test_no_library_module_or_function_is_over_the_limit() -> None:
    found = [line for name, source in _sources() for line in oversize(name, source)]
    assert not found, "split these into rooms of their own:\n" + "\n".join(found)


def test_the_check_finds_a_long_function_and_a_long_module() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    long_function = f"@decorated\nasync def grows():\n{body}"
    assert oversize("m.py", long_function) == [
        f"m.py:2 grows: {MAX_FUNCTION_LINES + 2} lines (at most {MAX_FUNCTION_LINES})"
    ]
    fits = "def fits():\n" + "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES - 1))
    assert oversize("m.py", fits) == []
    long_module = "x = 1\n" * (MAX_MODULE_LINES + 1)
    assert oversize("m.py", long_module) == [
        f"m.py: {MAX_MODULE_LINES + 1} lines (at most {MAX_MODULE_LINES})"
    ]
