"""Layering is visible and checked: the core never imports presentation, I/O or protocol libraries."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "reconciler"

FORBIDDEN = {
    "planner.py": {"yaml", "httpx", "authlib", "click", "rich", "os", "time", "reconciler.cli", "reconciler.render",
                   "reconciler.memo", "reconciler.config.cache", "reconciler.config.ahead"},
    "pending.py": {"yaml", "httpx", "authlib", "click", "rich", "os", "time", "reconciler.cli", "reconciler.render"},
    "declared.py": {"yaml", "httpx", "authlib", "click", "rich", "os", "reconciler.config", "reconciler.state",
                    "reconciler.planner", "reconciler.auth", "reconciler.render", "reconciler.cli", "reconciler.apply"},
    "plan.py": {"yaml", "httpx", "authlib", "click", "rich", "os"},
    "render": {"reconciler.cli", "reconciler.state", "reconciler.config", "click", "httpx", "authlib", "os"},
    "config": {"httpx", "authlib", "click", "rich", "reconciler.state", "reconciler.planner", "reconciler.render"},
    "state": {"httpx", "authlib", "click", "rich", "reconciler.planner", "reconciler.render", "reconciler.cli",
              "reconciler.memo", "reconciler.config.cache", "reconciler.config.ahead"},
    "catalog": {"httpx", "authlib", "click", "reconciler.config", "reconciler.state", "reconciler.planner"},
    "app": {"click", "rich", "reconciler.cli"},
    # The speed machinery (plan memo, parse cache, parse-ahead worker) wraps the core from the application layer:
    # the loader parses through a `Parser` it is handed, the planner and the backends know none of it.
    "config/loader.py": {"reconciler.memo", "reconciler.config.cache", "reconciler.config.ahead"},
    "config/documents.py": {"reconciler.memo", "reconciler.config.cache", "reconciler.config.ahead"},
    # Tokens are kept below the configuration, the plan and the state document: apply, refresh, the state
    # commands (and the adapters to come) use them, never the other way round.
    "tokens": {
        "httpx", "authlib", "click", "rich", "reconciler.config", "reconciler.planner", "reconciler.render",
        "reconciler.cli", "reconciler.state", "reconciler.app", "reconciler.apply", "reconciler.refresh",
    },
    "auth": {"click", "rich", "reconciler.state", "reconciler.planner", "reconciler.render", "reconciler.cli",
             "reconciler.app", "reconciler.apply", "reconciler.refresh"},
    # Platform adapters speak a platform's API; they decide nothing and read no configuration or state.
    "platforms": {"click", "rich", "yaml", "reconciler.config", "reconciler.state", "reconciler.planner",
                  "reconciler.render", "reconciler.cli", "reconciler.app", "reconciler.apply", "reconciler.sandbox"},
    # The sandbox is a test double on its own: it speaks the protocols, never through the real adapters or flows.
    "sandbox": {"click", "rich", "reconciler.platforms", "reconciler.auth", "reconciler.config", "reconciler.state",
                "reconciler.planner", "reconciler.render", "reconciler.cli", "reconciler.app", "reconciler.apply",
                "reconciler.refresh"},
    # The authorization service composes the application layer, the state, the configuration, the flows, the tokens
    # and the core; it renders no plan, speaks to no platform but through the app, and is no part of the CLI.
    "service": {"click", "rich", "reconciler.cli", "reconciler.sandbox", "reconciler.render", "reconciler.platforms"},
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


TOP_LAYERS = ("reconciler.cli", "reconciler.app")  # the cli may import the app; the app, everything below


@pytest.mark.parametrize("file", sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")))
def test_nothing_below_imports_the_app_or_the_cli(file: str) -> None:
    """Only the CLI and the service (a second entry point) import the application layer, and nothing but
    `python -m reconciler` imports the CLI (imports inside functions included)."""
    allowed = {"__main__": TOP_LAYERS, "cli": TOP_LAYERS, "app": ("reconciler.app",), "service": ("reconciler.app",)}
    may = allowed.get(file.split("/")[0].removesuffix(".py"), ())
    bad = {
        n for n in _imports(PACKAGE / file) for layer in TOP_LAYERS
        if (n == layer or n.startswith(layer + ".")) and not any(n == m or n.startswith(m + ".") for m in may)
    }
    assert not bad, f"{file} imports {sorted(bad)}"


SERVICE = "reconciler.service"
BELOW_THE_SERVICE = sorted(
    name for name in (p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py"))
    if name.split("/")[0].removesuffix(".py") not in {"__main__", "cli", "app", "service"}
)


@pytest.mark.parametrize("file", BELOW_THE_SERVICE)
def test_nothing_in_the_core_imports_the_service(file: str) -> None:
    """Only the CLI, the application layer and the service itself import the authorization service (imports
    inside functions included)."""
    bad = {n for n in _imports(PACKAGE / file) if n == SERVICE or n.startswith(SERVICE + ".")}
    assert not bad, f"{file} imports {sorted(bad)}"


def test_every_module_opens_with_a_docstring() -> None:
    """Each module says what it owns."""
    for file in PACKAGE.rglob("*.py"):
        assert ast.get_docstring(ast.parse(file.read_text())), file


# What importing a module may load at all, its own imports' imports included (checked in a fresh interpreter).
# Derived from FORBIDDEN (the standard library aside: any interpreter loads some of it), plus what a layer must not
# load even through a neighbour it may import: the PostgreSQL driver, the state backends and the configuration's
# loading (the desired model, `reconciler.config.desired`, is allowed: the planner and the flows read it).
CONFIG_LOADING = frozenset(
    f"reconciler.config.{f.stem}" for f in (PACKAGE / "config").glob("*.py") if f.stem not in {"__init__", "desired"}
)
STATE_BACKENDS = frozenset({"psycopg", "reconciler.state.local", "reconciler.state.postgres",
                            "reconciler.state.postgres_credentials", "reconciler.state.dsn",
                            "reconciler.state.local_service", "reconciler.state.postgres_service"})
CORE = frozenset({"yaml", "httpx", "authlib", "click", "rich", "reconciler.cli", "reconciler.app",
                  "reconciler.render", "reconciler.apply", *STATE_BACKENDS, *CONFIG_LOADING})
INDIRECT_EXTRA = {
    "planner.py": CORE,
    "plan.py": CORE,
    "render": STATE_BACKENDS | CONFIG_LOADING,
    "config": STATE_BACKENDS,
    "state": CONFIG_LOADING,
    "catalog": STATE_BACKENDS | CONFIG_LOADING | {"reconciler.auth", "reconciler.tokens"},
    "tokens": STATE_BACKENDS | CONFIG_LOADING,
    "auth": STATE_BACKENDS | CONFIG_LOADING,
    "platforms": STATE_BACKENDS | CONFIG_LOADING,
}
# Direct rules that hold for a layer's own import lines but not through a neighbour it may import, each with its
# reason: httpx imports its own command line (click and rich) whenever they are installed, and the custodian
# classifies provider failures with `reconciler.auth.errors`, which reads httpx's exceptions.
DIRECT_ONLY = {
    "app": {"click", "rich"},
    "platforms": {"click", "rich"},
    "auth": {"click", "rich"},
    "tokens": {"httpx", "click", "rich"},
    "sandbox": {"click", "rich"},
    # The application layer the service composes loads the renderers (and, for a command, a platform's adapter).
    "service": {"click", "rich", "reconciler.render", "reconciler.platforms"},
}
INDIRECT = {
    target: frozenset(
        {f for f in FORBIDDEN.get(target, ()) if f.split(".")[0] not in sys.stdlib_module_names}
        - DIRECT_ONLY.get(target, set())
    )
    | INDIRECT_EXTRA.get(target, frozenset())
    for target in sorted(FORBIDDEN.keys() | INDIRECT_EXTRA.keys())
}

_LOADS = """
import importlib, json, sys
forbidden, found = json.loads(sys.argv[1]), {}
for module in sys.argv[2:]:
    before = set(sys.modules)
    importlib.import_module(module)
    new = set(sys.modules) - before
    bad = sorted(f for f in forbidden if any(m == f or m.startswith(f + ".") for m in new))
    if bad:
        found[module] = bad
print(json.dumps(found))
"""


@pytest.mark.parametrize("target", sorted(INDIRECT))
def test_importing_a_layer_loads_nothing_it_must_not(target: str) -> None:
    """Importing each module of a layer, in a fresh interpreter, loads nothing its layer forbids, even through
    the modules it may import (e.g. the planner loads no YAML parser and no state backend)."""
    files = [PACKAGE / target] if target.endswith(".py") else sorted((PACKAGE / target).rglob("*.py"))
    modules = [_module_name(f) for f in files]
    forbidden = json.dumps(sorted(INDIRECT[target]))
    out = subprocess.run([sys.executable, "-c", _LOADS, forbidden, *modules], capture_output=True, text=True, check=True)
    found = json.loads(out.stdout)
    assert not found, "\n".join(f"importing {m} loads {', '.join(bad)}" for m, bad in found.items())


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
