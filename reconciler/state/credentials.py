"""Sealed credentials: one record per address (tokens, and any pending authorization), each with a generation.

Owns: the plaintext shape of credentials (`Credentials`), the local store (`<env>.credentials/<address>.json`,
atomic per-record writes, compare-and-swap on `generation`), and the `Vault` that seals and opens records with
the state key, bound to lineage, environment, address and client id. A token refresh rewrites one record and
never the state document. Must not: put token material anywhere but inside a sealed blob.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import zlib
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from reconciler.crypto import StateKey, StateKeyError, associated_data, open_blob, seal
from reconciler.errors import StaleStateError, StateError
from reconciler.state.local import _atomic_write
from reconciler.statefiles import check_directory, open_regular, read_regular

__all__ = [
    "BLOB_PARTS",
    "LocalCredentialStore",
    "PendingAuthorization",
    "SealedRecord",
    "TokenSet",
    "Vault",
    "copy_verdict",
]


class _Sealed(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TokenSet(_Sealed):
    """Tokens as the provider issued them (normalised): never shown, never stored unsealed."""

    access_token: SecretStr
    refresh_token: SecretStr | None = None
    token_type: str = "Bearer"  # noqa: S105 - a scheme name, not a secret
    expires_at: dt.datetime | None = None
    scope: tuple[str, ...] = ()


class PendingAuthorization(_Sealed):
    """A deferred authorization waiting for its user: everything needed to complete it later."""

    state: SecretStr
    code_verifier: SecretStr | None = None
    authorize_url: str
    redirect_uri: str
    client_id: str
    scopes: tuple[str, ...]
    created_at: dt.datetime
    expires_at: dt.datetime


def _reveal(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_reveal(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


Blob = dict[str, str]


class SealedRecord(BaseModel):
    """One address's record as stored: a generation and up to two sealed blobs (current tokens, pending)."""

    model_config = ConfigDict(frozen=True)

    generation: int
    tokens: Blob | None = None
    pending: Blob | None = None
    staged: Blob | None = None  # new tokens written before the document that names their client (two-phase)


BLOB_PARTS = ("tokens", "pending", "staged")  # the blobs a record may hold; staged ones are sealed as tokens

Verdict = Literal["copy", "same", "newer", "diverged"]


def copy_verdict(pushed: SealedRecord, stored: SealedRecord | None) -> Verdict:
    """Whether a record copied between states may replace the one stored there: only when it is a later
    generation (`copy`). A stored record of a later generation is `newer` (its tokens rotated after the copy was
    taken: the copy's refresh token is spent), one of the same generation with other contents `diverged` (both
    sides moved on from one record): both are kept, since replacing them could lose the only working tokens."""
    if stored is None or stored.generation < pushed.generation:
        return "copy"
    if stored.generation > pushed.generation:
        return "newer"
    return "same" if stored == pushed else "diverged"


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


LOCK_STRIPES = 64
ROOM_FOR_ROTATION = 64 * 1024  # free bytes a local store needs before a refresh token is rotated


class LocalCredentialStore:
    """`<dir>/<env>.credentials/<address>.json`, one `SealedRecord` per address."""

    def __init__(self, directory: Path, environment: str) -> None:
        self.directory = Path(directory) / f"{environment}.credentials"
        self._checked = False

    def _path(self, address: str) -> Path:
        if not self._checked:  # once per store: a link here would put every record somewhere else
            check_directory(self.directory)
            self._checked = True
        return self.directory / f"{address}.json"

    def get(self, address: str) -> SealedRecord | None:
        path = self._path(address)
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
        with self._guard(address):
            current = self.get(address)
            have = current.generation if current else None
            if have != expected_generation:
                raise StaleStateError(f"credentials of {address} changed meanwhile (generation {have})")
            record = SealedRecord(generation=(have or 0) + 1, tokens=tokens, pending=pending, staged=staged)
            try:
                _atomic_write(self._path(address), record.model_dump_json(exclude_none=True).encode())
            except OSError as exc:
                raise StateError(
                    f"cannot write credentials of {address}: {exc.strerror}",
                    hint="they are as they were; free some disk space and run again",
                ) from None
            return record.generation

    def put_record(self, address: str, record: SealedRecord, *, expected_generation: int | None) -> None:
        """Store a record as it is (for `state push`), if the stored generation is still `expected_generation`
        (None: no record yet)."""
        with self._guard(address):
            current = self.get(address)
            have = current.generation if current else None
            if have != expected_generation:
                raise StaleStateError(f"credentials of {address} changed meanwhile (generation {have})")
            _atomic_write(self._path(address), record.model_dump_json(exclude_none=True).encode())

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
        if not self.directory.exists():
            return []
        return sorted(p.name.removesuffix(".json") for p in self.directory.glob("*.json") if not p.name.startswith("."))


