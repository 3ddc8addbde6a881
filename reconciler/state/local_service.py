"""What is kept beside a local state: sign-in attempts as one small file each in
`<dir>/<environment>.service/attempts/<key>.json`, the audit log `<dir>/<environment>.audit.jsonl`, and the checks
log `<dir>/<environment>.service/checks.jsonl` (one line per check; the last line of an address is its latest;
rewritten with only the latest lines once it holds many times more lines than addresses).

Owns: those files. An attempt is written whole (temp file, rename; mode 0600) and taken exactly once across
processes: the taker first renames it to a name of its own (of racing takers, exactly one rename succeeds), then
reads and deletes it. An audit entry is one whole line added by a single `write` to a file opened with `O_APPEND`
(not fsynced: a token read must stay cheap; a line lost to a power cut is the price); a torn or damaged line is
skipped on reading. Keys are checked to be hex digests, so a key never names a file outside `attempts/`.
Must not: follow a link at any of these names (see `reconciler.statefiles`), keep a secret in the clear (the
attempt's blob is sealed by the caller), or know the configuration.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from reconciler.errors import StateError
from reconciler.state.service_store import (
    Attempt,
    AuditEntry,
    CheckResult,
    audit_from_json,
    audit_to_json,
    check_attempt_key,
    check_from_json,
    check_to_json,
    is_attempt_key,
    latest_checks,
    stored_time,
    utc,
)
from reconciler.statefiles import atomic_write, check_directory, open_regular, read_regular

__all__ = ["LocalServiceStore"]

PRUNE_EVERY = dt.timedelta(minutes=1)  # look for expired attempts at most this often (by the attempts' own clock)
_SUFFIX = ".json"
_TAKEN = ".taken-"  # `<key>.json.taken-<uuid>`: claimed by one taker, about to be read and deleted


class LocalServiceStore:
    """Attempts and the audit log of one environment, in files beside its local state."""

    def __init__(self, directory: Path, environment: str) -> None:
        self.directory = Path(directory)
        self.service_dir = self.directory / f"{environment}.service"
        self.attempts_dir = self.service_dir / "attempts"
        self.audit_path = self.directory / f"{environment}.audit.jsonl"
        self.checks_path = self.service_dir / "checks.jsonl"
        # Appends hold it shared, a compaction exclusive: no check is appended to a log being replaced
        self.checks_lock_path = self.service_dir / "checks.lock"
        self._checks_seen = 0  # the log's size when this store last read it whole
        # The checks log as last read (path, SHA-256; None: absent): the plan memo's input when a plan read it
        self.checks_digest: tuple[str, str | None] | None = None
        self._pruned_at: dt.datetime | None = None
        self._audit_ready = False  # the directory checked and made, once per store (a token read appends a line)

    # -- attempts ----------------------------------------------------------------------------------------------

    def put_attempt(self, attempt: Attempt) -> None:
        data = _attempt_json(attempt)  # checks the key and the times before anything is written
        try:
            self._make_dirs()
            atomic_write(self.attempts_dir / f"{attempt.key}{_SUFFIX}", json.dumps(data).encode())
        except OSError as exc:
            raise StateError(f"{self.attempts_dir}: cannot record a sign-in attempt: {exc.strerror or exc}") from None
        created = utc(attempt.created_at)
        if self._pruned_at is None or created - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at = created
            self.prune_attempts(created)

    def take_attempt(self, key: str, now: dt.datetime) -> Attempt | None:
        if not is_attempt_key(key):
            return None  # nothing can be recorded under it
        claimed = self.attempts_dir / f"{key}{_SUFFIX}{_TAKEN}{uuid.uuid4().hex}"
        try:
            os.rename(self.attempts_dir / f"{key}{_SUFFIX}", claimed)
        except FileNotFoundError:
            return None  # never recorded, or another caller took it first
        except OSError as exc:
            raise StateError(f"{self.attempts_dir}: cannot take a sign-in attempt: {exc.strerror or exc}") from None
        attempt = self._read_claimed(claimed)
        if attempt is None or attempt.key != key or attempt.expired(utc(now)):
            return None
        return attempt

    def prune_attempts(self, now: dt.datetime) -> int:
        """Remove the attempts that expired before `now`, damaged ones, and expired ones a crashed taker left
        claimed; how many. (Temp files of a write under way start with a dot and are not looked at.)"""
        try:
            names = [entry.name for entry in os.scandir(self.attempts_dir) if not entry.name.startswith(".")]
        except FileNotFoundError:
            return 0
        removed = 0
        for name in names:
            path = self.attempts_dir / name
            try:
                attempt = _attempt_from(json.loads(read_regular(path) or b"null"))
            except (OSError, ValueError, KeyError, TypeError, StateError, RecursionError):
                attempt = None  # damaged (files are written whole, by rename): it can never be taken
            if attempt is None or attempt.expired(utc(now)):
                removed += _unlink(path)
        return removed

    def _read_claimed(self, claimed: Path) -> Attempt | None:
        """The attempt in a file this caller claimed, which it deletes; None when it is damaged."""
        try:
            raw = read_regular(claimed)
        finally:
            _unlink(claimed)
        try:
            return _attempt_from(json.loads(raw or b"null"))
        except (ValueError, KeyError, TypeError, StateError, RecursionError):
            return None

    def _make_dirs(self) -> None:
        """The directories (0700), the service's with a `.gitignore` of everything: a state directory is often
        committed, and attempts in flight belong to no commit."""
        for directory in (self.directory, self.service_dir, self.attempts_dir):
            check_directory(directory)
            directory.mkdir(mode=0o700, exist_ok=True)
        try:
            fd = open_regular(self.service_dir / ".gitignore", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            return
        with os.fdopen(fd, "wb") as handle:
            handle.write(b"*\n")

    # -- audit log ---------------------------------------------------------------------------------------------

    def append_audit(self, entry: AuditEntry) -> None:
        if not self._audit_ready:
            try:
                check_directory(self.directory)
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StateError(f"{self.audit_path}: cannot add to the audit log: {exc.strerror or exc}") from None
            self._audit_ready = True
        _append_lines(self.audit_path, [audit_to_json(entry)], "the audit log")

    def audit(self, since: dt.datetime | None = None) -> list[AuditEntry]:
        entries = []
        for data in _read_lines(self.audit_path, "the audit log"):
            try:
                entry = audit_from_json(data)
            except (ValueError, KeyError, TypeError, StateError):
                continue  # a damaged line
            if since is None or entry.at >= utc(since):
                entries.append(entry)
        return sorted(entries, key=lambda entry: entry.at)  # stable: appends of the same instant keep their order

    # -- checks ------------------------------------------------------------------------------------------------

    def record_checks(self, results: Sequence[CheckResult]) -> None:
        if not results:
            return
        lines = [check_to_json(result) for result in results]  # checks the times before anything is written
        try:
            self._make_dirs()
        except OSError as exc:
            raise StateError(f"{self.checks_path}: cannot record checks: {exc.strerror or exc}") from None
        with self._checks_lock(fcntl.LOCK_SH):
            _append_lines(self.checks_path, lines, "the checks log")
        self._compact_checks()

    def checks(self) -> dict[str, CheckResult]:
        return latest_checks(self._check_lines()[0])

    def _check_lines(self) -> tuple[list[CheckResult], int]:
        raw = _read_raw(self.checks_path, "the checks log")
        self.checks_digest = (os.path.abspath(self.checks_path), hashlib.sha256(raw).hexdigest() if raw is not None else None)
        results, lines = [], 0
        for data in _json_lines(raw):
            lines += 1
            try:
                results.append(check_from_json(data))
            except (ValueError, KeyError, TypeError, StateError):
                continue  # a damaged line
        return results, lines

    def _compact_checks(self) -> None:
        """Rewrite the log with each address's latest line once it holds more than `COMPACT_RATIO` times as many
        lines as addresses, under the exclusive lock (appends wait for it, so none is lost). The log is read for this only when it grew `COMPACT_RATIO` times since
        this store last looked, so that a long-running service does not read it on every check."""
        try:
            size = os.stat(self.checks_path).st_size
        except OSError:
            return
        if size <= max(COMPACT_MIN_BYTES, COMPACT_RATIO * self._checks_seen):
            return
        with self._checks_lock(fcntl.LOCK_EX):
            results, lines = self._check_lines()
            latest = latest_checks(results)
            self._checks_seen = size
            if lines <= COMPACT_RATIO * len(latest):
                return
            body = "".join(json.dumps(check_to_json(r), separators=(",", ":")) + "\n" for r in latest.values())
            try:
                atomic_write(self.checks_path, body.encode())
            except OSError as exc:
                raise StateError(f"{self.checks_path}: cannot rewrite the checks log: {exc.strerror or exc}") from None
            self._checks_seen = len(body)

    @contextmanager
    def _checks_lock(self, mode: int) -> Iterator[None]:
        """The checks log's lock (`fcntl.LOCK_SH` to append, `LOCK_EX` to replace it), held for the block."""
        try:
            fd = open_regular(self.checks_lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(f"{self.checks_lock_path}: cannot lock the checks log: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)  # releases the lock


COMPACT_MIN_BYTES = 256 * 1024  # a checks log smaller than this is never rewritten
COMPACT_RATIO = 4


def _append_lines(path: Path, items: Sequence[Mapping[str, str]], what: str) -> None:
    """Add whole JSON lines to `path` in one `write` to a file opened with `O_APPEND` (concurrent appends never
    interleave; after a torn last line, a line of its own is started)."""
    data = "".join(json.dumps(item, separators=(",", ":")) + "\n" for item in items).encode()
    try:
        fd = open_regular(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # after a torn line (a full disk): start a line of our own
            written = os.write(fd, data)  # one write of the whole lines: appends never interleave
        finally:
            os.close(fd)
    except OSError as exc:
        raise StateError(f"{path}: cannot add to {what}: {exc.strerror or exc}") from None
    if written != len(data):
        raise StateError(f"{path}: {what} took a partial line (a full disk?)")


def _read_lines(path: Path, what: str) -> Iterator[Any]:
    """The JSON value of each line of `path` that holds one (none when there is no file)."""
    return _json_lines(_read_raw(path, what))


def _read_raw(path: Path, what: str) -> bytes | None:
    try:
        return read_regular(path)
    except OSError as exc:
        raise StateError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None


def _json_lines(raw: bytes | None) -> Iterator[Any]:
    for line in (raw or b"").split(b"\n"):
        try:
            yield json.loads(line)
        except (ValueError, RecursionError):
            continue  # a torn last line (or a blank one)


def _attempt_json(attempt: Attempt) -> dict[str, Any]:
    return {
        "key": check_attempt_key(attempt.key),
        "address": attempt.address,
        "pending_id": attempt.pending_id,
        "blob": dict(attempt.blob),
        "created_at": stored_time(attempt.created_at),
        "expires_at": stored_time(attempt.expires_at),
    }


def _attempt_from(data: Any) -> Attempt:
    blob = data["blob"]
    if not isinstance(blob, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in blob.items()):
        raise TypeError("an attempt's blob maps strings to strings")
    created, expires = (utc(dt.datetime.fromisoformat(data[name])) for name in ("created_at", "expires_at"))
    return Attempt(check_attempt_key(data["key"]), str(data["address"]), str(data["pending_id"]), blob, created, expires)


def _unlink(path: Path) -> int:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return 0
    return 1
