"""`reconciler refresh` and `plan --refresh`: refresh expiring tokens, check every authorized installation, and
record what was found or plan with it.

Owns: the wiring of a refresh run (lock, key, vault, transport) and writing the drift it found into the records.
Must not: print, prompt, read the clock or the environment itself, or know about click.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reconciler.app.keys import no_note, state_key
from reconciler.app.planning import PlanResult, plan_of, plan_warnings
from reconciler.app.request import PlanScope
from reconciler.app.source import config_source
from reconciler.app.workspace import Workspace, open_backend
from reconciler.catalog.files import load_catalog
from reconciler.config import LoadedConfig
from reconciler.errors import ReconcilerError
from reconciler.render.document import to_document
from reconciler.state.backend import StateBackend
from reconciler.state.model import InstallationRecord, StateDocument
from reconciler.state.service_store import CheckOutcome, CheckResult

if TYPE_CHECKING:  # the OAuth layer (httpx, authlib) loads only when a refresh runs
    from reconciler.auth.transport import Http
    from reconciler.config.desired import DesiredState
    from reconciler.platform_refresh import PlatformRefresh
    from reconciler.refresh import Finding, RefreshSettings
    from reconciler.tokens.model import TokenSet
    from reconciler.tokens.vault import Vault

__all__ = ["RefreshOutcome", "record_drift", "run_refresh"]


@dataclass
class RefreshOutcome:
    findings: list[Finding]
    plan: PlanResult | None = None
    recorded: int = 0  # records whose drift changed in state


def run_refresh(
    ws: Workspace,
    *,
    scope: PlanScope,
    settings: RefreshSettings,
    progress: Callable[[int, int], None],
    lock_timeout: float,
    record: bool,
) -> RefreshOutcome:
    """Refresh expiring tokens and check every authorized installation. With `record`, store what was found in
    state (`reconciler refresh`); otherwise plan with it (`plan --refresh`). Rotated tokens are stored either way."""

    loaded = config_source(ws).load()
    backend = open_backend(ws, loaded.root)
    with backend.lock("refresh" if record else "plan --refresh", timeout=lock_timeout):
        if record:
            doc = backend.read()
            findings, observed = refreshed(ws, loaded, backend, doc, scope, settings, progress)
            if doc is None or observed is None:
                return RefreshOutcome(findings)
            # What the platform shows first, then the drift found (a revoked token outranks "the platform has it")
            changed = _record_observed(backend, observed, findings) + record_drift(backend, findings, ws.clock())
            return RefreshOutcome(findings, recorded=changed)
        findings, result = refreshed_plan(ws, loaded, backend, scope, settings, progress)
        return RefreshOutcome(findings, plan=result)


def refreshed_plan(
    ws: Workspace,
    loaded: LoadedConfig,
    backend: StateBackend,
    scope: PlanScope,
    settings: RefreshSettings,
    progress: Callable[[int, int], None],
) -> tuple[list[Finding], PlanResult]:
    """Refresh, then plan with what was found (`plan --refresh`, `apply --refresh`). Call with the lock held."""
    from reconciler.platform_refresh import gone_accounts

    findings, observed = refreshed(ws, loaded, backend, backend.read(), scope, settings, progress)
    drift = {f.address: f.drift for f in findings if f.drift} | gone_accounts(findings)
    plan = plan_of(ws, loaded, backend, scope, observed, refreshed=drift)
    from reconciler.app.preflight import with_preflight

    warnings = plan_warnings(loaded, backend.read(), ws.clock(), backend) + [
        f"{f.address}: {f.message}" for f in findings if f.outcome in ("transient", "partner", "skipped")
    ]
    document = with_preflight(ws, loaded.desired, plan, to_document(plan, warnings=warnings))
    return findings, PlanResult(loaded, backend, plan, document)


def refreshed(
    ws: Workspace,
    loaded: LoadedConfig,
    backend: StateBackend,
    doc: StateDocument | None,
    scope: PlanScope,
    settings: RefreshSettings,
    progress: Callable[[int, int], None],
) -> tuple[list[Finding], StateDocument | None]:
    """Refresh expiring tokens, check every authorized installation, and read the platform's accounts and account
    connectors: the findings, and the document as the platform shows it (not written). Rotated tokens are stored."""
    from reconciler.auth.transport import Http
    from reconciler.refresh import refresh_all
    from reconciler.tokens.vault import Vault

    if doc is None:
        return [], None
    findings: list[Finding] = []
    observed = doc
    selected = set(scope.selection.pick(doc.resources))
    key = state_key(ws, loaded.root, backend, on_key_created=no_note, create=False)
    with Http(timeout=ws.http_timeout) as http:
        vault = None
        if key is not None:
            vault = Vault(backend.credential_store(), key, lineage=doc.lineage, environment=ws.environment_name)
            findings = refresh_all(
                doc, loaded.desired, vault, http, load_catalog(),
                now=ws.clock, settings=settings, addresses=selected, progress=progress,
            )
        if loaded.desired.platform is not None:
            seen = _observe(loaded.desired, http, doc, selected, settings, progress, vault, findings)
            findings, observed = _merged(findings + seen.findings), seen.observed
    record_checks(backend, findings, ws.clock())
    return findings, observed


def _merged(findings: list[Finding]) -> list[Finding]:
    """One finding per address: of the token check's and the platform's, the one that demands most (a drift, then
    any other than "ok"/"refreshed")."""
    def weight(finding: Finding) -> int:
        return 2 if finding.drift is not None else 0 if finding.outcome in ("ok", "refreshed") else 1

    best: dict[str, Finding] = {}
    for finding in findings:
        kept = best.get(finding.address)
        if kept is None or weight(finding) > weight(kept):
            best[finding.address] = finding
    return [best[address] for address in sorted(best)]


def _observe(
    desired: DesiredState,
    http: Http,
    doc: StateDocument,
    selected: set[str],
    refresh: RefreshSettings,
    progress: Callable[[int, int], None],
    vault: Vault | None,
    rotated: list[Finding],
) -> PlatformRefresh:
    """Hand the platform the tokens just rotated for installations whose tokens we hold, then read its accounts
    and account connectors."""
    from reconciler.app.platform import platform_api
    from reconciler.platform_refresh import PlatformRefresh, observe_platform, push_rotated
    from reconciler.tokens.custodian import TokenCustodian

    assert desired.platform is not None
    api = platform_api(desired.platform, http, desired.secret_values())
    pushed: list[Finding] = []
    if vault is not None:
        custodian = TokenCustodian(vault)

        def held(address: str, client_id: str) -> TokenSet | None:
            found = custodian.held(address, client_id)
            return found.tokens if found is not None else None

        pushed = push_rotated(doc, rotated, held, api)
    seen = observe_platform(doc, api, addresses=selected, parallelism=refresh.parallelism, progress=progress)
    return PlatformRefresh(pushed + seen.findings, seen.observed)


def _record_observed(backend: StateBackend, observed: StateDocument, findings: list[Finding]) -> int:
    """Write what the platform shows of the records it was asked about (a record gone from it is removed)."""
    doc = backend.read()
    if doc is None:
        return 0
    resources = dict(doc.resources)
    changed = 0
    for finding in findings:
        if finding.outcome not in ("ok", "gone", "edited", "deauthenticated") or finding.address not in resources:
            continue
        seen = observed.resources.get(finding.address)
        if finding.outcome == "gone" and finding.address.startswith("account."):
            seen = None  # an account the platform no longer has is no longer recorded
        if seen != resources[finding.address]:
            changed += 1
            if seen is None:
                del resources[finding.address]
            else:
                resources[finding.address] = seen
    if changed:
        backend.write(doc.with_resources(resources), expected_serial=doc.serial)
    return changed


def record_drift(backend: StateBackend, findings: list[Finding], now: dt.datetime) -> int:
    """Write what refresh found into the records (drift set, or cleared when the token works again)."""
    doc = backend.read()
    if doc is None:
        return 0
    resources = dict(doc.resources)
    changed = 0
    for finding in findings:
        record = resources.get(finding.address)
        if not isinstance(record, InstallationRecord) or finding.outcome not in ("ok", "refreshed", "revoked", "rejected"):
            continue
        if record.drift != finding.drift:
            changed += 1
            resources[finding.address] = record.model_copy(update={"drift": finding.drift, "checked_at": now})
    if changed:
        backend.write(doc.with_resources(resources), expected_serial=doc.serial)
    return changed


_CHECK_OUTCOME: dict[str, CheckOutcome] = {
    "ok": "ok", "refreshed": "refreshed", "revoked": "revoked", "rejected": "rejected", "partner": "partner",
    "transient": "provider", "edited": "ok", "deauthenticated": "revoked", "gone": "revoked",
}


def record_checks(backend: StateBackend, findings: list[Finding], now: dt.datetime) -> None:
    """Keep each installation's check beside the state (when, what was found; the document is not written): what
    `status` shows as last checked, and as `error` when the check failed for a reason that is not the tenant's."""
    results = []
    for finding in findings:
        outcome = _CHECK_OUTCOME.get(finding.outcome)
        if finding.outcome == "skipped" and finding.partner is not None:  # the partner's credentials were rejected
            outcome = "partner"
        if outcome is not None and finding.address.startswith("installation."):
            results.append(CheckResult(finding.address, now, outcome, finding.message))
    try:
        backend.service_store().record_checks(results)
    except ReconcilerError:
        pass  # only the checks' times are lost: what a check found that matters (drift) is in the document
