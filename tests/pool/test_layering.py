"""The layers of the code, read with ast, never imported.

{pool,runner,shared_state}/**/*.py ─▶ module name + every import in it (top level and
    inside functions, relative ones resolved)
    ─▶ no module outside pool/cli imports pool.cli (the CLI sits on top of the library)
    ─▶ the library's modules import each other without a cycle
    ─▶ pool imports only runner's public modules (the protocol and the context glue),
       never a private one (the child's own)
    ─▶ runner never imports pool
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pool", "runner", "shared_state")
CLI = "pool.cli"
ENTRY_POINT = "pool.__main__"  # ``python -m pool``: the one library module that runs the CLI


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _imported(path: Path, module: str, known: set[str]) -> Iterator[str]:
    """Every module ``path`` imports: ``import a.b`` is a.b; ``from a import b`` is a.b
    when that is a module of ours, else a."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                name = f"{base}.{alias.name}"
                yield name if name in known else base


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: set(_imported(path, name, known)) for name, path in modules.items()}


def _in_cli(name: str) -> bool:
    return name == CLI or name.startswith(CLI + ".")


def _cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (its modules in order, the first one repeated at the
    end), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for target in sorted(graph.get(node, ())):
            found = visit(target, [*path, node])
            if found:
                return found
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start, [])
        if found:
            return found
    return None


def test_the_walk_sees_the_clis_imports() -> None:
    graph = _import_graph()
    assert {"pool.cli.demo", "pool.cli.run", "pool.cli.server"} <= graph["pool.cli.main"]
    assert "pool.testing" in graph["pool.cli.server"]  # an import inside a function
    assert "pool.cli.main" in graph["pool.cli"]
    assert "pool.cli.main" in graph[ENTRY_POINT]


def test_no_library_module_imports_the_cli() -> None:
    offenders = sorted(
        f"{module} imports {target}"
        for module, targets in _import_graph().items()
        if not _in_cli(module) and module != ENTRY_POINT
        for target in targets
        if _in_cli(target)
    )
    assert not offenders, "the library must not depend on pool.cli: " + "; ".join(offenders)


def test_the_library_modules_import_each_other_without_a_cycle() -> None:
    graph = _import_graph()
    ours = {
        module: {target for target in targets if target in graph}
        for module, targets in graph.items()
    }
    cycle = _cycle(ours)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _private(module: str) -> bool:
    return any(part.startswith("_") and part != "__main__" for part in module.split("."))


def test_pool_imports_only_runners_public_modules() -> None:
    offenders = sorted(
        f"{module} imports {target}"
        for module, targets in _import_graph().items()
        if module.split(".")[0] == "pool"
        for target in targets
        if target.split(".")[0] == "runner" and _private(target)
    )
    assert not offenders, "runner's private modules are the child's own: " + "; ".join(offenders)


def test_runner_never_imports_pool() -> None:
    offenders = sorted(
        f"{module} imports {target}"
        for module, targets in _import_graph().items()
        if module.split(".")[0] == "runner"
        for target in targets
        if target.split(".")[0] == "pool"
    )
    assert not offenders, "; ".join(offenders)


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
