"""Status words: what is known about one recorded installation, derived from what state recorded.

Owns: the closed set of status words (healthy, expiring, needs-reauthorization, pending, error) and the rule that
derives one, with its reason and the time of the check that established it, from a record (the drift `refresh`
found, pending authorizations) and the token expiry against `now`. Must not: read files, the network, the clock or
the environment (everything is passed in), or see token material (it is given the expiry and whether a refresh
token exists, never a token).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from reconciler.state.model import InstallationRecord

__all__ = ["EXPIRING_WINDOW", "STATUS_WORDS", "Status", "TokenFacts", "installation_status"]

StatusWord = Literal["healthy", "expiring", "needs-reauthorization", "pending", "error"]
STATUS_WORDS: tuple[StatusWord, ...] = ("healthy", "expiring", "needs-reauthorization", "pending", "error")
EXPIRING_WINDOW = dt.timedelta(minutes=15)  # as `refresh`: a token this close to its expiry is rotated
NO_REFRESH_WINDOW = dt.timedelta(days=7)  # without a refresh token, someone must sign in before expiry


@dataclass(frozen=True)
class TokenFacts:
    """What the sealed credentials say, without their secrets. `error`: they could not be read (why)."""

    expires_at: dt.datetime | None = None
    refreshable: bool = True
    present: bool = True
    error: str | None = None


@dataclass(frozen=True)
class Status:
    word: StatusWord
    reason: str
    checked_at: dt.datetime | None  # when the check that established it ran (None: never checked)
    expires_at: dt.datetime | None = None  # of the current access token, as last stored


def _when(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def installation_status(record: InstallationRecord, tokens: TokenFacts | None, *, now: dt.datetime) -> Status:
    """The status of `record`. `tokens` None: the credentials were not opened (no key), so the expiry recorded
    by the last apply stands in. Drift found by `refresh` outranks everything but a missing grant: a pending
    re-authorization does not make a revoked token work."""
    checked = max((t for t in (record.verified_at, record.checked_at) if t is not None), default=None)
    expires_at = tokens.expires_at if tokens is not None and tokens.present else record.expires_at
    if record.status == "pending_authorization":
        since = record.pending.since if record.pending else None
        return Status("pending", "authorization pending" + (f" since {_when(since)}" if since else ""), since)
    if record.drift is not None:
        reason = record.drift.words + _pending_note(record)
        return Status("needs-reauthorization", reason, record.checked_at, expires_at)
    if record.platform_holds_tokens:  # no tokens of ours: what the platform last said stands
        installed = record.account_connector
        if installed is None:
            return Status("needs-reauthorization", "not found on the platform", record.checked_at)
        if not installed.authenticated:
            return Status("needs-reauthorization", "not authenticated on the platform", record.checked_at)
        return Status("healthy", "signed in; the platform holds its tokens", checked)
    if tokens is not None and tokens.error is not None:
        return Status("error", tokens.error, now, expires_at)
    if tokens is not None and not tokens.present:
        return Status("needs-reauthorization", "no tokens are recorded" + _pending_note(record), now, None)
    if record.pending is not None:
        reason = f"re-authorization pending since {_when(record.pending.since)}; the current tokens still work"
        return Status("pending", reason, record.pending.since, expires_at)
    return _by_expiry(expires_at, tokens is None or tokens.refreshable, checked, now)


def _pending_note(record: InstallationRecord) -> str:
    return f"; re-authorization pending since {_when(record.pending.since)}" if record.pending else ""


def _by_expiry(expires_at: dt.datetime | None, refreshable: bool, checked: dt.datetime | None, now: dt.datetime) -> Status:
    if expires_at is None:
        return Status("healthy", "token has no recorded expiry", checked, None)
    if not refreshable:
        if expires_at <= now:
            return Status("needs-reauthorization", f"token expired at {_when(expires_at)} (no refresh token)", checked, expires_at)
        if expires_at <= now + NO_REFRESH_WINDOW:
            reason = f"token expires at {_when(expires_at)} and there is no refresh token: re-authorize before"
            return Status("expiring", reason, checked, expires_at)
    elif expires_at <= now + EXPIRING_WINDOW:
        verb = "expired" if expires_at <= now else "expires"
        reason = f"access token {verb} at {_when(expires_at)}; `reconciler refresh` renews it"
        return Status("expiring", reason, checked, expires_at)
    return Status("healthy", f"token valid until {_when(expires_at)}", checked, expires_at)
