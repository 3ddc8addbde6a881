"""Size limits of the package: no module over 400 lines, no function over 60 (import cycles: test_layering).

`NOT_YET` names the offenders still being split, exactly: the test fails for any other offender, and for an entry
that no longer offends, so the set empties as the splits land.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "reconciler"
MODULE_LINES = 400
FUNCTION_LINES = 60

# A module by its path, a function by its path and qualified name.
NOT_YET: set[str] = set()


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
    """No module over 400 lines and no function over 60, except those still being split (NOT_YET)."""
    over = {name: lines for name, lines in offenders().items() if name not in NOT_YET}
    assert not over, "over the limit: " + ", ".join(f"{name} ({lines} lines)" for name, lines in sorted(over.items()))


def test_not_yet_names_only_current_offenders() -> None:
    """An entry of NOT_YET that is within its limit now is removed from it."""
    stale = NOT_YET - offenders().keys()
    assert not stale, f"within the limits now, remove from NOT_YET: {', '.join(sorted(stale))}"
