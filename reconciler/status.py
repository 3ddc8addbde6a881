"""Status words: what is known about one recorded installation, derived from what state recorded.

Owns: the closed set of status words (healthy, expiring, needs-reauthorization, pending, error) and the rule that
derives one — with its reason, what to do next, the deadline that makes it `expiring`, and the time of the check
that established it — from a record (the drift `refresh` found, why its last check failed, pending
authorizations), its partner's facts (client secret expiry, refresh-token lifetimes) and its tokens' facts against
`now` and a window. Must not: read files, the network, the clock or the environment (everything is passed in), or
see token material (it is given expiries and whether a refresh token exists, never a token).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from reconciler.statuswords import STATUS_WORDS, StatusWord

if TYPE_CHECKING:
    from reconciler.state.model import InstallationRecord
    from reconciler.state.service_store import CheckResult

__all__ = [
    "DEFAULT_WINDOW",
    "STALE_AFTER",
    "STATUS_WORDS",
    "Deadline",
    "Migration",
    "PartnerFacts",
    "RefreshAge",
    "Status",
    "StatusReport",
    "StatusRow",
    "StatusWord",
    "TokenFacts",
    "installation_status",
    "migration_of",
]

DEFAULT_WINDOW = dt.timedelta(days=14)  # `expiring`: a person will be needed within this
STALE_AFTER = dt.timedelta(days=7)  # a check older than this is shown as stale
CLOCK_SKEW = dt.timedelta(minutes=5)  # a check dated further ahead than this is not believed


@dataclass(frozen=True)
class TokenFacts:
    """What the sealed credentials say, without their secrets. `error`: they could not be read (why)."""

    expires_at: dt.datetime | None = None
    refreshable: bool = True
    present: bool = True
    error: str | None = None
    refresh_issued_at: dt.datetime | None = None  # None: not known (sealed before it was kept)


@dataclass(frozen=True)
class PartnerFacts:
    """What an installation's partner (as recorded) and its auth flavour say about when a person is needed."""

    name: str
    client_secret_expires: dt.date | None = None  # as declared
    refresh_unused: dt.timedelta | None = None  # a refresh token lapses after this long unused (Entra: 90 days)
    refresh_fixed: dt.timedelta | None = None  # ... or this long after the sign-in, however used (Entra SPA: 24 h)
    migrate_to: str | None = None  # the partner its installations move to (a migration campaign)


@dataclass(frozen=True)
class RefreshAge:
    """The refresh token's age against its lifetime: issued when (None: not known), lapses when."""

    issued_at: dt.datetime | None
    lifetime: dt.timedelta
    lapses_at: dt.datetime | None
    fixed: bool  # counted from the sign-in (a refresh does not extend it)


@dataclass(frozen=True)
class Deadline:
    """The first moment a person is needed: what runs out (`client-secret`, `refresh-token`, `access-token`), when."""

    what: Literal["client-secret", "refresh-token", "access-token"]
    at: dt.datetime


@dataclass(frozen=True)
class Status:
    word: StatusWord
    reason: str
    checked_at: dt.datetime | None  # when the check that established it ran (None: never checked)
    expires_at: dt.datetime | None = None  # of the current access token, as last stored
    next_step: str = ""
    deadline: Deadline | None = None
    refresh: RefreshAge | None = None


@dataclass(frozen=True)
class Migration:
    """Where an installation stands in a migration campaign (`migrate_to`): `migrated` (on the partner the
    campaign moves to), `pending` (still on the partner it moves from) or `failed` (still there, and its sign-in
    lapsed or its tokens stopped working)."""

    source: str
    target: str
    progress: Literal["migrated", "pending", "failed"]


@dataclass(frozen=True)
class StatusRow:
    address: str
    record: InstallationRecord
    status: Status
    partner: PartnerFacts | None
    migration: Migration | None = None


def migration_of(
    record: InstallationRecord, status: Status, partners: dict[str, PartnerFacts], now: dt.datetime
) -> Migration | None:
    """`record`'s place in a migration campaign of its partner (None: its partner takes part in none)."""
    own = partners.get(record.partner)
    if own is not None and own.migrate_to is not None:
        lapsed = record.pending is not None and record.pending.expires_at <= now
        failed = lapsed or status.word in ("needs-reauthorization", "error")
        return Migration(record.partner, own.migrate_to, "failed" if failed else "pending")
    source = partners.get(record.migrated_from) if record.migrated_from is not None else None
    if source is None or source.migrate_to != record.partner:
        return None  # created on its partner, or moved by hand: no campaign's doing
    return Migration(source.name, record.partner, "migrated")


@dataclass
class StatusReport:
    """What `status` shows: when, for which environment, judged with which window; the rows shown (after the
    filters) and what limits what is known."""

    generated_at: dt.datetime
    environment: str
    window: dt.timedelta
    rows: list[StatusRow]
    state_exists: bool = True
    notes: list[str] = field(default_factory=list)
    total: int = 0  # installations in state, before the filters


