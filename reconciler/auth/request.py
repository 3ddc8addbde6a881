"""One authorization request, and its sealed form while it waits for its user (a deferred authorization).

Owns: `AuthorizationRequest` — the link for the user and what its callback must match — and the one conversion
between it and the `PendingAuthorization` sealed with the credentials, both ways. Must not: do I/O, or hold a
secret anywhere but in `SecretStr`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pydantic import SecretStr

from reconciler.tokens.model import PendingAuthorization

__all__ = ["AuthorizationRequest"]


@dataclass(frozen=True)
class AuthorizationRequest:
    """One authorization to obtain: the URL for the user, and what the callback must match."""

    url: str
    state: SecretStr
    redirect_uri: str
    client_id: str
    scopes: tuple[str, ...]
    code_verifier: SecretStr | None = None

    @property
    def pkce(self) -> bool:
        return self.code_verifier is not None

    def sealed(self, created_at: dt.datetime, expires_at: dt.datetime) -> PendingAuthorization:
        """This request as a deferred authorization keeps it until `expires_at`."""
        kept = {name: getattr(self, name) for name in _KEPT}
        return PendingAuthorization(**kept, authorize_url=self.url, created_at=created_at, expires_at=expires_at)

    @classmethod
    def unsealed(cls, pending: PendingAuthorization) -> AuthorizationRequest:
        """The request a deferred authorization was issued as (to be completed as it was planned)."""
        kept = {name: getattr(pending, name) for name in _KEPT}
        return cls(**{**kept, "code_verifier": pending.code_verifier or None}, url=pending.authorize_url)


# What a deferred authorization keeps of its request under the same names (the link is its `authorize_url`).
_KEPT = ("state", "code_verifier", "redirect_uri", "client_id", "scopes")
