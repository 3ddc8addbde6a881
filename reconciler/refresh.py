"""Refresh and drift: rotate tokens that are about to expire, check that each still reaches its organization and
project, and classify what failed — without ever asking thousands of users to sign in because of a partner fault.

Owns: one installation's refresh-and-check (`check_one`), bounded concurrency over many, retries (Retry-After on
429, back-off on 5xx and timeouts), and the per-partner circuit breaker. Rotated refresh tokens are stored at once
(credential records only: a refresh never rewrites the state document). Must not: print (progress goes through a
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
from typing import Any, Literal, Self

import httpx

from reconciler.auth.errors import ProviderError
from reconciler.auth.flows import (
    bound_settings,
    declared_binding,
    make_flow,
    recorded_binding,
    shared_tls_context,
)
from reconciler.auth.retry import RetryPolicy, retrying
from reconciler.auth.verify import verify_token
from reconciler.catalog import Catalog
from reconciler.config.desired import DesiredState
from reconciler.errors import ReconcilerError
from reconciler.state.model import InstallationRecord, PartnerRecord, StateDocument
from reconciler.tokens.model import TokenSet
from reconciler.tokens.vault import Vault

__all__ = ["DRIFT_REASONS", "Finding", "RefreshSettings", "refresh_all"]

Outcome = Literal["ok", "refreshed", "revoked", "rejected", "partner", "transient", "skipped"]
DRIFT_REASONS = {"revoked": "token revoked", "rejected": "refresh token rejected"}
PARTNER_BREAKER = 3  # identical partner failures before the rest of that partner's installations are skipped


@dataclass(frozen=True)
class Finding:
    address: str
    outcome: Outcome
    message: str = ""
    partner: str | None = None

    @property
    def drift(self) -> str | None:
        """The reason a plan gives for re-authorizing, when this finding demands it."""
        return DRIFT_REASONS.get(self.outcome)


@dataclass(frozen=True)
class RefreshSettings:
    window: dt.timedelta = dt.timedelta(minutes=15)
    parallelism: int = 10
    attempts: int = 4
    backoff: float = 0.5  # seconds, doubled after each transient failure
    max_wait: float = 30.0  # the longest Retry-After honoured


def _retrying(
    call: Callable[[], object],
    settings: RefreshSettings,
    sleep: Callable[[float], None],
    *,
    final: Callable[[ProviderError], bool] = lambda exc: False,
) -> object:
    policy = RetryPolicy(settings.attempts, settings.backoff, settings.max_wait)
    return retrying(call, policy, sleep, final=final)


class _Breaker:
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


class ThreadClients:
    """One HTTP client per worker thread, each keeping its own connection alive. A single shared client scans its
    whole connection pool on every request (httpcore), which at 32 threads costs more CPU than the refresh itself."""

    def __init__(self, **options: Any) -> None:
        self._options = {"verify": shared_tls_context(), **options}  # not a CA bundle load per client
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._lock = threading.Lock()

    def get(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(**self._options)
            with self._lock:
                self._clients.append(client)
        return client

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()


def refresh_all(
    doc: StateDocument,
    desired: DesiredState,
    vault: Vault,
    http: httpx.Client | ThreadClients,
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
        and address in desired.installations
        and (addresses is None or address in addresses)
    ]
    breaker = _Breaker()
    done = 0
    lock = threading.Lock()

    def one(item: tuple[str, InstallationRecord]) -> Finding:
        nonlocal done
        address, record = item
        try:
            client = http.get() if isinstance(http, ThreadClients) else http
            partner = doc.resources.get(f"partner.{record.partner}")
            recorded = partner if isinstance(partner, PartnerRecord) else None
            return check_one(
                address, record, desired, vault, client, catalog, now, settings, breaker, sleep, recorded_partner=recorded
            )
        finally:
            with lock:
                done += 1
                progress(done, len(todo))

    progress(0, len(todo))
    with ThreadPoolExecutor(max_workers=max(1, settings.parallelism)) as pool:
        return sorted(pool.map(one, todo), key=lambda f: f.address)


def check_one(
    address: str,
    record: InstallationRecord,
    desired: DesiredState,
    vault: Vault,
    http: httpx.Client,
    catalog: Catalog,
    now: Callable[[], dt.datetime],
    settings: RefreshSettings,
    breaker: _Breaker,
    sleep: Callable[[float], None],
    *,
    recorded_partner: PartnerRecord | None = None,
) -> Finding:
    """Refresh (when due) and verify one installation, against the endpoints state recorded for it only."""
    installation = desired.installations[address]
    partner = desired.partners[f"partner.{installation.partner}"]
    if breaker.open(partner.name):
        return Finding(address, "skipped", f"not checked: partner {partner.name}'s credentials were rejected", partner.name)
    binding = recorded_binding(record, recorded_partner)
    if binding is None or binding != declared_binding(installation, partner) or installation.client_secret is None:
        return Finding(address, "skipped", "the client or its endpoints changed: the plan re-authorizes it anyway")
    connector = catalog.connectors[installation.connector]
    flow = make_flow(bound_settings(binding, installation, partner, catalog), http, now)
    try:
        sealed = vault.record(address)
        if sealed is None or (sealed.tokens is None and sealed.staged is None):
            return Finding(address, "rejected", "no tokens are recorded")
        tokens = vault.current_tokens(address, record.client_id, sealed)
        outcome: Outcome = "ok"
        if tokens.expires_at is None or tokens.expires_at <= now() + settings.window:
            tokens = _rotate(address, record, flow, tokens, vault, sealed.pending, sealed.generation, settings, sleep)
            outcome = "refreshed"

        def verify() -> object:
            return verify_token(http, connector, binding.api_url, installation.parameters, record.granted_scopes, tokens)

        try:
            try:
                _retrying(verify, settings, sleep, final=lambda exc: exc.status == 203 and outcome == "ok")
            except ProviderError as exc:
                if exc.status != 203 or outcome != "ok" or tokens.refresh_token is None:
                    raise
                # A sign-in page: the provider expired the access token before its recorded expiry. Refresh once
                # and check again, as apply does, instead of retrying a token that stays expired.
                tokens = _rotate(address, record, flow, tokens, vault, sealed.pending, sealed.generation, settings, sleep)
                outcome = "refreshed"
                _retrying(verify, settings, sleep)
        except ProviderError as exc:
            if exc.status in (401, 403) and exc.category == "verify":
                return Finding(address, "revoked", exc.message)
            raise
        return Finding(address, outcome)
    except ProviderError as exc:
        if exc.category == "partner":
            breaker.trip(partner.name)
            return Finding(address, "partner", exc.message, partner.name)
        if exc.category == "grant":
            return Finding(address, "rejected", exc.message)
        return Finding(address, "transient", f"could not refresh: {exc.message}")
    except ReconcilerError as exc:
        return Finding(address, "transient", f"could not refresh: {exc.message}")


def _rotate(
    address: str,
    record: InstallationRecord,
    flow: object,
    tokens: TokenSet,
    vault: Vault,
    pending: object,
    generation: int,
    settings: RefreshSettings,
    sleep: Callable[[float], None],
) -> TokenSet:
    """Refresh (retrying transient failures) and store the rotated tokens before anything else happens."""
    vault.ensure_room_for_rotation(address)
    fresh = _retrying(lambda: flow.refresh(tokens), settings, sleep)  # type: ignore[attr-defined]
    assert isinstance(fresh, TokenSet)
    blob = vault.seal_tokens(address, record.client_id, fresh)
    for attempt in range(settings.attempts):
        try:
            vault.put(address, blob, pending, expected_generation=generation)  # type: ignore[arg-type]
            return fresh
        except ReconcilerError:
            if attempt == settings.attempts - 1:
                raise
            sleep(settings.backoff * 2**attempt)
    raise AssertionError("unreachable")
