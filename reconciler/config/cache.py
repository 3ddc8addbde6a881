"""The parse cache: YAML files already parsed, by content, so an unchanged configuration is not parsed again.

Owns: content-addressed entries (SHA-256 of the file's bytes + reconciler version + catalog version) holding the
parsed data *before* validation and secret resolution, stored with `marshal` (plain data only; a file whose
data marshal cannot hold is simply not cached). Lives outside the configuration directory
(`RECONCILER_CACHE_DIR`, else `$XDG_CACHE_HOME/reconciler`, else `~/.cache/reconciler`), is safe to delete,
and never changes a result: any problem reading or writing it falls back to parsing. New entries are written by
`commit()`, once the whole configuration loaded: a failing command leaves the cache as it found it. Must not:
hold secrets.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from reconciler import __version__

__all__ = ["ParseCache", "catalog_digest", "default_cache_dir", "parse_cache"]

_FORMAT = b"reconciler-parse-cache-1"


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    if environ.get("RECONCILER_CACHE_DIR"):
        return Path(environ["RECONCILER_CACHE_DIR"])
    base = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "reconciler"


_CATALOG = Path(__file__).resolve().parent.parent / "catalog" / "connectors"
_DIGEST: list[str] = []


def catalog_digest() -> str:
    """A digest of the shipped connector catalog files (their bytes): what the parse cache's entries depend on
    besides the file and the reconciler version, read without building the catalog."""
    if not _DIGEST:
        digest = hashlib.sha256()
        for path in sorted(_CATALOG.glob("*.yaml")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        _DIGEST.append(digest.hexdigest())
    return _DIGEST[0]


def parse_cache(environ: Mapping[str, str]) -> ParseCache:
    """The parse cache in the cache directory `environ` names (see `default_cache_dir`)."""
    return ParseCache(default_cache_dir(environ), catalog_digest())


class ParseCache:
    def __init__(self, directory: Path, catalog_version: str) -> None:  # catalog_version: see catalog_digest
        self.directory = directory / "parse"
        self._salt = b"\0".join((_FORMAT, __version__.encode(), catalog_version.encode()))
        self._new: list[tuple[Path, bytes]] = []

    def _path(self, raw: bytes) -> Path:
        digest = hashlib.sha256(self._salt + b"\0" + raw).hexdigest()
        return self.directory / digest[:2] / f"{digest}.marshal"

    def load(self, raw: bytes, parse: Callable[[], Any]) -> Any:
        """The parsed data of `raw`: from the cache, or from `parse()` (then stored by the next `commit()`)."""
        path = self._path(raw)
        try:
            return marshal.loads(path.read_bytes())
        except (OSError, EOFError, ValueError, TypeError):
            pass
        data = parse()
        try:
            self._new.append((path, marshal.dumps(data)))  # as parsed, before anything could change it
        except ValueError:
            pass  # e.g. a date: not plain data, parse again next time
        return data

    def remember(self, raw: bytes, data: Any) -> None:
        """Store `data` as the parse of `raw` by the next `commit()` (parsed elsewhere, e.g. by a worker)."""
        try:
            self._new.append((self._path(raw), marshal.dumps(data)))
        except ValueError:
            pass

    def commit(self) -> None:
        """Store what was parsed since the last commit (call once the configuration loaded without error)."""
        new, self._new = self._new, []
        for path, blob in new:
            self._store(path, blob)

    def _store(self, path: Path, blob: bytes) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as handle:
                handle.write(blob)
            os.replace(tmp, path)
        except OSError:
            return  # a read-only or full cache directory only costs speed
