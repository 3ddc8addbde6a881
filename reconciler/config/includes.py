"""`include:` patterns and reading configuration files: which files a pattern names, and the bytes of one file
within the limits. Shared by the loader, the parse-ahead worker and the memo, so that every path applies the same
limits. Must not: parse YAML, report errors with locations (callers do), or follow a directory symlink in `**`.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "CONFIG_FILE",
    "MAX_FILE_BYTES",
    "MAX_MATCHES",
    "FileTooLarge",
    "TooManyMatches",
    "glob_matches",
    "include_patterns",
    "read_config_bytes",
]

CONFIG_FILE = "reconciler.yaml"  # the root file of a configuration directory
MAX_FILE_BYTES = 16 * 1024 * 1024  # a configuration file larger than this is refused
# One pattern may name at most this many files: ten times the 10,000 installations the tool is built for, far
# below what a runaway pattern (a whole disk, a symlink farm) would walk.
MAX_MATCHES = 100_000


class TooManyMatches(Exception):
    """A pattern names more than `MAX_MATCHES` files (the caller reports it at the pattern's position)."""

    def __init__(self, pattern: str, limit: int) -> None:
        super().__init__(pattern, limit)
        self.pattern, self.limit = pattern, limit


class FileTooLarge(Exception):
    """A configuration file over `MAX_FILE_BYTES` (refused before its bytes are read)."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def read_config_bytes(path: Path) -> bytes:
    """The bytes of a regular configuration file, refusing one over `MAX_FILE_BYTES` before reading it (its size
    is taken from the open file, and at most one byte more than the limit is ever read, so a file that grows
    meanwhile is refused too). Raises `FileTooLarge` or `OSError` (also for a FIFO or device)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO swapped in must not block the open
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise FileTooLarge(info.st_size)
        raw = handle.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise FileTooLarge(max(len(raw), info.st_size))
    return raw


def glob_matches(base: Path, pattern: str) -> list[Path]:
    """The files an include pattern names, relative to the including file's directory `base`, sorted.

    Like `glob` (`*` and `?` within one name, `**` any number of directories, names starting with '.' only where
    the pattern spells the dot), except that `**` never descends through a directory symlink (so a symlink loop
    ends), and more than `MAX_MATCHES` files raise `TooManyMatches`."""
    if "**" not in pattern:
        found = glob.glob(pattern) if os.path.isabs(pattern) else glob.glob(pattern, root_dir=base)
        matches = [base / m for m in found if (base / m).is_file()]
    else:
        matches = list(_recursive(base, pattern))
    if len(matches) > MAX_MATCHES:
        raise TooManyMatches(pattern, MAX_MATCHES)
    return sorted(matches)


def _recursive(base: Path, pattern: str) -> Iterator[Path]:
    """The files matching a pattern with `**`: a walk from its fixed leading directory that does not follow
    directory symlinks (a file symlink is matched like a file), checked against the pattern as one expression."""
    parts = pattern.split("/")
    fixed = 0
    while fixed < len(parts) and not glob.has_magic(parts[fixed]):
        fixed += 1
    top = base / ("/".join(parts[:fixed]) or "/") if fixed else base
    regex = _pattern_regex(parts[fixed:])
    count = 0
    for directory, dirs, files in os.walk(top, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # `**` skips hidden directories, as glob does
        relative = os.path.relpath(directory, top)
        prefix = "" if relative == "." else relative + "/"
        for name in files:
            if regex.match(prefix + name) is not None and os.path.isfile(os.path.join(directory, name)):
                count += 1
                if count > MAX_MATCHES:
                    raise TooManyMatches(pattern, MAX_MATCHES)
                yield top / (prefix + name)


def _pattern_regex(parts: list[str]) -> re.Pattern[str]:
    """Pattern components (after the fixed directory) as one expression over a relative path: `**` is any number
    of non-hidden directories (at the end: any non-hidden path), `*`/`?`/`[...]` stay within one name."""
    out = ""
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            out += r"(?:[^/.][^/]*/)*[^/.][^/]*" if last else r"(?:[^/.][^/]*/)*"
        else:
            out += _name_regex(part) + ("" if last else "/")
    return re.compile(out + r"\Z")


def _name_regex(part: str) -> str:
    """One name of a pattern: `*` and `?` never match '/', nor a leading '.' unless the pattern spells it."""
    out = "" if part.startswith(".") else r"(?!\.)"
    index = 0
    while index < len(part):
        char = part[index]
        end = part.find("]", index + 2) if char == "[" else -1
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif end != -1:
            body = part[index + 1 : end]
            out += "[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]"
            index = end
        else:
            out += re.escape(char)
        index += 1
    return out


def include_patterns(data: Mapping[str, Any]) -> list[tuple[int, str]]:
    """The include patterns of a file as read, with their index (a malformed `include:` is left to the schema)."""
    value = data.get("include")
    if not isinstance(value, list):
        return []
    return [(index, pattern) for index, pattern in enumerate(value) if isinstance(pattern, str) and pattern]
