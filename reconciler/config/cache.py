"""The parse cache: YAML files already parsed, by content, so an unchanged configuration is not parsed again.

Owns: content-addressed entries (SHA-256 of the file's bytes + reconciler version + catalog version) holding the
parsed data *before* validation and secret resolution, stored with `marshal` (plain data only; a file whose
data marshal cannot hold is simply not cached). Lives outside the configuration directory
(`RECONCILER_CACHE_DIR`, else `$XDG_CACHE_HOME/reconciler`, else `~/.cache/reconciler`), is safe to delete,
and never changes a result: any problem reading or writing it falls back to parsing. New entries are written by
`commit()`, once the whole configuration loaded: a failing command leaves the cache as it found it. Must not:
hold secrets.

Trust: what the cache holds decides what is planned, so only this user may have written it. The cache directory
(and each directory below it) must be owned by the effective user and writable by no one else; each entry is
opened without following a symlink and must be a regular file with the same owner and mode rule. Anything else
is not used — one warning line on stderr, then the command runs without that cache (never fails because of it).
Directories are created 0700. An entry carries the key it was stored under (SHA-256 of the salt and the bytes it
was parsed from), checked against the bytes at hand; files over the size limit are never stored.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from reconciler import __version__
from reconciler.config.includes import MAX_FILE_BYTES

__all__ = [
    "ParseCache",
    "catalog_digest",
    "default_cache_dir",
    "make_private_directories",
    "parse_cache",
    "read_private_entry",
    "untrusted",
]

_FORMAT = b"reconciler-parse-cache-2"
_ENTRY_TAG = "parse-entry-2"


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    if environ.get("RECONCILER_CACHE_DIR"):
        return Path(environ["RECONCILER_CACHE_DIR"])
    base = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "reconciler"


def _problem(info: os.stat_result, what: str) -> str | None:
    if info.st_uid != os.geteuid():
        return f"{what} is owned by another user (uid {info.st_uid})"
    if info.st_mode & 0o022:
        return f"{what} is writable by other users (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def untrusted(root: Path, *below: str) -> str | None:
    """Why the cache directory `root` (or a directory `below` it) may not be used, or None when every one that
    exists is a directory of this user that no one else may write. A missing one is fine: it is created 0700."""
    path = root
    for index, part in enumerate(("", *below)):
        path = path / part if part else path
        try:
            info = os.stat(path) if index == 0 else os.lstat(path)  # the root itself may be a symlink of the user's
        except FileNotFoundError:
            return None
        except OSError as exc:
            return f"{path} cannot be checked ({exc.strerror or exc})"
        if not stat.S_ISDIR(info.st_mode):
            return f"{path} is not a directory"
        problem = _problem(info, str(path))
        if problem:
            return problem
    return None


def make_private_directories(root: Path, *below: str) -> bool:
    """Create `root` and the directories `below` it that are missing, each 0700; False when one cannot be made
    or is not to be trusted (see `untrusted`)."""
    path = root
    for part in ("", *below):
        path = path / part if part else path
        try:
            if part == "":
                path.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError:
            return False
    return untrusted(root, *below) is None


def read_private_entry(path: Path, max_bytes: int) -> tuple[bytes | None, str | None]:
    """The bytes of a cache entry and None, or None and why it was refused (None, None: absent or unreadable).
    Opened without following a symlink; it must be a regular file of this user, writable by no one else, and at
    most `max_bytes` long."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None, None  # absent, or a symlink (ELOOP): not an entry of ours
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None, f"{path} is not a regular file"
        problem = _problem(info, f"cache entry {path.name}")
        if problem:
            return None, problem
        if info.st_size > max_bytes:
            return None, None
        try:
            return handle.read(max_bytes + 1), None
        except OSError:
            return None, None


_WARNED: set[str] = set()


def warn_untrusted(root: Path, problem: str) -> None:
    """One line on stderr per cache directory and process: the cache is not used, and why."""
    key = os.path.abspath(root)
    if key not in _WARNED:
        _WARNED.add(key)
        hint = "make it yours alone (chmod go-w), or set RECONCILER_CACHE_DIR to a directory of your own"
        print(f"warning: cache {root} not used: {problem}; running without it ({hint})", file=sys.stderr)


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
        self.root = directory
        self.directory = directory / "parse"
        self._salt = b"\0".join((_FORMAT, __version__.encode(), catalog_version.encode()))
        self._new: list[tuple[Path, bytes]] = []
        self._refused: bool | None = None  # decided on first use: the directories are checked once

    def _usable(self) -> bool:
        if self._refused is None:
            problem = untrusted(self.root, "parse")
            if problem:
                warn_untrusted(self.root, problem)
            self._refused = problem is not None
        return not self._refused

    def _key(self, raw: bytes) -> str:
        return hashlib.sha256(self._salt + b"\0" + raw).hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.marshal"

    def load(self, raw: bytes, parse: Callable[[], Any]) -> Any:
        """The parsed data of `raw`: from the cache, or from `parse()` (then stored by the next `commit()`)."""
        if len(raw) > MAX_FILE_BYTES or not self._usable():
            return parse()
        key = self._key(raw)
        blob, problem = read_private_entry(self._path(key), 8 * MAX_FILE_BYTES)
        if problem:  # planted by someone else: nothing here is trusted any more
            warn_untrusted(self.root, problem)
            self._refused = True
        elif blob is not None:
            try:
                tag, stored_key, data = marshal.loads(blob)  # noqa: S302 - a directory only we can write
                if tag == _ENTRY_TAG and stored_key == key:  # parsed from exactly these bytes
                    return data
            except (EOFError, ValueError, TypeError):
                pass
        data = parse()
        self._keep(key, data)  # as parsed, before anything could change it
        return data

    def remember(self, raw: bytes, data: Any) -> None:
        """Store `data` as the parse of `raw` by the next `commit()` (parsed elsewhere, e.g. by a worker)."""
        if len(raw) <= MAX_FILE_BYTES and self._usable():
            self._keep(self._key(raw), data)

    def _keep(self, key: str, data: Any) -> None:
        try:
            self._new.append((self._path(key), marshal.dumps((_ENTRY_TAG, key, data))))
        except ValueError:
            pass  # e.g. a date: not plain data, parse again next time

    def commit(self) -> None:
        """Store what was parsed since the last commit (call once the configuration loaded without error)."""
        new, self._new = self._new, []
        for path, blob in new:
            self._store(path, blob)

    def _store(self, path: Path, blob: bytes) -> None:
        if not make_private_directories(self.root, "parse", path.parent.name):
            return  # a read-only, full or foreign cache directory only costs speed
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as handle:
                handle.write(blob)
            os.replace(tmp, path)
        except OSError:
            return
