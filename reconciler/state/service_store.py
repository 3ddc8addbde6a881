"""What the authorization service keeps beside the state, in the same backend: sign-in attempts in flight (so a
callback may reach any instance behind the public URL) and the audit log of token reads and completions.

Owns: the `ServiceStore` protocol and its records. An attempt is taken exactly once (a replayed callback finds
nothing); audit entries are append-only. Must not: hold a secret in the clear (an attempt's verifier is a sealed
blob; its key is a digest of the OAuth `state`, never the `state` itself), or know the configuration.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["AUDIT_KINDS", "Attempt", "AuditEntry", "AuditKind", "ServiceStore"]

AuditKind = Literal["token.read", "authorization.completed", "authorization.failed"]
AUDIT_KINDS: tuple[AuditKind, ...] = ("token.read", "authorization.completed", "authorization.failed")


@dataclass(frozen=True)
class Attempt:
    """One opening of a link: the provider flow it started, until its callback (or `expires_at`)."""

    key: str  # digest of the attempt's OAuth `state` (hex)
    address: str
    pending_id: str  # the link it was started from
    blob: Mapping[str, str]  # the sealed request (state, PKCE verifier, redirect URI): see `reconciler.crypto.seal`
    created_at: dt.datetime
    expires_at: dt.datetime


@dataclass(frozen=True)
class AuditEntry:
    """Who did what to which installation, when. `actor`: an API key's name, or `cli:<user>@<host>`."""

    at: dt.datetime
    kind: AuditKind
    actor: str
    address: str
    detail: str = ""  # e.g. the granted scopes of a completion, or why it failed (never a secret)


class ServiceStore(Protocol):
    def put_attempt(self, attempt: Attempt) -> None:
        """Record an attempt (a new key; attempts past `expires_at` may be dropped at any time)."""

    def take_attempt(self, key: str, now: dt.datetime) -> Attempt | None:
        """The attempt recorded under `key`, removed: exactly one caller, in any process, gets it. None when there
        is none, or it expired before `now`."""

    def append_audit(self, entry: AuditEntry) -> None:
        """Add one entry to the audit log."""

    def audit(self, since: dt.datetime | None = None) -> list[AuditEntry]:
        """The audit log (entries at or after `since`), oldest first."""