def _when(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def installation_status(
    record: InstallationRecord,
    tokens: TokenFacts | None,
    *,
    now: dt.datetime,
    partner: PartnerFacts | None = None,
    window: dt.timedelta = DEFAULT_WINDOW,
    check: CheckResult | None = None,
) -> Status:
    """The status of `record`. `tokens` None: the credentials were not opened (no key), so the expiry recorded
    by the last apply stands in and the refresh token's age is not known. `check`: the latest check of it (kept
    beside the state), counted only when it ran after the last authorization. Drift found by `refresh` outranks
    everything but a missing grant: a pending re-authorization does not make a revoked token work; what a person
    must do outranks what will be due within `window`."""
    return _Assessment(record, tokens, now, partner, window, check).status()


class _Assessment:
    def __init__(
        self,
        record: InstallationRecord,
        tokens: TokenFacts | None,
        now: dt.datetime,
        partner: PartnerFacts | None,
        window: dt.timedelta,
        check: CheckResult | None,
    ) -> None:
        self.record, self.tokens, self.now, self.partner, self.window = record, tokens, now, partner, window
        since = record.verified_at or record.authorized_at
        counts = check is not None and (since is None or check.at >= since) and check.at <= now + CLOCK_SKEW
        self.check = check if counts else None  # one dated ahead of now is damaged (or a clock far off): ignored
        times = (record.verified_at, record.checked_at, self.check.at if self.check else None)
        self.checked = max((t for t in times if t is not None), default=None)
        # Tokens not opened, absent or unreadable: the expiry the last apply recorded stands in.
        opened = tokens if tokens is not None and tokens.present and tokens.error is None else None
        self.expires_at = opened.expires_at if opened is not None else record.expires_at
        self.refresh = self._refresh_age()

    def made(self, word: StatusWord, reason: str, next_step: str, *, checked: dt.datetime | None = None,
             deadline: Deadline | None = None) -> Status:
        return Status(word, reason, checked or self.checked, self.expires_at, next_step, deadline, self.refresh)

    def status(self) -> Status:
        record, tokens = self.record, self.tokens
        if record.status == "pending_authorization":
            since = record.pending.since if record.pending else None
            reason = "authorization pending" + (f" since {_when(since)}" if since else "")
            return Status("pending", reason, since, None, self._sign_in_step())
        if record.drift is not None:
            return self.made("needs-reauthorization", record.drift.words + self._pending_note(),
                             self._sign_in_step(), checked=record.checked_at)
        if record.platform_holds_tokens:  # no tokens of ours: what the platform last said stands
            installed = record.account_connector
            if installed is None or not installed.authenticated:
                words = "not found on the platform" if installed is None else "not authenticated on the platform"
                return self.made("needs-reauthorization", words, self._sign_in_step(), checked=record.checked_at)
            return self._working("signed in; the platform holds its tokens")
        if tokens is not None and tokens.error is not None:
            return self.made("error", tokens.error, "use the state key the tokens were sealed with", checked=self.now)
        if tokens is not None and not tokens.present:
            return self.made("needs-reauthorization", "no tokens are recorded" + self._pending_note(),
                             self._sign_in_step(), checked=self.now)
        refreshable = tokens is None or tokens.refreshable
        if not refreshable and self.expires_at is not None and self.expires_at <= self.now:
            reason = f"token expired at {_when(self.expires_at)} (no refresh token)"
            return self.made("needs-reauthorization", reason, self._sign_in_step())
        lapsed = self.refresh.lapses_at if self.refresh is not None else None
        if lapsed is not None and lapsed <= self.now:
            reason = f"refresh token lapsed at {_when(lapsed)} ({self._lifetime_words()})"
            return self.made("needs-reauthorization", reason, self._sign_in_step())
        return self._working(self._valid_words())

    def _working(self, healthy_reason: str) -> Status:
        """Tokens that work (as far as state knows): a failed last check, a pending re-authorization, a deadline
        within the window, or healthy."""
        record = self.record
        check = self.check
        if check is not None and check.failed:
            return self.made("error", f"last check failed: {check.message or check.outcome}", _ERROR_STEPS[check.outcome],
                             checked=check.at)
        secret = self._secret_expiry()
        if secret is not None and secret <= self.now:
            reason = f"the client secret of partner {record.partner} expired on {secret.date().isoformat()}"
            return self.made("error", reason, f"rotate the client secret of partner {record.partner} (tenants need "
                             "not sign in again), then update client_secret_expires")
        if record.pending is not None:
            reason = f"re-authorization pending since {_when(record.pending.since)}; the current tokens still work"
            return self.made("pending", reason, self._sign_in_step(), checked=record.pending.since)
        deadline = self._deadline()
        if deadline is not None and deadline.at - self.now <= self.window:
            return self.made("expiring", self._deadline_reason(deadline), self._deadline_step(deadline),
                             deadline=deadline)
        return self.made("healthy", healthy_reason, "", deadline=deadline)

    # -- facts ---------------------------------------------------------------------------------------------------

    def _refresh_age(self) -> RefreshAge | None:
        partner, tokens, record = self.partner, self.tokens, self.record
        if partner is None or record.platform_holds_tokens or tokens is None or not tokens.present:
            return None
        if not tokens.refreshable:
            return None
        if partner.refresh_fixed is not None:
            signed_in = record.authorized_at
            lapses = signed_in + partner.refresh_fixed if signed_in is not None else None
            return RefreshAge(signed_in, partner.refresh_fixed, lapses, fixed=True)
        if partner.refresh_unused is not None:
            issued = tokens.refresh_issued_at
            lapses = issued + partner.refresh_unused if issued is not None else None
            return RefreshAge(issued, partner.refresh_unused, lapses, fixed=False)
        return None

    def _secret_expiry(self) -> dt.datetime | None:
        expires = self.partner.client_secret_expires if self.partner is not None else None
        if expires is None or self.record.credentials_source != "partner":
            return None
        return _midnight(expires)

    def _deadline(self) -> Deadline | None:
        """The first thing that runs out and needs a person: the partner's client secret, the refresh token, or
        (without a refresh token) the access token."""
        found: list[Deadline] = []
        secret = self._secret_expiry()
        if secret is not None:
            found.append(Deadline("client-secret", secret))
        if self.refresh is not None and self.refresh.lapses_at is not None:
            found.append(Deadline("refresh-token", self.refresh.lapses_at))
        refreshable = self.tokens is None or self.tokens.refreshable
        if not refreshable and self.expires_at is not None and not self.record.platform_holds_tokens:
            found.append(Deadline("access-token", self.expires_at))
        return min(found, key=lambda d: d.at, default=None)

    def _lifetime_words(self) -> str:
        refresh = self.refresh
        assert refresh is not None
        span = _span(refresh.lifetime)
        return f"{span} after the sign-in" if refresh.fixed else f"{span} unused"

    def _deadline_reason(self, deadline: Deadline) -> str:
        at = _when(deadline.at)
        if deadline.what == "client-secret":
            return f"the client secret of partner {self.record.partner} expires on {deadline.at.date().isoformat()}"
        if deadline.what == "refresh-token":
            return f"refresh token lapses at {at} ({self._lifetime_words()})"
        return f"token expires at {at} and there is no refresh token"

    def _deadline_step(self, deadline: Deadline) -> str:
        at = _when(deadline.at)
        if deadline.what == "client-secret":
            return (f"rotate the client secret of partner {self.record.partner} before "
                    f"{deadline.at.date().isoformat()} and update client_secret_expires (tenants need not sign in)")
        if deadline.what == "refresh-token" and self.refresh is not None and not self.refresh.fixed:
            return f"refresh before {at} (`reconciler refresh`, or `reconciler serve` keeps it alive)"
        return f"the tenant signs in again before {at}: " + self._sign_in_step()

    def _valid_words(self) -> str:
        if self.expires_at is None:
            return "token has no recorded expiry"
        if self.expires_at <= self.now:
            return f"access token expired at {_when(self.expires_at)}; a refresh renews it"
        return f"token valid until {_when(self.expires_at)}"

    def _pending_note(self) -> str:
        pending = self.record.pending
        return f"; re-authorization pending since {_when(pending.since)}" if pending else ""

    def _sign_in_step(self) -> str:
        pending, address = self.record.pending, self.record.address
        if pending is not None and pending.expires_at > self.now:
            until = _when(pending.expires_at)
            if pending.link:
                return f"the tenant opens the sign-in link (valid until {until})"
            if pending.authorize_url:
                return f"the tenant opens the authorization link (valid until {until}), or `reconciler authorize {address}`"
            return f"`reconciler authorize {address}`"
        if pending is not None:
            return f"the link expired: `reconciler authorize --reissue {address}`"
        # The plan re-authorizes on its own only what state recorded as broken (drift, a platform's sign-in); a
        # lapse seen here from the tokens' facts alone plans nothing, so the step forces it.
        record = self.record
        if record.drift is not None or record.platform_holds_tokens:
            return "`reconciler apply` (--auth-mode defer gives the tenant a link)"
        return f"`reconciler apply --replace {address}` (--auth-mode defer gives the tenant a link)"


_ERROR_STEPS = {
    "partner": "fix the partner's client credentials (tenants need not sign in again), then `reconciler status --refresh`",
    "provider": "`reconciler status --refresh` once the provider answers again",
}


def _span(span: dt.timedelta) -> str:
    if span % dt.timedelta(days=1) == dt.timedelta() and span.days > 1:
        return f"{span.days} days"
    return f"{int(span.total_seconds() // 3600)} hours"
