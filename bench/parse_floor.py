"""The parse floor: merely load a configuration's YAML files with yaml.CSafeLoader, in a fresh interpreter.

Reads reconciler.yaml and every file its `include:` globs match (recursively, each file once), like the plan run
has to — and nothing else: no validation, no state, no plan. Run as a subprocess so that interpreter start-up and
`import yaml` are in this time exactly as they are in the plan's; nothing is subtracted from either.

  python bench/parse_floor.py DIR      # prints the number of files and of installations it saw
"""

from __future__ import annotations

import glob
import sys
from pathlib import Path

import yaml


def load(directory: Path) -> tuple[int, int]:
    seen: set[Path] = set()
    installations = 0
    queue = [directory / "reconciler.yaml"]
    while queue:
        path = queue.pop(0).resolve()
        if path in seen:
            continue
        seen.add(path)
        with open(path, "rb") as handle:
            data = yaml.load(handle.read(), Loader=yaml.CSafeLoader) or {}
        for tenant in (data.get("tenants") or {}).values():
            installations += len((tenant or {}).get("installations") or {})
        for pattern in data.get("include") or ():
            queue += [Path(p) for p in sorted(glob.glob(str(path.parent / pattern), recursive=True))]
    return len(seen), installations


if __name__ == "__main__":
    files, count = load(Path(sys.argv[1]))
    print(f"{files} files, {count} installations")
