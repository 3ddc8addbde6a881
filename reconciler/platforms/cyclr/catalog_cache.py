"""The platform's connector list (`GET /v1.0/connectors`) kept on disk for a while, so that `plan` does not ask the
API for it on every run.

Owns: one JSON file per platform view — the key is a SHA-256 of the API URL, the partner's client id and (where
the list is an account's) the account id (`cache_key`), so neither an address nor an id is in a file's name —
named `connectors-<key>.json` in the directory the caller gives (the configuration's `.reconciler/cache/`, see
`CACHE_DIR`). An entry answers while it is younger than `max_age` (default `MAX_AGE`); `refresh` (the CLI's
`--refresh-catalog`) asks the API all the same. Written whole or not at all (`statefiles.atomic_write`: a temp
file, 0600, renamed over the old one), so concurrent writers leave one valid file; the directory is created 0700
with a `.gitignore` that keeps it out of the configuration's repository. An entry that is missing, damaged,
written for another key, dated in the future, a link or not a regular file, or too big, is not used and is
replaced by the next fetch; failing to write only costs a fetch next time — the cache never makes a command fail.
Must not: hold a secret (the listing is the platform's catalog: no tokens, no client secret), decide anything
from the list, or call the API itself (the caller passes `fetch`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reconciler.errors import ReconcilerError
from reconciler.statefiles import atomic_write, read_regular

__all__ = ["CACHE_DIR", "MAX_AGE", "cache_key", "connector_list"]

CACHE_DIR = Path(".reconciler") / "cache"  # below the configuration's directory
MAX_AGE = dt.timedelta(hours=1)
MAX_BYTES = 16 * 1024 * 1024  # a connector list larger than this is not kept (nor read)
CLOCK_SKEW = dt.timedelta(minutes=5)  # an entry dated later than now by more than this was not written by us

_FORMAT = "reconciler-connector-list-1"
_IGNORE_ALL = b"# the reconciler's cache: safe to delete, never committed\n*\n"

Connectors = list[dict[str, Any]]


def cache_key(api_url: str, client_id: str, account_id: str | None = None) -> str:
    """The key of one platform view's connector list: the API (without a trailing slash), the partner's client id
    and, for an account's list, the account."""
    parts = (_FORMAT, api_url.rstrip("/"), client_id, account_id or "")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def connector_list(
    fetch: Callable[[], Connectors],
    cache_dir: Path,
    key: str,
    *,
    now: dt.datetime,
    max_age: dt.timedelta = MAX_AGE,
    refresh: bool = False,
) -> Connectors:
    """The connector list for `key`: the cached one while it is younger than `max_age` (and not `refresh`),
    else `fetch()`'s, which is then kept. An error from `fetch` is raised as it is; the cache's own never are."""
    path = cache_dir / f"connectors-{key}.json"
    if not refresh:
        cached = _read(path, key, now, max_age)
        if cached is not None:
            return cached
    connectors = fetch()
    _write(path, key, now, connectors)
    return connectors


def _read(path: Path, key: str, now: dt.datetime, max_age: dt.timedelta) -> Connectors | None:
    """The entry's connectors when it is ours, whole, for `key` and fresh; None for anything else."""
    try:
        if path.lstat().st_size > MAX_BYTES:
            return None
        raw = read_regular(path)
        entry = json.loads(raw) if raw is not None else None
    except (OSError, ReconcilerError, ValueError):  # absent, a link or special file, unreadable, not JSON
        return None
    if not isinstance(entry, dict) or entry.get("format") != _FORMAT or entry.get("key") != key:
        return None
    try:
        fetched = dt.datetime.fromisoformat(str(entry.get("fetched_at")))
        age = now - fetched
    except (TypeError, ValueError):  # no date, or one without a zone
        return None
    connectors = entry.get("connectors")
    if not -CLOCK_SKEW <= age < max_age or not isinstance(connectors, list):
        return None
    return connectors if all(isinstance(item, dict) for item in connectors) else None


def _write(path: Path, key: str, now: dt.datetime, connectors: Connectors) -> None:
    entry = {"format": _FORMAT, "key": key, "fetched_at": now.isoformat(), "connectors": connectors}
    try:
        data = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()
        if len(data) > MAX_BYTES or not _directory(path.parent):
            return
        atomic_write(path, data)
    except (OSError, ReconcilerError, TypeError, ValueError):
        return  # a read-only or full disk, a link at the name, a list that is not JSON: only costs a fetch


def _directory(directory: Path) -> bool:
    """The cache directory exists (created 0700, with a `.gitignore` that ignores everything in it); False when
    it cannot be made or is not a real directory."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if directory.is_symlink() or not directory.is_dir():
            return False
        fd = os.open(directory / ".gitignore", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return True
    except OSError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(_IGNORE_ALL)
    return True
