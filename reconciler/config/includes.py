"""`include:` patterns: which files a pattern names. Shared by the loader, the parse-ahead worker and the memo."""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["CONFIG_FILE", "MAX_FILE_BYTES", "glob_matches", "include_patterns"]

CONFIG_FILE = "reconciler.yaml"  # the root file of a configuration directory
MAX_FILE_BYTES = 16 * 1024 * 1024  # a configuration file larger than this is refused


def glob_matches(base: Path, pattern: str) -> list[Path]:
    """The files an include pattern names, relative to the including file's directory `base`, sorted."""
    if os.path.isabs(pattern):
        found = glob.glob(pattern, recursive=True)
    else:
        found = glob.glob(pattern, root_dir=base, recursive=True)
    return sorted(base / m for m in found if (base / m).is_file())


def include_patterns(data: Mapping[str, Any]) -> list[tuple[int, str]]:
    """The include patterns of a file as read, with their index (a malformed `include:` is left to the schema)."""
    value = data.get("include")
    if not isinstance(value, list):
        return []
    return [(index, pattern) for index, pattern in enumerate(value) if isinstance(pattern, str) and pattern]
