"""Where a configuration problem is, and the report that collects the problems of one load.

Owns: `SourceFile` (a file as read, and the environment overlay that wrote into it), key paths and how they are
shown (`partners.x.scopes[0]`), `display_path`, and `Report`: every issue and warning, in the order found, each
located as file:line:column in the file that wrote the value (base or overlay). Positions are found only for the
files that have a problem. Must not: read files, validate, resolve references, or decide what is a problem.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.errors import ConfigError, ConfigIssue, Location
from reconciler.yamlio import compose, locate

__all__ = ["KeyPath", "Report", "SourceFile", "did_you_mean", "display_path", "key_path_text"]

KeyPath = tuple[str | int, ...]


@dataclass
class SourceFile:
    """One configuration file as read: its path, how it is shown to the user, its text."""

    path: Path
    display: str
    text: str
    _tree: object = field(default=None, repr=False)
    _composed: bool = field(default=False, repr=False)
    # Set on a file an environment overlay was merged into: the overlay, and the key paths whose value it wrote
    # (or removed). A problem at or below one of those paths is located in the overlay.
    overlay: SourceFile | None = field(default=None, repr=False)
    overlaid: frozenset[KeyPath] = field(default=frozenset(), repr=False)

    def origin(self, path: KeyPath) -> SourceFile:
        """The file that wrote the value at `path`: the overlay when it set (or removed) it or a parent of it."""
        if self.overlay is not None and any(path[:n] in self.overlaid for n in range(1, len(path) + 1)):
            return self.overlay
        return self

    def missing_at(self, path: KeyPath, key: str) -> KeyPath:
        """Where to report that `key` is missing under `path`: on the overlay's `key: null` if it removed it."""
        return (*path, key) if self.origin((*path, key)) is not self.origin(path) else path

    def tree(self):  # type: ignore[no-untyped-def]
        """The file's node tree with positions, composed once, on the first problem reported in it."""
        if not self._composed:
            self._tree, self._composed = compose(self.text), True
        return self._tree


class Report:
    """The issues (errors) and warnings of one load, in the order found."""

    def __init__(self) -> None:
        self.issues: list[ConfigIssue] = []
        self.warnings: list[ConfigIssue] = []

    def issue(
        self,
        src: SourceFile,
        path: KeyPath,
        message: str,
        hint: str | None = None,
        *,
        at_key: bool = False,
        warning: bool = False,
    ) -> None:
        """A problem with the value at `path` (with `at_key`, with the key itself) of `src`."""
        issue = ConfigIssue(self.location(src, path, at_key=at_key), key_path_text(path), message, hint)
        (self.warnings if warning else self.issues).append(issue)

    def at(self, display: str, line: int | None, column: int | None, message: str, hint: str | None = None) -> None:
        """A problem with a file as a whole (unreadable, not YAML), at a position known already."""
        self.issues.append(ConfigIssue(Location(display, line, column), "", message, hint))

    def location(self, src: SourceFile, path: KeyPath, *, at_key: bool = False) -> Location:
        """Where `path` is written: in the file that wrote it (base or overlay), with its line when found."""
        src = src.origin(path)
        position = locate(src.tree(), path, at_key=at_key) if src.text else None
        line, column = position or (None, None)
        return Location(src.display, line, column)

    def fail_if_issues(self) -> None:
        """Raise `ConfigError` with every issue so far, if there is one."""
        if self.issues:
            raise ConfigError(self.issues)


def display_path(path: Path) -> str:
    """A path as the user should see it: relative to the working directory when below it."""
    absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.relative_to(_cwd()))
    except ValueError:
        return str(path)


def _cwd() -> Path:
    return Path(os.path.abspath(os.getcwd()))


def key_path_text(path: Sequence[str | int]) -> str:
    """A key path as the user reads it: `tenants.acme.installations.ado.scopes[0]`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def did_you_mean(unknown: str, known: Sequence[str]) -> str | None:
    """A hint naming the closest of `known` to a name not found, or None when none is close."""
    import difflib

    matches = difflib.get_close_matches(unknown, list(known), n=1, cutoff=0.6)
    return f"did you mean '{matches[0]}'?" if matches else None
