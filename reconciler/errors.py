"""The one exception tree. Every error a user can cause is a `ReconcilerError` with a one-line summary.

Owns: error types and their one-line formatting — control characters a file or a provider put in a message (a
newline in a key, a terminal escape, a bidi override) are shown escaped, so a message is one line that shows what
is there. Must not: import anything from the rest of the package, or carry secret values in messages (callers
name keys and references, never values).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

_INVISIBLE = {"Cc", "Cf", "Zl", "Zp"}  # controls, format characters (bidi, zero-width), line/paragraph separators


def one_line(text: str) -> str:
    """`text` with every control or invisible formatting character written as an escape (`\\n`, `\\x1b`)."""
    if text.isprintable():
        return text
    return "".join(
        c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in _INVISIBLE else c for c in text
    )


class ReconcilerError(Exception):
    """Base of every expected error. `str(err)` is the one line the CLI prints."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def lines(self) -> list[str]:
        """The lines the CLI prints for this error (the message, then an optional hint)."""
        out = [f"error: {one_line(self.message)}"]
        if self.hint:
            out.append(f"  hint: {one_line(self.hint)}")
        return out


@dataclass(frozen=True)
class Location:
    """Where in the configuration an issue is: file (as shown to the user), line and column (1-based)."""

    file: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        if self.line is None:
            return self.file
        return f"{self.file}:{self.line}:{self.column or 1}"


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in the configuration, located by file position and key path."""

    location: Location
    key_path: str
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        where = f"{self.location}: {self.key_path}: " if self.key_path else f"{self.location}: "
        text = where + self.message
        if self.hint:
            text += f" ({self.hint})"
        return one_line(text)


class ConfigError(ReconcilerError):
    """The configuration is invalid. Holds every issue found, each one line naming file:line:column and key."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = list(issues)
        first = str(self.issues[0]) if self.issues else "invalid configuration"
        super().__init__(first)

    def lines(self) -> list[str]:
        out = [f"error: {issue}" for issue in self.issues]
        if len(self.issues) > 1:
            out.append(f"{len(self.issues)} errors in the configuration; nothing was written.")
        return out


class StateError(ReconcilerError):
    """The recorded state cannot be read or written safely; the state on disk is left untouched."""


class StateLockedError(StateError):
    """Another process holds the state lock."""


class StaleStateError(StateError):
    """A write was based on a state version that is no longer current (lineage or serial moved)."""


class PlanError(ReconcilerError):
    """The desired and recorded state cannot be reconciled as declared (e.g. a partner removed while in use)."""


class UsageError(ReconcilerError):
    """A command-line argument is wrong."""
