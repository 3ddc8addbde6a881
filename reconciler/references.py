"""`${env:NAME}` and `${file:PATH}` references: their syntax and their resolution, without any reporting.

Owns: what a reference means — an environment variable that is set and not empty; a file inside the configuration
directory (or a directory listed in RECONCILER_SECRET_DIRS), read as UTF-8 without its trailing newline, not empty.
Resolution returns the value or a `Problem` (message and hint); the configuration loader turns a problem into an
error at the reference's file and line, and the plan memo (which re-resolves references to know that nothing they
name changed) falls back to a full load on any problem. Must not: import YAML, pydantic or the loader.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["REFERENCE", "Problem", "resolve", "secret_roots"]

REFERENCE = re.compile(r"^\$\{(env|file):([^}]*)\}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Problem:
    message: str
    hint: str | None = None


def secret_roots(config_dir: Path, environ: Mapping[str, str]) -> list[Path]:
    """The directories `${file:}` references may read from."""
    extra = [d for d in environ.get("RECONCILER_SECRET_DIRS", "").split(os.pathsep) if d]
    return [config_dir.resolve(), *(Path(d).resolve() for d in extra)]


def resolve(kind: str, argument: str, *, config_dir: Path, environ: Mapping[str, str], roots: list[Path]) -> str | Problem:
    """The value of the reference `${kind:argument}` (kind "env" or "file"), or why it has none."""
    return _env(argument, environ) if kind == "env" else _file(argument, config_dir, roots)


def _env(name: str, environ: Mapping[str, str]) -> str | Problem:
    if not _ENV_NAME.match(name):
        return Problem(f"invalid environment variable name '{name}' in reference")
    value = environ.get(name)
    if value is None:
        return Problem(f"environment variable {name} is not set", f"export {name}=... before running")
    if value == "":
        return Problem(f"environment variable {name} is empty")
    return value


def _file(name: str, config_dir: Path, roots: list[Path]) -> str | Problem:
    if not name:
        return Problem("empty file name in reference")
    target = (config_dir / name).resolve()
    if not any(target == root or root in target.parents for root in roots):
        return Problem(
            f"secret file '{name}' is outside the configuration directory",
            "keep it inside, or list its directory in RECONCILER_SECRET_DIRS",
        )
    try:
        value = target.read_text(encoding="utf-8").rstrip("\r\n")
    except FileNotFoundError:
        return Problem(f"secret file '{name}' does not exist")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not readable as UTF-8"
        return Problem(f"cannot read secret file '{name}': {reason}")
    if not value:
        return Problem(f"secret file '{name}' is empty")
    return value
