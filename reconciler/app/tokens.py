"""Token access: a fresh access token for one installation, on demand (`reconciler token`, the service's token API)
and ahead of expiry (the service's background refresh, `refresh_ahead`).

Owns: which installations may hand out a token (authorized, not held by a platform, not marked for
re-authorization), single-flight refreshes (one in-process lock per address, then the state lock across processes,
the tokens read again under each before anything is sent to the provider), what a failed refresh records (the
drift `reconciler refresh` records, through its code), and the typed errors. Must not: print, know click or HTTP
serving, store audit entries itself (the caller's `on_read` does), or put a token in an error, a log or a repr.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import SecretStr

from reconciler.app.keys import no_note, state_key
from reconciler.app.statecache import CachedState
from reconciler.app.workspace import Workspace, open_backend
from reconciler.errors import ReconcilerError, StateLockedError
from reconciler.state.backend import StateBackend
from reconciler.state.model import InstallationRecord, PartnerRecord, StateDocument

if TYPE_CHECKING:  # the OAuth layer (httpx, authlib) loads with the reader, not with the CLI
    from reconciler.config import LoadedConfig
    from reconciler.crypto import StateKey
    from reconciler.refresh import Finding, PartnerBreaker
    from reconciler.tokens.custodian import Held, TokenCustodian
    from reconciler.tokens.model import TokenSet

__all__ = [
    "DEFAULT_WINDOW", "KEEPALIVE", "FreshToken", "NotAvailable", "OnRead", "RefreshFailed", "RefreshOutcome",
    "TokenReader", "UnknownInstallation", "WouldBlock", "refresh_ahead",
]

DEFAULT_WINDOW = dt.timedelta(minutes=2)
KEEPALIVE = dt.timedelta(days=7)  # Entra refresh tokens lapse after 90 days unused
# The shortest access-token life of the providers (Azure DevOps and Entra issue 60 to 90 minutes): a token's
# last refresh is taken as its expiry minus this, which can only make a keep-alive refresh come early.
ASSUMED_LIFETIME = dt.timedelta(hours=1)
_ALWAYS = dt.timedelta(days=36500)  # a refresh window every token is within (a refresh decided already)
LOCK_TIMEOUT = 10.0  # seconds a refresh waits for the state lock

OnRead = Callable[[str, str], None]  # (actor, address), after a token was handed out
Category = Literal["rejected", "partner_fault", "transient", "skipped"]
Outcome = Literal["refreshed", "rejected", "partner_fault", "transient", "skipped"]
_CATEGORY: dict[str, Category] = {
    "revoked": "rejected", "rejected": "rejected", "partner": "partner_fault", "skipped": "skipped",
}


class UnknownInstallation(ReconcilerError):
    """No installation has this address, in state or in the configuration."""


class NotAvailable(ReconcilerError):
    """The installation exists but has no token to hand out (pending, held by a platform, must re-authorize)."""


class WouldBlock(Exception):
    """A read asked not to block found that it would: the tokens are due for refresh, or state is not local."""


class RefreshFailed(ReconcilerError):
    """The tokens were due and could not be refreshed. `category`: rejected (marked for re-authorization),
    partner_fault (the partner's client credentials were refused: nothing marked), transient, skipped."""

    def __init__(self, address: str, category: Category, reason: str) -> None:
        super().__init__(f"{address}: the token could not be refreshed ({category.replace('_', ' ')}): {reason}")
        self.address, self.category, self.reason = address, category, reason


@dataclass(frozen=True)
class FreshToken:
    """An access token that does not expire within the window asked for, and the scope ids granted to it."""

    access_token: SecretStr
    expires_at: dt.datetime | None
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class RefreshOutcome:
    """What a background refresh did for one installation (`reason`: why it was due, or what failed)."""

    address: str
    tenant: str
    outcome: Outcome
    reason: str = ""


@dataclass(frozen=True)
class _Found:
    """An installation that may hand out tokens, as one read of state and of its credentials shows it."""

    doc: StateDocument
    record: InstallationRecord
    held: Held


class TokenReader:
    """Fresh access tokens of one state, for many threads. State is read on every call (an apply may change it
    while a service runs); the configuration is the one given (its client secrets refresh the tokens)."""

    def __init__(
        self,
        ws: Workspace,
        loaded: LoadedConfig,
        backend: StateBackend,
        *,
        on_read: OnRead | None = None,
        lock_timeout: float = LOCK_TIMEOUT,
    ) -> None:
        from reconciler.auth.transport import Http
        from reconciler.catalog.files import load_catalog

        self.ws, self.loaded, self.backend = ws, loaded, backend
        self.on_read, self.lock_timeout = on_read, lock_timeout
        self.store = backend.credential_store()
        self.state = CachedState(backend)  # never locked by the reader: a refresh locks a backend of its own
        self.catalog = load_catalog()
        self.http = Http(timeout=ws.http_timeout)
        self._key: StateKey | None = None
        self._guard = threading.Lock()
        self._flights: dict[str, threading.Lock] = {}

    def close(self) -> None:
        self.http.close()

    def fresh(
        self, address: str, *, window: dt.timedelta = DEFAULT_WINDOW, actor: str = "local", block: bool = True
    ) -> FreshToken:
        """The access token of `address`, refreshed first when it expires within `window` (once, however many
        callers ask at the same time; a refresh failing for a passing reason — the state locked by a long apply,
        the provider unavailable — leaves a token that has not expired yet in service). Raises
        `UnknownInstallation`, `NotAvailable` or `RefreshFailed`; with `block` False, `WouldBlock` instead of
        reading anything but local files, or of refreshing (an event loop answers at once what it can)."""
        from reconciler.tokens.custodian import refresh_due

        if not block and not self.state.local:
            raise WouldBlock
        found = self.found(address)
        held, now = found.held, self.ws.clock()
        if refresh_due(held.tokens, now, window):
            if not block:
                raise WouldBlock
            try:
                held = self.refreshed(address, window=window)[0].held
            except RefreshFailed as exc:  # the window is a margin: a token that still works serves meanwhile
                if exc.category != "transient" or not _works_now(held.tokens, now):
                    raise
        if self.on_read is not None:
            self.on_read(actor, address)
        return FreshToken(held.tokens.access_token, held.tokens.expires_at, found.record.granted_scopes)

    # -- reading -----------------------------------------------------------------------------------------------

    def document(self) -> StateDocument | None:
        return self.state.read()

    def found(self, address: str, doc: StateDocument | None = None) -> _Found:
        """`address` with its tokens, read now (from `doc` when given); the typed error when it has none to give."""
        doc = self.state.read_for(address) if doc is None else doc
        record = doc.resources.get(address) if doc is not None else None
        if doc is None or not isinstance(record, InstallationRecord):
            if address in self.loaded.desired.installations:
                raise NotAvailable(f"{address} is not authorized yet: apply the configuration first")
            raise UnknownInstallation(f"no installation {address} in state or in the configuration")
        _check_available(address, record, address in self.loaded.desired.installations)
        held = self.custodian(doc).held(address, record.client_id)
        if held is None:
            raise NotAvailable(f"{address}: no tokens are recorded; re-authorize: reconciler apply --replace {address}")
        return _Found(doc, record, held)

    def custodian(self, doc: StateDocument) -> TokenCustodian:
        from reconciler.tokens.custodian import TokenCustodian
        from reconciler.tokens.vault import Vault

        vault = Vault(self.store, self.key(), lineage=doc.lineage, environment=self.ws.environment_name)
        return TokenCustodian(vault)

    def key(self) -> StateKey:
        """The state key, found on first use (a service may start before anything is sealed)."""
        with self._guard:
            if self._key is None:
                key = state_key(self.ws, self.loaded.root, self.backend, on_key_created=no_note, create=False)
                if key is None:
                    raise NotAvailable("no tokens are recorded in this state (there is no state key)")
                self._key = key
            return self._key

    # -- refreshing --------------------------------------------------------------------------------------------

    def refreshed(
        self,
        address: str,
        *,
        window: dt.timedelta | None = None,
        seen: int | None = None,
        breaker: PartnerBreaker | None = None,
    ) -> tuple[_Found, bool]:
        """Refresh `address` once, single flight: due when it expires within `window`, or (`window` None) when its
        credentials are still at generation `seen`. The tokens are read again after each lock: when another
        thread or process refreshed them meanwhile, theirs are used. Returns them, and whether this call refreshed."""
        with self._flight(address):
            found = self.found(address)
            if not self._still_due(found, window, seen):
                return found, False
            backend = open_backend(self.ws, self.loaded.root)  # its own lock: a backend's lock is not shared
            try:
                with backend.lock("token refresh", timeout=self.lock_timeout):
                    found = self.found(address, backend.read())
                    if not self._still_due(found, window, seen):
                        return found, False
                    return self._rotate(backend, found, address, breaker), True
            except StateLockedError as exc:
                raise RefreshFailed(address, "transient", exc.message) from None

    def _still_due(self, found: _Found, window: dt.timedelta | None, seen: int | None) -> bool:
        from reconciler.tokens.custodian import refresh_due

        if window is None:
            return found.held.record.generation == seen
        return refresh_due(found.held.tokens, self.ws.clock(), window)

    def _rotate(self, backend: StateBackend, found: _Found, address: str, breaker: PartnerBreaker | None) -> _Found:
        """Refresh and check the tokens (with the state lock held) the way `reconciler refresh` does, recording
        what demands a re-authorization; the typed error for what failed."""
        from reconciler.app.refresh import record_checks, record_drift
        from reconciler.refresh import PartnerBreaker, RefreshSettings, check_one

        partner = found.doc.resources.get(f"partner.{found.record.partner}")
        finding = check_one(
            address, found.record, self.loaded.desired, self.custodian(found.doc), self.http.client(), self.catalog,
            self.ws.clock, RefreshSettings(window=_ALWAYS), breaker or PartnerBreaker(),
            recorded_partner=partner if isinstance(partner, PartnerRecord) else None,
        )
        if finding.drift is not None:
            record_drift(backend, [finding], self.ws.clock())
        record_checks(backend, [finding], self.ws.clock())
        if finding.outcome in ("ok", "refreshed"):
            return self.found(address, found.doc)
        after = self.found(address, found.doc) if finding.drift is None else found
        if finding.outcome == "transient" and after.held.record.generation != found.held.record.generation:
            return after  # rotated and stored; only the check after it failed
        raise RefreshFailed(address, _CATEGORY.get(finding.outcome, "transient"), _reason(finding))

    def _flight(self, address: str) -> threading.Lock:
        with self._guard:
            return self._flights.setdefault(address, threading.Lock())


def _check_available(address: str, record: InstallationRecord, declared: bool) -> None:
    """Refuse an installation whose tokens are not ours to hand out, saying where to turn."""
    if record.platform_holds_tokens and record.placement is not None:
        raise NotAvailable(
            f"{address}: tokens held by the Cyclr platform: call through its account connector in account "
            f"{record.placement.account} there"
        )
    if record.status == "pending_authorization":
        raise NotAvailable(f"{address}: authorization pending; complete it: reconciler authorize {address}")
    if record.drift is not None:
        raise NotAvailable(f"{address} must be re-authorized ({record.drift.words}): reconciler apply")
    if not declared:
        raise NotAvailable(f"{address} is no longer declared in the configuration (apply removes it)")


def _works_now(tokens: TokenSet, now: dt.datetime) -> bool:
    return tokens.expires_at is not None and tokens.expires_at > now


def _reason(finding: Finding) -> str:
    return finding.message or finding.outcome


# -- the background refresh ----------------------------------------------------------------------------------------


def due_reason(
    tokens: TokenSet, record: InstallationRecord, now: dt.datetime, window: dt.timedelta, keepalive: dt.timedelta
) -> str | None:
    """Why a background refresh is due (None: it is not). Ahead of expiry: an access token still valid that expires
    within `window`. Kept alive: tokens last refreshed (or authorized) more than `keepalive` ago — an expired access
    token is left to the next read, unless its refresh token has been idle that long."""
    expires = tokens.expires_at
    if expires is not None and now < expires <= now + window:
        return "expires within the window"
    used = [t for t in (record.authorized_at, expires - ASSUMED_LIFETIME if expires else None) if t is not None]
    if not used or max(used) <= now - keepalive:
        return "kept alive: idle refresh token"
    return None


def refresh_ahead(
    reader: TokenReader, *, now: dt.datetime, window: dt.timedelta, keepalive: dt.timedelta = KEEPALIVE
) -> list[RefreshOutcome]:
    """Refresh every authorized installation that is due (see `due_reason`) through the single-flight path, one
    after another (each holds the state lock briefly): an outcome for each one that was due, sorted by address."""
    from reconciler.refresh import PartnerBreaker

    doc = reader.document()
    if doc is None:
        return []
    breaker = PartnerBreaker()
    outcomes = []
    for address, record in sorted(doc.resources.items()):
        if isinstance(record, InstallationRecord) and record.status == "authorized" and not record.platform_holds_tokens:
            outcome = _ahead_one(reader, address, record, doc, now, window, keepalive, breaker)
            if outcome is not None:
                outcomes.append(outcome)
    return outcomes


def _ahead_one(
    reader: TokenReader,
    address: str,
    record: InstallationRecord,
    doc: StateDocument,
    now: dt.datetime,
    window: dt.timedelta,
    keepalive: dt.timedelta,
    breaker: PartnerBreaker,
) -> RefreshOutcome | None:
    outcome = RefreshOutcome(address, record.tenant, "skipped")
    try:
        found = reader.found(address, doc)
        reason = due_reason(found.held.tokens, record, now, window, keepalive)
        if reason is None:
            return None
        refreshed = reader.refreshed(address, seen=found.held.record.generation, breaker=breaker)[1]
    except RefreshFailed as exc:
        return dataclasses.replace(outcome, outcome=exc.category, reason=exc.reason)
    except NotAvailable as exc:
        return None if record.drift is not None else dataclasses.replace(outcome, reason=exc.message)
    except ReconcilerError as exc:
        return dataclasses.replace(outcome, outcome="transient", reason=exc.message)
    if not refreshed:
        return dataclasses.replace(outcome, reason="refreshed meanwhile by another reader")
    return dataclasses.replace(outcome, outcome="refreshed", reason=reason)


# -- `reconciler token` ----------------------------------------------------------------------------------------------


def run_token(ws: Workspace, address: str, *, window: dt.timedelta, actor: str) -> FreshToken:
    """`reconciler token ADDRESS`: the fresh access token of one installation, its read audited."""
    from reconciler.app.source import config_source

    loaded = config_source(ws).load()
    backend = open_backend(ws, loaded.root)
    reader = TokenReader(ws, loaded, backend, on_read=_audited(ws, backend))
    try:
        return reader.fresh(address, window=window, actor=actor)
    finally:
        reader.close()


def _audited(ws: Workspace, backend: StateBackend) -> OnRead:
    """The audit of token reads by the CLI: one entry per token handed out, in the state backend's audit log."""
    from reconciler.state.service_store import AuditEntry

    def on_read(actor: str, address: str) -> None:
        backend.service_store().append_audit(AuditEntry(at=ws.clock(), kind="token.read", actor=actor, address=address))

    return on_read
