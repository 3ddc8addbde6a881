"""What the authorization service keeps beside the state, in the same backend: sign-in attempts in flight (so a
callback may reach any instance behind the public URL) and the audit log of token reads and completions.

Owns: the `ServiceStore` protocol and its records. An attempt is taken exactly once (a replayed callback finds
nothing); audit entries are append-only. Must not: hold a secret in the clear (an attempt's verifier is a sealed
blob; its key is a digest of the OAuth `state`, never the `state` itself), or know the configuration.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from reconciler.errors import StateError

__all__ = [
    "AUDIT_KINDS", "Attempt", "AuditEntry", "AuditKind", "ServiceStore", "audit_from_json", "audit_to_json",
    "check_attempt_key", "is_attempt_key", "stored_time", "utc",
]

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

    def expired(self, now: dt.datetime) -> bool:
        """Past its `expires_at` (the one rule every store applies when an attempt is taken or pruned)."""
        return now > self.expires_at


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


# An attempt's key names a file of the local store: a hex digest, so it can never name anything else.
_KEY = re.compile(r"^[0-9a-f]{16,128}$")


def is_attempt_key(key: str) -> bool:
    """`key` has the form of an attempt key (a lowercase hex digest of 16 to 128 digits)."""
    return isinstance(key, str) and _KEY.fullmatch(key) is not None


def check_attempt_key(key: str) -> str:
    """`key`, when it is an attempt key; otherwise a `StateError` (a bug in the caller: keys are digests)."""
    if not is_attempt_key(key):
        raise StateError("an attempt key must be a hex digest (16 to 128 lowercase hex digits)")
    return key


def utc(moment: dt.datetime) -> dt.datetime:
    """An aware time in UTC; a naive one is refused (`StateError`): it would be read back as another instant."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise StateError("a time kept beside the state must be timezone-aware (UTC)")
    return moment.astimezone(dt.UTC)


def stored_time(moment: dt.datetime) -> str:
    """A time as the stores write it: ISO 8601 in UTC with `Z`, to the microsecond (read back exactly)."""
    return utc(moment).isoformat(timespec="microseconds").replace("+00:00", "Z")


def audit_to_json(entry: AuditEntry) -> dict[str, str]:
    """An audit entry as JSON: `{"at", "kind", "actor", "address", "detail"}` (the local log's line and
    `reconciler audit --format json`'s entry)."""
    return {"at": stored_time(entry.at), "kind": entry.kind, "actor": entry.actor, "address": entry.address,
            "detail": entry.detail}


def audit_from_json(data: Any) -> AuditEntry:
    """The entry `audit_to_json` wrote; ValueError (or KeyError, TypeError) for anything else."""
    kind = data["kind"]
    if kind not in AUDIT_KINDS:
        raise ValueError(f"unknown audit kind {kind!r}")
    fields = [data[name] for name in ("actor", "address", "detail")]
    if not all(isinstance(value, str) for value in (data["at"], *fields)):
        raise TypeError("an audit entry holds strings")
    return AuditEntry(utc(dt.datetime.fromisoformat(data["at"])), kind, *fields)
