"""Refresh on a platform: read every account and account connector state records, and record what the platform
says now — an account or account connector gone (deleted in the console), a sign-in that lapsed or was completed
there, properties edited in the console.

Owns: reading with bounded concurrency (the API client honours Retry-After and retries transient failures), and
the document as the platform shows it (`observed`): the planner then plans what drifted as it plans anything else —
gone → installed again, not authenticated → signed in again, edited → updated back. Must not: print, decide plan
actions, or keep anything the platform returns but the facts above (an account connector's AuthValue holds tokens:
it is never read into a record).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from reconciler.auth.errors import ProviderError
from reconciler.platform_apply import auth_value
from reconciler.platforms.cyclr.api import CyclrApi
from reconciler.platforms.cyclr.connectors import SCOPES, slug
from reconciler.platforms.cyclr.estate import masked
from reconciler.refresh import Finding
from reconciler.state.model import AccountRecord, AnyRecord, Drift, InstallationRecord, StateDocument
from reconciler.tokens.model import TokenSet

__all__ = ["PlatformRefresh", "gone_accounts", "observe_platform", "push_rotated"]


@dataclass(frozen=True)
class PlatformRefresh:
    findings: list[Finding]
    observed: StateDocument  # the document as the platform shows it (same lineage and serial: never written as is)

    def gone_accounts(self) -> dict[str, Drift]:
        """The accounts the platform no longer has, as the planner takes them (created again, or forgotten)."""
        return gone_accounts(self.findings)


def gone_accounts(findings: list[Finding]) -> dict[str, Drift]:
    return {f.address: Drift.GONE for f in findings if f.outcome == "gone" and f.address.startswith("account.")}


def observe_platform(
    doc: StateDocument,
    api: CyclrApi,
    *,
    addresses: set[str] | None = None,
    parallelism: int = 10,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> PlatformRefresh:
    """Read the accounts and account connectors `doc` records (those in `addresses`, when given). A partner
    credential failure raises (nothing can be read); any other failure leaves that record as it was, reported."""
    resources: dict[str, AnyRecord] = dict(doc.resources)
    accounts = [(a, r) for a, r in resources.items() if isinstance(r, AccountRecord) and _chosen(a, addresses)]
    placed = [
        (a, r) for a, r in resources.items()
        if isinstance(r, InstallationRecord) and r.placement is not None and r.account_connector is not None
        and _chosen(a, addresses)
    ]
    total, done, lock = len(accounts) + len(placed), [0], threading.Lock()

    def counted(read: Callable[[Any], tuple[Finding, AnyRecord | None]]) -> Callable[[Any], tuple[Finding, AnyRecord | None]]:
        def wrapped(item: Any) -> tuple[Finding, AnyRecord | None]:
            try:
                return read(item)
            finally:
                with lock:
                    done[0] += 1
                    progress(done[0], total)

        return wrapped

    progress(0, total)
    findings: list[Finding] = []
    with ThreadPoolExecutor(max_workers=max(1, parallelism)) as pool:
        gone: set[str] = set()  # ids of accounts gone from the platform (their records stay: the plan says so)
        for finding, record in pool.map(counted(lambda item: _account(api, *item)), accounts):
            findings.append(finding)
            _put(resources, finding.address, record)
            if finding.outcome == "gone" and isinstance(record, AccountRecord):
                gone.add(record.id)
        for finding, record in pool.map(counted(lambda item: _account_connector(api, gone, *item)), placed):
            findings.append(finding)
            _put(resources, finding.address, record)
    observed = doc.model_copy(update={"resources": resources})
    return PlatformRefresh(sorted(findings, key=lambda f: f.address), observed)


def _chosen(address: str, addresses: set[str] | None) -> bool:
    return addresses is None or address in addresses


def _put(resources: dict[str, AnyRecord], address: str, record: AnyRecord | None) -> None:
    if record is None:
        resources.pop(address, None)
    else:
        resources[address] = record


def _account(api: CyclrApi, address: str, record: AccountRecord) -> tuple[Finding, AnyRecord | None]:
    try:
        found = api.get_account(record.id)
    except ProviderError as exc:
        if exc.category == "partner":
            raise
        return Finding(address, "transient", f"could not be read: {exc.message}"), record
    if found is None:  # kept as it is: the plan creates it again, or forgets it (`Drift.GONE`)
        return Finding(address, "gone", "the account is gone from the platform"), record
    name, timezone = str(found.get("Name", record.name)), found.get("Timezone")
    if record.timezone is None:  # not declared: whatever the platform defaults to (UTC) is no drift
        timezone = None
    seen = record.model_copy(update={"name": name, "timezone": str(timezone) if timezone else record.timezone})
    edited = seen != record
    return Finding(address, "edited" if edited else "ok", "edited on the platform" if edited else ""), seen


def _account_connector(
    api: CyclrApi, gone_accounts: set[str], address: str, record: InstallationRecord
) -> tuple[Finding, AnyRecord | None]:
    assert record.placement is not None and record.account_connector is not None
    account = record.placement.account
    if account in gone_accounts:
        return Finding(address, "gone", "its account is gone from the platform"), _missing(record)
    try:
        found = api.get_account_connector(account, record.account_connector.account_connector_id)
    except ProviderError as exc:
        if exc.category == "partner":
            raise
        return Finding(address, "transient", f"could not be read: {exc.message}"), record
    if found is None:
        return Finding(address, "gone", "the account connector is gone from the platform"), _missing(record)
    return _compared(address, record, found)


def _missing(record: InstallationRecord) -> InstallationRecord:
    """The record of an account connector that is gone (made only then: one copy less per record read)."""
    return record.model_copy(update={"account_connector": None})


def _compared(address: str, record: InstallationRecord, found: Mapping[str, Any]) -> tuple[Finding, InstallationRecord]:
    """The record as the platform shows it: authenticated or not, and the properties it keeps."""
    assert record.account_connector is not None
    authenticated = bool(found.get("Authenticated"))
    properties = {slug(str(p.get("Name", ""))): str(p.get("Value", "")) for p in found.get("Properties") or () if not masked(p)}
    parameters = {k: properties.get(slug(k), v) for k, v in record.parameters.items()}
    scopes = tuple(properties[SCOPES].split()) if SCOPES in properties and record.scopes else record.scopes
    update: dict[str, Any] = {
        "account_connector": record.account_connector.model_copy(update={"authenticated": authenticated}),
        "parameters": parameters,
        "scopes": scopes,
    }
    # Signed in through a link meanwhile. An account connector authenticated when its sign-in was deferred (new
    # scopes to consent to) still holds the old grant: that sign-in stays due.
    if authenticated and record.status == "pending_authorization" and not record.account_connector.authenticated:
        update.update(status="authorized", pending=None, drift=None)
    elif not authenticated and record.status == "authorized":
        update["drift"] = Drift.DEAUTHENTICATED
    elif authenticated and record.drift is Drift.DEAUTHENTICATED:
        update["drift"] = None
    seen = record.model_copy(update=update)
    if not authenticated and record.status == "authorized":
        return Finding(address, "deauthenticated", Drift.DEAUTHENTICATED.words), seen
    if parameters != record.parameters or scopes != record.scopes:
        return Finding(address, "edited", "properties edited on the platform"), seen
    return Finding(address, "ok"), seen


def push_rotated(
    doc: StateDocument, findings: list[Finding], held: Callable[[str, str], TokenSet | None], api: CyclrApi
) -> list[Finding]:
    """Hand the platform the tokens a refresh just rotated for installations whose tokens we hold
    (`auth_via: reconciler`): its copy of the old refresh token may no longer work. A failure is a finding."""
    out = []
    for finding in findings:
        record = doc.resources.get(finding.address)
        if finding.outcome != "refreshed" or not isinstance(record, InstallationRecord):
            continue
        installed, placement = record.account_connector, record.placement
        tokens = held(finding.address, record.client_id)
        if installed is None or placement is None or tokens is None:
            continue
        try:
            api.put_auth_value(placement.account, installed.account_connector_id, auth_value(tokens))
        except ProviderError as exc:
            out.append(Finding(finding.address, "transient", f"rotated tokens not handed to the platform: {exc.message}"))
    return out
