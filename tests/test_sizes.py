"""Size limits of the package: no module over 400 lines, no function over 60 (import cycles: test_layering)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "reconciler"
MODULE_LINES = 400
FUNCTION_LINES = 60


def _functions(node: ast.AST, prefix: str = "") -> Iterator[tuple[str, int]]:
    """(qualified name, lines) of every function under `node`, methods and nested functions included."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            assert child.end_lineno is not None
            yield prefix + child.name, child.end_lineno - child.lineno + 1
            yield from _functions(child, f"{prefix}{child.name}.")
        elif isinstance(child, ast.ClassDef):
            yield from _functions(child, f"{prefix}{child.name}.")
        else:
            yield from _functions(child, prefix)


def offenders() -> dict[str, int]:
    """Every module over MODULE_LINES and every function over FUNCTION_LINES, with its line count."""
    found: dict[str, int] = {}
    for file in sorted(PACKAGE.rglob("*.py")):
        name = file.relative_to(ROOT).as_posix()
        source = file.read_text()
        if source.count("\n") > MODULE_LINES:
            found[name] = source.count("\n")
        for function, lines in _functions(ast.parse(source)):
            if lines > FUNCTION_LINES:
                found[f"{name}:{function}"] = lines
    return found


def test_no_module_or_function_over_its_limit() -> None:
    """No module over 400 lines and no function over 60."""
    over = offenders()
    assert not over, "over the limit: " + ", ".join(f"{name} ({lines} lines)" for name, lines in sorted(over.items()))



def test_the_limits_are_measured() -> None:
    """A function one line over the limit is found (the measure itself works)."""
    body = "\n".join(f"    x{i} = {i}" for i in range(FUNCTION_LINES))
    tree = ast.parse(f"class C:\n  def long(self):\n{body}\n")
    assert dict(_functions(tree)) == {"C.long": FUNCTION_LINES + 1}