class Vault:
    """Seals and opens credentials of one state (lineage + environment). Each blob is bound to its address and
    to the client id it was issued to, so tokens and a pending re-authorization for a new client coexist."""

    def __init__(self, store: CredentialStore, key: StateKey, *, lineage: str, environment: str) -> None:
        self.store, self.key, self.lineage, self.environment = store, key, lineage, environment

    def _aad(self, address: str, client_id: str, part: str) -> bytes:
        return associated_data(self.lineage, self.environment, address, client_id) + f"\n{part}".encode()

    def record(self, address: str) -> SealedRecord | None:
        return self.store.get(address)

    def seal_tokens(self, address: str, client_id: str, tokens: TokenSet) -> Blob:
        plaintext = json.dumps(_reveal(tokens.model_dump())).encode()
        return seal(self.key, plaintext, self._aad(address, client_id, "tokens"))

    def seal_pending(self, address: str, client_id: str, pending: PendingAuthorization) -> Blob:
        plaintext = json.dumps(_reveal(pending.model_dump())).encode()
        return seal(self.key, plaintext, self._aad(address, client_id, "pending"))

    def open_tokens(self, address: str, client_id: str, blob: Blob) -> TokenSet:
        plaintext = open_blob(self.key, blob, self._aad(address, client_id, "tokens"), f"tokens of {address}")
        return TokenSet.model_validate_json(plaintext)

    def open_pending(self, address: str, client_id: str, blob: Blob) -> PendingAuthorization:
        where = f"pending authorization of {address}"
        plaintext = open_blob(self.key, blob, self._aad(address, client_id, "pending"), where)
        return PendingAuthorization.model_validate_json(plaintext)

    def reseal(
        self, address: str, part: str, blob: Blob, *, client_ids: Collection[str], keys: Mapping[str, StateKey]
    ) -> Blob | None:
        """`blob` (one of `BLOB_PARTS`) under this vault's key: sealed anew from its plaintext, bound to the same
        address, client id and purpose, or as it is when already under this key. It is opened with the key of
        `keys` its key id names, for whichever of `client_ids` it was sealed for. None when none of them opens it:
        a blob no command can use (left by an interrupted step whose document write never happened). The
        plaintext exists only in memory."""
        key = keys[str(blob.get("kid"))]
        purpose = "pending" if part == "pending" else "tokens"
        for client_id in client_ids:
            aad = self._aad(address, client_id, purpose)
            try:
                plaintext = open_blob(key, blob, aad, f"{part} of {address}")
            except StateKeyError:
                continue
            return blob if key.key_id == self.key.key_id else seal(self.key, plaintext, aad)
        return None

    def put(
        self,
        address: str,
        tokens: Blob | None,
        pending: Blob | None,
        *,
        expected_generation: int | None,
        staged: Blob | None = None,
    ) -> int:
        return self.store.put(address, tokens, pending, expected_generation=expected_generation, staged=staged)

    def current_tokens(self, address: str, client_id: str, record: SealedRecord) -> TokenSet:
        """The tokens the document's client id opens: the current blob, or new ones staged just before a crash."""
        try:
            if record.tokens is None:
                raise StateKeyError(f"tokens of {address}: none recorded")
            return self.open_tokens(address, client_id, record.tokens)
        except StateKeyError:
            if record.staged is None:
                raise
            return self.open_tokens(address, client_id, record.staged)

    def forget(self, address: str) -> None:
        self.store.delete(address)

    def ensure_room_for_rotation(self, address: str) -> None:
        """Refuse to rotate a refresh token that could not be stored: the provider invalidates the old one, so on a
        full disk the installation would be lost, where not refreshing loses nothing."""
        free = getattr(self.store, "free_bytes", lambda: None)()
        if free is not None and free < ROOM_FOR_ROTATION:
            raise StateError(
                f"not refreshed: {free} bytes free beside the state, too little to store {address}'s rotated "
                "refresh token (its current one still works)",
                hint="free some disk space and run again",
            )
