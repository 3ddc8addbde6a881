"""Refresh and drift: rotate tokens that are about to expire, check that each still reaches its organization and
project, and classify what failed — without ever asking thousands of users to sign in because of a partner fault.

Owns: one installation's refresh-and-check (`check_one`: the custodian rotates and verifies, this module
classifies what failed), bounded concurrency over many, the retry budget (`RefreshSettings`), and the per-partner
circuit breaker. Rotated refresh tokens are stored at once by the custodian (credential records only: a refresh
never rewrites the state document). Must not: print (progress goes through a
callback), or decide plan actions (the planner turns findings into `reauthorize`), or send a token or the client
secret anywhere but the endpoints state recorded for the installation (an installation whose configuration moved
its client or endpoints is skipped: the plan re-authorizes it).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import httpx

from reconciler.auth.errors import ProviderError
from reconciler.auth.flows import bound_settings, declared_binding, make_flow, recorded_binding
from reconciler.auth.retry import RetryPolicy
from reconciler.auth.transport import Http
from reconciler.auth.verify import Verification, verify_token
from reconciler.catalog import Catalog
from reconciler.config.desired import DesiredInstallation, DesiredPartner, DesiredState
from reconciler.errors import ReconcilerError
from reconciler.state.model import Drift, InstallationRecord, PartnerRecord, StateDocument
from reconciler.tokens.custodian import RefreshRejected, TokenCustodian, refresh_due
from reconciler.tokens.model import TokenSet
from reconciler.tokens.vault import Vault

__all__ = ["Finding", "PartnerBreaker", "RefreshSettings", "check_one", "refresh_all"]

# "deauthenticated", "gone", "edited": what a platform says of an account or account connector (platform_refresh)
Outcome = Literal[
    "ok", "refreshed", "revoked", "rejected", "partner", "transient", "skipped", "deauthenticated", "gone", "edited"
]
_DRIFT = {"revoked": Drift.REVOKED, "rejected": Drift.REJECTED, "deauthenticated": Drift.DEAUTHENTICATED}
PARTNER_BREAKER = 3  # identical partner failures before the rest of that partner's installations are skipped


@dataclass(frozen=True)
class Finding:
    address: str
    outcome: Outcome
    message: str = ""
    partner: str | None = None

    @property
    def drift(self) -> Drift | None:
        """What state records of this finding, when it demands a re-authorization."""
        return _DRIFT.get(self.outcome)


@dataclass(frozen=True)
class RefreshSettings:
    window: dt.timedelta = dt.timedelta(minutes=15)
    parallelism: int = 10
    attempts: int = 4
    backoff: float = 0.5  # seconds, doubled after each transient failure
    max_wait: float = 30.0  # the longest Retry-After honoured


class PartnerBreaker:
    """Counts partner faults; after `PARTNER_BREAKER` the partner's remaining installations are not tried."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.faults: dict[str, int] = {}

    def open(self, partner: str) -> bool:
        with self.lock:
            return self.faults.get(partner, 0) >= PARTNER_BREAKER

    def trip(self, partner: str) -> None:
        with self.lock:
            self.faults[partner] = self.faults.get(partner, 0) + 1


def refresh_all(
    doc: StateDocument,
    desired: DesiredState,
    vault: Vault,
    http: Http,
    catalog: Catalog,
    *,
    now: Callable[[], dt.datetime],
    settings: RefreshSettings = RefreshSettings(),
    addresses: set[str] | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Finding]:
    """Refresh and check every authorized installation (or those in `addresses`) with bounded concurrency."""
    todo = [
        (address, record)
        for address, record in doc.resources.items()
        if isinstance(record, InstallationRecord)
        and record.status == "authorized"
        and not record.platform_holds_tokens  # the platform keeps those fresh (see platform_refresh)
        and address in desired.installations
        and (addresses is None or address in addresses)
    ]
    breaker = PartnerBreaker()
    custodian = TokenCustodian(
        vault, policy=RetryPolicy(settings.attempts, settings.backoff, settings.max_wait), sleep=sleep
    )
    done = 0
    lock = threading.Lock()

    def one(item: tuple[str, InstallationRecord]) -> Finding:
        nonlocal done
        address, record = item
        try:
            client = http.client()  # this worker thread's
            partner = doc.resources.get(f"partner.{record.partner}")
            recorded = partner if isinstance(partner, PartnerRecord) else None
            return check_one(
                address, record, desired, custodian, client, catalog, now, settings, breaker, recorded_partner=recorded
            )
        finally:
            with lock:
                done += 1
                progress(done, len(todo))

    progress(0, len(todo))
    with ThreadPoolExecutor(max_workers=max(1, settings.parallelism)) as pool:
        return sorted(pool.map(one, todo), key=lambda f: f.address)


