"""Token material and its sealed form: `TokenSet` and `PendingAuthorization` (plaintext, only ever in memory) and
`SealedRecord` (one address's generation and sealed blobs, as stored).

Owns: the plaintext shapes and their serialisation for sealing, what opened tokens say about their own lifetime
without their secrets (`TokenTimes`), the record format (unchanged on disk and in PostgreSQL), the blobs a record
may hold, and whether a record copied between states may replace another.
Must not: seal, store or send anything; show a secret value (they are `SecretStr` until sealed).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, SecretStr

__all__ = [
    "BLOB_PARTS",
    "Blob",
    "PendingAuthorization",
    "SealedRecord",
    "TokenSet",
    "TokenTimes",
    "Verdict",
    "copy_verdict",
    "plaintext",
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
    # When the refresh token was issued (None: before this was kept): its age against the provider's lifetime.
    refresh_issued_at: dt.datetime | None = None


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


class TokenTimes(NamedTuple):
    """What opened tokens say about their lifetime, and nothing secret: the access token's expiry, whether a
    refresh token exists, and when it was issued (None: not known)."""

    expires_at: dt.datetime | None
    refreshable: bool
    refresh_issued_at: dt.datetime | None


def plaintext(value: TokenSet | PendingAuthorization) -> bytes:
    """What is sealed: the model as JSON with its secrets revealed (only ever passed straight to `seal`)."""
    return json.dumps(_reveal(value.model_dump())).encode()


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
