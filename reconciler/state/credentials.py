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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from reconciler.crypto import StateKey, associated_data, open_blob, seal
from reconciler.errors import StaleStateError, StateError
from reconciler.state.local import _atomic_write

__all__ = ["Credentials", "LocalCredentialStore", "PendingAuthorization", "TokenSet", "Vault"]


class _Sealed(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TokenSet(_Sealed):
    """Tokens as the provider issued them (normalised): never shown, never stored unsealed."""

    access_token: SecretStr
    refresh_token: SecretStr | None = None
    token_type: str = "Bearer"
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


class Credentials(_Sealed):
    tokens: TokenSet | None = None
    pending: PendingAuthorization | None = None


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


class LocalCredentialStore:
    """`<dir>/<env>.credentials/<address>.json`: {"generation": n, "sealed": {...}} per address."""

    def __init__(self, directory: Path, environment: str) -> None:
        self.directory = Path(directory) / f"{environment}.credentials"

    def _path(self, address: str) -> Path:
        return self.directory / f"{address}.json"

    def get(self, address: str) -> tuple[int, dict[str, str]] | None:
        try:
            data = json.loads(self._path(address).read_bytes())
            return int(data["generation"]), dict(data["sealed"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            raise StateError(f"{self._path(address)}: unreadable credentials record; it was not changed") from None

    @contextmanager
    def _guard(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def put(self, address: str, sealed: dict[str, str], *, expected_generation: int | None) -> int:
        """Write the record if its generation is still `expected_generation` (None: no record yet)."""
        with self._guard():
            current = self.get(address)
            have = current[0] if current else None
            if have != expected_generation:
                raise StaleStateError(f"credentials of {address} changed meanwhile (generation {have})")
            generation = (have or 0) + 1
            try:
                _atomic_write(self._path(address), json.dumps({"generation": generation, "sealed": sealed}).encode())
            except OSError as exc:
                raise StateError(f"cannot write credentials of {address}: {exc.strerror}") from None
            return generation

    def delete(self, address: str) -> None:
        with self._guard():
            self._path(address).unlink(missing_ok=True)

    def addresses(self) -> list[str]:
        if not self.directory.exists():
            return []
        return sorted(p.name.removesuffix(".json") for p in self.directory.glob("*.json"))


class Vault:
    """Seals and opens `Credentials` for one state (lineage + environment) with the state key."""

    def __init__(self, store: LocalCredentialStore, key: StateKey, *, lineage: str, environment: str) -> None:
        self.store, self.key, self.lineage, self.environment = store, key, lineage, environment

    def read(self, address: str, client_id: str) -> tuple[int, Credentials] | None:
        record = self.store.get(address)
        if record is None:
            return None
        generation, blob = record
        aad = associated_data(self.lineage, self.environment, address, client_id)
        plaintext = open_blob(self.key, blob, aad, f"credentials of {address}")
        try:
            return generation, Credentials.model_validate_json(plaintext)
        except ValidationError:
            raise StateError(f"credentials of {address}: unexpected content") from None

    def write(self, address: str, client_id: str, credentials: Credentials, *, expected_generation: int | None) -> int:
        aad = associated_data(self.lineage, self.environment, address, client_id)
        plaintext = json.dumps(_reveal(credentials.model_dump())).encode()
        return self.store.put(address, seal(self.key, plaintext, aad), expected_generation=expected_generation)

    def forget(self, address: str) -> None:
        self.store.delete(address)
