"""Layering is visible and checked: the core never imports presentation, I/O or protocol libraries."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "reconciler"

FORBIDDEN = {
    "planner.py": {"yaml", "httpx", "authlib", "click", "rich", "os", "time", "reconciler.cli", "reconciler.render"},
    "pending.py": {"yaml", "httpx", "authlib", "click", "rich", "os", "time", "reconciler.cli", "reconciler.render"},
    "declared.py": {"yaml", "httpx", "authlib", "click", "rich", "os", "reconciler.config", "reconciler.state",
                    "reconciler.planner", "reconciler.auth", "reconciler.render", "reconciler.cli", "reconciler.apply"},
    "plan.py": {"yaml", "httpx", "authlib", "click", "rich", "os"},
    "render": {"reconciler.cli", "reconciler.state", "reconciler.config", "click", "httpx", "authlib", "os"},
    "config": {"httpx", "authlib", "click", "rich", "reconciler.state", "reconciler.planner", "reconciler.render"},
    "state": {"httpx", "authlib", "click", "rich", "reconciler.planner", "reconciler.render", "reconciler.cli"},
    "catalog": {"httpx", "authlib", "click", "reconciler.config", "reconciler.state", "reconciler.planner"},
    "workflow.py": {"click", "rich"},
    # Tokens are kept below the configuration, the plan and the state document: apply, refresh, the state
    # commands (and the adapters to come) use them, never the other way round.
    "tokens": {
        "httpx", "authlib", "click", "rich", "reconciler.config", "reconciler.planner", "reconciler.render",
        "reconciler.cli", "reconciler.state", "reconciler.workflow", "reconciler.apply", "reconciler.refresh",
    },
    "auth": {"click", "rich", "reconciler.state", "reconciler.planner", "reconciler.render", "reconciler.cli",
             "reconciler.workflow", "reconciler.apply", "reconciler.refresh"},
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize("target", sorted(FORBIDDEN))
def test_module_does_not_import_forbidden_layers(target: str) -> None:
    """Each layer imports only what it may (see the module docstrings)."""
    files = [PACKAGE / target] if target.endswith(".py") else sorted((PACKAGE / target).rglob("*.py"))
    assert files
    for file in files:
        bad = {n for n in _imports(file) for f in FORBIDDEN[target] if n == f or n.startswith(f + ".")}
        assert not bad, f"{file.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_every_module_opens_with_a_docstring() -> None:
    """Each module says what it owns."""
    for file in PACKAGE.rglob("*.py"):
        assert ast.get_docstring(ast.parse(file.read_text())), file


def test_the_planner_needs_no_io_libraries_at_all() -> None:
    """Importing the planner (and everything it imports) loads no HTTP, OAuth or CLI library."""
    import subprocess
    import sys

    code = (
        "import sys, reconciler.planner\n"
        "bad = [m for m in ('httpx', 'authlib', 'click', 'rich') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def _module_name(file: Path) -> str:
    parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycle_between_modules() -> None:
    """The modules of the package import each other without a cycle (imports inside functions included)."""
    files = {_module_name(f): f for f in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, file in files.items():
        deps = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                deps |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {alias.name for alias in node.names}
        graph[name] = {d for d in deps if d in files and d != name}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, "import cycle: " + " -> ".join((*path[path.index(name):], name))
        if name not in done:
            for dep in sorted(graph[name]):
                visit(dep, (*path, name))
            done.add(name)

    for name in sorted(graph):
        visit(name, ())
