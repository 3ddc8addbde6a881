"""What is kept beside the state, in the same backend, outside its versioned document: sign-in attempts in flight
(so a callback may reach any instance behind the public URL), the audit log of token reads and completions, and
the latest check of each installation (when `refresh`, the service or `token` last checked it, and what it found:
what `status` reports as last checked, and as `error` when that check failed for a reason that is not the
tenant's). Checks live here so that checking never moves the document's serial (saved plans stay valid).

Owns: the `ServiceStore` protocol and its records. An attempt is taken exactly once (a replayed callback finds
nothing); audit entries are append-only. Must not: hold a secret in the clear (an attempt's verifier is a sealed
blob; its key is a digest of the OAuth `state`, never the `state` itself), or know the configuration.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from reconciler.errors import StateError

__all__ = [
    "AUDIT_KINDS", "CHECK_OUTCOMES", "Attempt", "AuditEntry", "AuditKind", "CheckOutcome", "CheckResult",
    "ServiceStore", "audit_from_json", "audit_to_json", "check_attempt_key", "check_from_json", "check_to_json",
    "is_attempt_key", "latest_checks", "stored_time", "utc",
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


CheckOutcome = Literal["ok", "refreshed", "revoked", "rejected", "partner", "provider"]
CHECK_OUTCOMES: tuple[CheckOutcome, ...] = ("ok", "refreshed", "revoked", "rejected", "partner", "provider")


@dataclass(frozen=True)
class CheckResult:
    """One check of an installation's tokens at the provider (or of its account connector on the platform): when,
    and what was found. `partner` and `provider` are failures that are not the tenant's (a rejected client secret,
    no useful answer); `message` says why (never a secret)."""

    address: str
    at: dt.datetime
    outcome: CheckOutcome
    message: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome in ("partner", "provider")


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

    def record_checks(self, results: Sequence[CheckResult]) -> None:
        """Keep each result as its address's latest check (an earlier one than the one kept is ignored)."""

    def checks(self) -> dict[str, CheckResult]:
        """The latest check of every address checked."""


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


def check_to_json(result: CheckResult) -> dict[str, str]:
    """A check as the local store's line: `{"address", "at", "outcome", "message"}`."""
    return {"address": result.address, "at": stored_time(result.at), "outcome": result.outcome,
            "message": result.message}


def check_from_json(data: Any) -> CheckResult:
    """The check `check_to_json` wrote; ValueError (or KeyError, TypeError) for anything else."""
    outcome = data["outcome"]
    if outcome not in CHECK_OUTCOMES:
        raise ValueError(f"unknown check outcome {outcome!r}")
    if not all(isinstance(data[name], str) for name in ("address", "at", "message")):
        raise TypeError("a check holds strings")
    return CheckResult(data["address"], utc(dt.datetime.fromisoformat(data["at"])), outcome, data["message"])


def latest_checks(results: Iterable[CheckResult]) -> dict[str, CheckResult]:
    """The latest result per address (of two at the same instant, the later one given)."""
    latest: dict[str, CheckResult] = {}
    for result in results:
        kept = latest.get(result.address)
        if kept is None or result.at >= kept.at:
            latest[result.address] = result
    return latest
