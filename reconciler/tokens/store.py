"""Where sealed credential records live: the `CredentialStore` protocol (local files here, PostgreSQL rows in
`reconciler.state.postgres`) and the local store, `<dir>/<env>.credentials/<address>.json`.

Owns: atomic per-record writes, compare-and-swap on `generation` (serialised per record by striped lock files),
and copying a record between stores (`copy_record`: only a later generation replaces one). A token refresh
rewrites one record and never the state document. Must not: open or seal a blob (see `vault`), or know the state
document; open a record through a link (see `reconciler.statefiles`).
"""

from __future__ import annotations

import fcntl
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from reconciler.errors import StaleStateError, StateError
from reconciler.statefiles import atomic_write, check_directory, open_regular, read_regular
from reconciler.tokens.model import Blob, SealedRecord, Verdict, copy_verdict

__all__ = ["LOCK_STRIPES", "CredentialStore", "LocalCredentialStore", "WholeRecordWrites", "copy_record"]


class CredentialStore(Protocol):
    """Where sealed credential records live (local files or PostgreSQL rows)."""

    def get(self, address: str) -> SealedRecord | None: ...

    def put(
        self,
        address: str,
        tokens: Blob | None,
        pending: Blob | None,
        *,
        expected_generation: int | None,
        staged: Blob | None = None,
    ) -> int: ...

    def put_record(self, address: str, record: SealedRecord, *, expected_generation: int | None) -> None: ...

    def delete(self, address: str) -> None: ...

    def addresses(self) -> list[str]: ...


class WholeRecordWrites:
    """A store's `put` as the next generation of the record, written by its compare-and-swap `put_record`."""

    def put(
        self,
        address: str,
        tokens: Blob | None,
        pending: Blob | None,
        *,
        expected_generation: int | None,
        staged: Blob | None = None,
    ) -> int:
        """Replace the record if its generation is still `expected_generation` (None: no record yet)."""
        record = SealedRecord(generation=(expected_generation or 0) + 1, tokens=tokens, pending=pending, staged=staged)
        self.put_record(address, record, expected_generation=expected_generation)
        return record.generation

    def put_record(self, address: str, record: SealedRecord, *, expected_generation: int | None) -> None:
        raise NotImplementedError


LOCK_STRIPES = 64


class LocalCredentialStore(WholeRecordWrites):
    """`<dir>/<env>.credentials/<address>.json`, one `SealedRecord` per address."""

    def __init__(self, directory: Path, environment: str) -> None:
        self.directory = Path(directory) / f"{environment}.credentials"
        self._prefix = os.path.join(self.directory, "")  # reads name their file by string: no Path per record
        self._checked = False

    def _file(self, address: str) -> str:
        if not self._checked:  # once per store: a link here would put every record somewhere else
            check_directory(self.directory)
            self._checked = True
        return f"{self._prefix}{address}.json"

    def _path(self, address: str) -> Path:
        return Path(self._file(address))

    def get(self, address: str) -> SealedRecord | None:
        path = self._file(address)
        try:
            raw = read_regular(path)
            return None if raw is None else SealedRecord.model_validate_json(raw)
        except (OSError, ValidationError):
            raise StateError(f"{path}: unreadable credentials record; it was not changed") from None

    @contextmanager
    def _guard(self, address: str) -> Iterator[None]:
        """Serialises compare-and-swap on one record: one of `LOCK_STRIPES` lock files, chosen by address, so
        that concurrent refreshes of different installations do not wait on each other's fsync."""
        self._path(address)
        self.directory.mkdir(parents=True, exist_ok=True)
        stripe = zlib.crc32(address.encode()) % LOCK_STRIPES
        fd = open_regular(self.directory / f".lock-{stripe:02d}", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def put_record(self, address: str, record: SealedRecord, *, expected_generation: int | None) -> None:
        """Store `record` as it is (`state push` copies records so), if the stored generation is still
        `expected_generation` (None: no record yet). A failed write leaves the record as it was."""
        with self._guard(address):
            current = self.get(address)
            have = current.generation if current else None
            if have != expected_generation:
                raise StaleStateError(f"credentials of {address} changed meanwhile (generation {have})")
            try:
                atomic_write(self._path(address), record.model_dump_json(exclude_none=True).encode())
            except OSError as exc:
                raise StateError(
                    f"cannot write credentials of {address}: {exc.strerror}",
                    hint="they are as they were; free some disk space and run again",
                ) from None

    def delete(self, address: str) -> None:
        with self._guard(address):
            self._path(address).unlink(missing_ok=True)

    def free_bytes(self) -> int | None:
        """Free space where the records live (None: unknown)."""
        try:
            stat = os.statvfs(self.directory if self.directory.exists() else self.directory.parent)
        except OSError:
            return None
        return stat.f_bavail * stat.f_frsize

    def addresses(self) -> list[str]:
        check_directory(self.directory)
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(name.removesuffix(".json") for name in names if name.endswith(".json") and not name.startswith("."))


def copy_record(sink: CredentialStore, address: str, record: SealedRecord) -> Verdict:
    """Copy `record` into `sink` if it is a later generation than the one stored there (see `copy_verdict`),
    compare-and-swap: a refresh does not take the document lock, so when the stored record moves meanwhile the
    copy is decided again against its new generation. Returns the verdict it acted on."""
    while True:
        stored = sink.get(address)
        verdict = copy_verdict(record, stored)
        if verdict != "copy":
            return verdict
        try:
            sink.put_record(address, record, expected_generation=stored.generation if stored else None)
        except StaleStateError:
            continue
        return verdict