def _waiting_for_its_wave(
    desired: DesiredState, installation: DesiredInstallation, record: InstallationRecord
) -> DesiredPartner | None:
    """The partner an installation is still recorded on while a migration campaign moves it away (its partner's
    `migrate_to`), when its tokens are that partner's (not its own credentials'): None otherwise."""
    if installation.moved_from is None or record.partner != installation.moved_from:
        return None
    source = desired.partners.get(f"partner.{record.partner}")
    if source is None or record.credentials_source != "partner" or source.declared.client_id != record.client_id:
        return None
    return source


def check_one(
    address: str,
    record: InstallationRecord,
    desired: DesiredState,
    custodian: TokenCustodian,
    http: httpx.Client,
    catalog: Catalog,
    now: Callable[[], dt.datetime],
    settings: RefreshSettings,
    breaker: PartnerBreaker,
    *,
    recorded_partner: PartnerRecord | None = None,
) -> Finding:
    """Refresh (when due) and verify one installation, against the endpoints state recorded for it only."""
    desired_installation = desired.installations[address]
    installation, secret = desired_installation.declared, desired_installation.client_secret
    partner = desired.partners[f"partner.{installation.partner}"].declared
    waiting = _waiting_for_its_wave(desired, desired_installation, record)
    if waiting is not None:  # checked, and kept fresh, with the partner it is recorded on until its wave moves it
        installation, partner, secret = record, waiting.declared, waiting.client_secret
    if breaker.open(partner.name):
        return Finding(address, "skipped", f"not checked: partner {partner.name}'s credentials were rejected", partner.name)
    binding = recorded_binding(record, recorded_partner)
    if binding is None or binding != declared_binding(installation, partner) or secret is None:
        return Finding(address, "skipped", "the client or its endpoints changed: the plan re-authorizes it anyway")
    connector = catalog.connectors[installation.connector]
    flow = make_flow(bound_settings(binding, installation, secret, partner, catalog), http, now)

    def check(tokens: TokenSet) -> Verification:
        return verify_token(http, connector, binding.api_url, installation.parameters, record.granted_scopes, tokens)

    try:
        held = custodian.held(address, record.client_id)
        if held is None:
            return Finding(address, "rejected", "no tokens are recorded")
        due = refresh_due(held.tokens, now(), settings.window)
        fresh = custodian.verify_fresh(address, record.client_id, held, flow.refresh, check, due=due)
        return Finding(address, "refreshed" if fresh.refreshed else "ok")
    except RefreshRejected as exc:  # refused after a refusal of the token itself: the grant was revoked
        if exc.after is not None and exc.after.status == 401:
            return Finding(address, "revoked", exc.after.message)
        return Finding(address, "rejected", exc.message)
    except ProviderError as exc:
        return _classified(address, partner.name, exc, breaker)
    except ReconcilerError as exc:
        return Finding(address, "transient", f"could not refresh: {exc.message}")


def _classified(address: str, partner: str, exc: ProviderError, breaker: PartnerBreaker) -> Finding:
    """The finding a provider failure makes: a token the check refuses is revoked, a refused client trips the
    partner's breaker, a refused refresh token is rejected, anything else is transient."""
    if exc.status in (401, 403) and exc.category == "verify":
        return Finding(address, "revoked", exc.message)
    if exc.category == "partner":
        breaker.trip(partner)
        return Finding(address, "partner", exc.message, partner)
    if exc.category == "grant":
        return Finding(address, "rejected", exc.message)
    return Finding(address, "transient", f"could not refresh: {exc.message}")
