"""The planner: a pure function of (desired, recorded, now) -> Plan.

Owns: every rule that decides an action, one small function each, and the attribute views shown in plans.
Must not: read files, the environment, the network or the clock (`now` is passed in), nor import YAML, HTTP,
OAuth or CLI libraries. Output is sorted by address — partners before installations — and reproducible.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from reconciler.addresses import EVERYTHING, NO_GLOBS, Globs, Selection
from reconciler.catalog import AuthFlavour, Catalog, Connector
from reconciler.config.desired import (
    DesiredInstallation,
    DesiredPartner,
    DesiredState,
    same_origin,
    url_origin,
)
from reconciler.errors import PlanError
from reconciler.plan import NOT_TARGETED, Action, Plan, ResourceChange, StateRef
from reconciler.state.model import InstallationRecord, PartnerRecord, PendingRecord, StateDocument
from reconciler.tokens.scopes import missing_scopes

__all__ = [
    "PENDING_LIFETIME",
    "SENSITIVE",
    "installation_view",
    "make_plan",
    "partner_view",
    "pending_matches",
    "recorded_api_url",
    "revocation_url",
    "revoke_in",
    "target_digest",
]

SENSITIVE = "(sensitive)"
PENDING_LIFETIME = dt.timedelta(days=7)


def make_plan(
    desired: DesiredState,
    recorded: StateDocument | None,
    *,
    now: dt.datetime,
    catalog: Catalog,
    state_location: str = "state",
    selection: Selection = EVERYTHING,
    allow_delete: Globs = NO_GLOBS,
    replace: Globs = NO_GLOBS,
    refreshed: Mapping[str, str] | None = None,
) -> Plan:
    """Diff `desired` against `recorded` (None: no state yet) and return every address's action, restricted to
    `selection` (see `_select`).

    Deleting a protected installation raises `PlanError` unless an `allow_delete` glob matches its address.
    `refreshed` maps addresses to what a refresh just found at the provider ("token revoked", "refresh token
    rejected"): those installations must re-authorize, as must any whose record carries such a finding.
    """
    records = recorded.resources if recorded is not None else {}
    recorded_partners = {a: r for a, r in records.items() if isinstance(r, PartnerRecord)}
    recorded_installations = {a: r for a, r in records.items() if isinstance(r, InstallationRecord)}

    partners = [
        _partner_change(address, desired.partners.get(address), recorded_partners.get(address))
        for address in sorted(desired.partners.keys() | recorded_partners.keys())
    ]
    _check_partners_in_use(desired, partners)
    drift = refreshed or {}
    installations = [
        _installation_change(
            address,
            desired.installations.get(address),
            recorded_installations.get(address),
            now=now,
            catalog=catalog,
            drift=drift.get(address),
            partner=_partner_of_installation(desired, desired.installations.get(address)),
            recorded_partner=_recorded_partner_of(recorded_partners, recorded_installations.get(address)),
        )
        for address in sorted(desired.installations.keys() | recorded_installations.keys())
    ]
    installations = _check_protected_deletes(desired, installations, recorded_installations, allow_delete)
    if replace:
        installations = [
            _replaced(change, replace, recorded_installations.get(change.address), catalog) for change in installations
        ]
    # Partners first, so installations find their partner; partner deletes last, after the installations
    # that may still need the partner's client to be revoked.
    removed = [c for c in partners if c.action is Action.DELETE]
    changes = [c for c in partners if c.action is not Action.DELETE] + installations + removed

    state = StateRef(state_location, recorded.lineage, recorded.serial) if recorded else StateRef(state_location)
    plan = Plan(environment=desired.environment, state=state, changes=tuple(changes))
    return plan if selection.everything else _select(plan, selection)


# -- views ------------------------------------------------------------------------------------------------------


def partner_view(partner: DesiredPartner | PartnerRecord) -> dict[str, Any]:
    """The attributes of a partner shown in plans; the secret appears only as `(sensitive)` and its reference."""
    return {
        "connector": partner.connector,
        "auth": partner.auth,
        "tenant_id": partner.tenant_id,
        "client_id": partner.client_id,
        "client_secret": SENSITIVE if partner.client_secret_ref else None,
        "client_secret_ref": partner.client_secret_ref,
        "redirect_uri": partner.redirect_uri,
        "authorize_url": partner.authorize_url,
        "token_url": partner.token_url,
        "api_url": partner.api_url,
        "scopes": list(partner.scopes) if partner.scopes is not None else None,
        **({"revoke_url": partner.revoke_url} if partner.revoke_url else {}),  # shown only when declared
    }


def installation_view(installation: DesiredInstallation | InstallationRecord) -> dict[str, Any]:
    """The attributes of an installation shown in plans; recorded ones add what the provider granted."""
    if isinstance(installation, InstallationRecord):
        scopes = installation.requested_scopes
    else:
        scopes = installation.scopes
    view: dict[str, Any] = {
        "connector": installation.connector,
        "partner": installation.partner,
        "auth": installation.auth,
        "parameters": dict(installation.parameters),
        "scopes": list(scopes),
        "client_id": installation.client_id,
        "credentials_source": installation.credentials_source,
        "redirect_uri": installation.redirect_uri,
        "token_url": installation.token_url,
    }
    if installation.credentials_source == "installation":  # a partner's own secret is shown on the partner
        view["client_secret"] = SENSITIVE
        view["client_secret_ref"] = installation.client_secret_ref
    if installation.protected:  # shown only when set, so that unprotected plans read as before
        view["protected"] = True
    if installation.revoke_url:  # likewise: only where a revocation endpoint is declared
        view["revoke_url"] = installation.revoke_url
    if isinstance(installation, InstallationRecord):
        view["granted_scopes"] = list(installation.granted_scopes)
        view["status"] = installation.status
        view["authorized_at"] = _iso(installation.authorized_at)
        view["expires_at"] = _iso(installation.expires_at)
        if installation.pending is not None and installation.pending.authorize_url:
            view["authorization_url"] = installation.pending.authorize_url
    return view


def target_digest(installation: DesiredInstallation, *, version: int = 2) -> str:
    """A digest of what an authorization of `installation` is for: a pending authorization is still good exactly
    while the configuration keeps this digest (and its authorization link's endpoint, see `pending_matches`).
    Versioned, and independent of what plans display. Version 2 adds the API the tokens will be used at; version 1
    digests (recorded before) are read by `pending_matches` only."""
    target: dict[str, Any] = {
        "v": version,
        "connector": installation.connector,
        "auth": installation.auth,
        "client_id": installation.client_id,
        "redirect_uri": installation.redirect_uri,
        "token_url": installation.token_url,
        "scopes": sorted(installation.scopes),
        "parameters": dict(sorted(installation.parameters.items())),
    }
    if version >= 2:
        target["api_url"] = installation.api_url
    canonical = json.dumps(target, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def pending_matches(
    want: DesiredInstallation, have: InstallationRecord, authorize_url: str, recorded_partner: PartnerRecord | None
) -> bool:
    """Whether `have`'s pending authorization still stands for `want`: its digest is the one `want` has, and its
    link goes to the declared authorization endpoint. A version 1 digest (which does not cover the API) stands only
    for a record that is itself the pending one, whose recorded API then says where its tokens would go."""
    pending = have.pending
    if pending is None:
        return False
    if pending.target_digest != target_digest(want):
        legacy = pending.target_digest == target_digest(want, version=1)
        recorded_api = have.api_url or (recorded_partner.api_url if recorded_partner else None)
        if not (legacy and have.status == "pending_authorization" and recorded_api == want.api_url):
            return False
    return _link_goes_to(pending, authorize_url, recorded_partner)


def _link_goes_to(pending: PendingRecord, authorize_url: str, recorded_partner: PartnerRecord | None) -> bool:
    """Whether a pending authorization's link opens the declared authorization endpoint (scheme, host, path). A
    marker recorded without its link is judged by the recorded partner's endpoint."""
    if pending.authorize_url:
        link = urlsplit(pending.authorize_url)
        endpoint = urlsplit(authorize_url)
        return (link.scheme, link.netloc, link.path) == (endpoint.scheme, endpoint.netloc, endpoint.path)
    return recorded_partner is None or recorded_partner.authorize_url == authorize_url


def recorded_api_url(have: InstallationRecord, recorded_partner: PartnerRecord | None) -> str | None:
    """The API an installation's tokens were checked against: its record's, or (for a record from before it was
    kept) its recorded partner's; None when neither is known."""
    return have.api_url or (recorded_partner.api_url if recorded_partner is not None else None)


def _partner_of_installation(desired: DesiredState, installation: DesiredInstallation | None) -> DesiredPartner | None:
    return desired.partners.get(f"partner.{installation.partner}") if installation is not None else None


def _recorded_partner_of(
    partners: Mapping[str, PartnerRecord], installation: InstallationRecord | None
) -> PartnerRecord | None:
    return partners.get(f"partner.{installation.partner}") if installation is not None else None


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# -- partners ---------------------------------------------------------------------------------------------------


def _select(plan: Plan, selection: Selection) -> Plan:
    """The plan restricted to the selected addresses. A targeted installation keeps its partner's change, which it
    needs; everything else (no-ops too, so that summaries count only what is selected) becomes a no-op "not
    targeted"."""
    chosen = {c.address for c in plan.changes if selection.chooses(c.address)}
    needed = {f"partner.{_partner_of(c)}" for c in plan.changes if c.address in chosen and _partner_of(c)}
    chosen |= {a for a in needed if not selection.excludes.match(a)}
    changes = tuple(
        c
        if c.address in chosen
        else ResourceChange(c.address, Action.NOOP, (NOT_TARGETED,), c.before, c.before)
        for c in plan.changes
    )
    return Plan(plan.environment, plan.state, changes)


def _partner_of(change: ResourceChange) -> str | None:
    view = change.after or change.before or {}
    return view.get("partner") if change.kind == "installation" else None


def _replaced(
    change: ResourceChange, patterns: Globs, have: InstallationRecord | None, catalog: Catalog
) -> ResourceChange:
    """--replace: an existing installation is re-authorized even when nothing else asks for it."""
    if change.kind != "installation" or change.action not in (Action.NOOP, Action.UPDATE) or have is None:
        return change
    if not patterns.match(change.address):
        return change
    reasons = ("re-authorization requested (--replace)",) + (change.reasons if change.action is Action.UPDATE else ())
    return _reauthorized(ResourceChange(change.address, Action.REAUTHORIZE, reasons, change.before, change.after), have, catalog)


def _partner_change(address: str, want: DesiredPartner | None, have: PartnerRecord | None) -> ResourceChange:
    if have is None:
        assert want is not None
        return ResourceChange(address, Action.CREATE, ("new partner",), None, partner_view(want))
    before = partner_view(have)
    if want is None:
        return ResourceChange(address, Action.DELETE, ("removed from configuration",), before, None)
    after = partner_view(want)
    reasons = _partner_reasons(want, have)
    if reasons:
        return ResourceChange(address, Action.UPDATE, reasons, before, after)
    return ResourceChange(address, Action.NOOP, ("up to date",), before, after)


def _partner_reasons(want: DesiredPartner, have: PartnerRecord) -> tuple[str, ...]:
    reasons: list[str] = []
    for attribute in ("connector", "auth", "tenant_id", "client_id", "redirect_uri"):
        if getattr(want, attribute) != getattr(have, attribute):
            reasons.append(f"{attribute} changed")
    if want.client_secret_ref != have.client_secret_ref:
        reasons.append("client_secret reference changed")
    for attribute in ("authorize_url", "token_url", "api_url", "revoke_url"):
        if getattr(want, attribute) != getattr(have, attribute):
            reasons.append(f"endpoint {attribute} changed")
    reasons.extend(_set_reasons("registered scopes", have.scopes or (), want.scopes or ()))
    return tuple(reasons)


def _check_partners_in_use(desired: DesiredState, changes: list[ResourceChange]) -> None:
    """A partner leaving the configuration while a declared installation still uses it cannot be planned."""
    removed = {c.address.split(".", 1)[1] for c in changes if c.action is Action.DELETE}
    for installation in desired.installations.values():
        if installation.partner in removed:
            raise PlanError(
                f"partner '{installation.partner}' is removed while {installation.address} still uses it",
                hint="remove or move its installations in the same change",
            )


# -- installations ----------------------------------------------------------------------------------------------


def _installation_change(
    address: str,
    want: DesiredInstallation | None,
    have: InstallationRecord | None,
    *,
    now: dt.datetime,
    catalog: Catalog,
    drift: str | None = None,
    partner: DesiredPartner | None = None,
    recorded_partner: PartnerRecord | None = None,
) -> ResourceChange:
    if have is None:
        assert want is not None
        return ResourceChange(address, Action.CREATE, ("new installation: needs authorization",), None, installation_view(want))
    before = installation_view(have)
    if want is None:
        reasons, warnings = _revocation(have, catalog, "its grant is revoked at the provider, then its tokens forgotten",
                                        "its tokens are forgotten, not revoked")
        return ResourceChange(address, Action.DELETE, ("removed from configuration", *reasons), before, None, warnings)
    after = installation_view(want)
    connector = catalog.connectors[want.connector]
    pending = have.pending
    authorize_url = partner.authorize_url if partner is not None else ""
    if pending is not None and pending_matches(want, have, authorize_url, recorded_partner):
        if now < pending.expires_at:
            reason = f"authorization pending since {_iso(pending.since)} (link valid until {_iso(pending.expires_at)})"
            return ResourceChange(address, Action.NOOP, (reason,), before, after, pending=True)
        reason = f"pending authorization expired on {_iso(pending.expires_at)}"
        return ResourceChange(address, Action.REAUTHORIZE, (reason,), before, after)
    link_moved = pending is not None and partner is not None and not _link_goes_to(pending, authorize_url, recorded_partner)
    declared_api = want.api_url or (partner.api_url if partner is not None else "")
    recorded_api = recorded_api_url(have, recorded_partner)
    reauthorize = _reauthorize_reasons(want, have, connector, (recorded_api, declared_api), link_moved)
    drift = drift or have.drift
    if drift and have.status == "authorized":
        reauthorize = (*reauthorize, drift)
    update = _update_reasons(want, have)
    if pending is not None and have.status == "authorized":  # one that still matches returned above
        update = (*update, "pending authorization withdrawn: it no longer matches the configuration")
    if reauthorize:
        return _reauthorized(ResourceChange(address, Action.REAUTHORIZE, reauthorize + update, before, after), have, catalog)
    warnings = _grant_warnings(want, have, connector)
    if update:
        return ResourceChange(address, Action.UPDATE, update, before, after, warnings)
    return ResourceChange(address, Action.NOOP, ("up to date",), before, after, warnings)


def _revocation(have: InstallationRecord, catalog: Catalog, revoked: str, forgotten: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What becomes of the grant `have` holds when its tokens are given up: a reason when its recorded endpoints
    let the client revoke it (`revocation_url`), else a warning saying where a person can. Nothing when no grant is
    held (a pending first authorization)."""
    if have.status != "authorized":
        return (), ()
    if revocation_url(have, catalog) is not None:
        return (revoked,), ()
    return (), (f"{forgotten}: revoke in {revoke_in(have, catalog)}",)


def revocation_url(record: InstallationRecord, catalog: Catalog) -> str | None:
    """Where the grant `record` holds can be revoked, from what STATE recorded (never the current configuration):
    the recorded `revoke_url`, else the catalog flavour's `revoke_path` on the recorded token endpoint's origin;
    None: nowhere. Only ever a URL on the recorded token endpoint's origin (a token and the client secret go to the
    origin that issued the token and nowhere else): a recorded one elsewhere (an edited state) is not used."""
    if record.revoke_url is not None:
        return record.revoke_url if same_origin(record.revoke_url, record.token_url) else None
    flavour = _flavour(record, catalog)
    if flavour is None or flavour.revoke_path is None:
        return None
    return url_origin(record.token_url) + flavour.revoke_path


def revoke_in(record: InstallationRecord, catalog: Catalog) -> str:
    """Where a person revokes the grant `record` holds by hand (the catalog flavour's `revoke_in`)."""
    flavour = _flavour(record, catalog)
    return flavour.revoke_in if flavour is not None and flavour.revoke_in else "the provider's console"


def _flavour(record: InstallationRecord, catalog: Catalog) -> AuthFlavour | None:
    connector = catalog.connectors.get(record.connector)
    return connector.auth.get(record.auth) if connector is not None else None


def _reauthorized(change: ResourceChange, have: InstallationRecord, catalog: Catalog) -> ResourceChange:
    """--replace and every other re-authorization give up the old grant once the new one is in place."""
    reasons, warnings = _revocation(
        have, catalog, "the old grant is revoked once the new one is in place", "the old grant's tokens are forgotten, not revoked"
    )
    return dataclasses.replace(change, reasons=(*change.reasons, *reasons), warnings=(*change.warnings, *warnings))


def _reauthorize_reasons(
    want: DesiredInstallation,
    have: InstallationRecord,
    connector: Connector,
    api: tuple[str | None, str],
    link_moved: bool = False,
) -> tuple[str, ...]:
    """Why the recorded tokens no longer stand for what is declared (each forces a new consent). Tokens are bound
    to the client and the endpoints that issued and accept them: any of those moving is a re-authorization."""
    reasons: list[str] = []
    if want.connector != have.connector:
        reasons.append(f"connector changed: {have.connector} -> {want.connector}")
    if want.auth != have.auth:
        reasons.append(f"auth changed: {have.auth} -> {want.auth}")
    if want.client_id != have.client_id:
        source = f"partner {want.partner} " if want.credentials_source == "partner" else ""
        reasons.append(f"{source}client_id changed")
    if want.redirect_uri != have.redirect_uri:
        reasons.append("redirect_uri changed")
    if want.token_url != have.token_url:
        reasons.append(f"token endpoint changed: {have.token_url} -> {want.token_url}")
    recorded_api, declared_api = api
    if recorded_api is None and have.status == "authorized":
        reasons.append("the API its tokens were checked against is not recorded")
    elif recorded_api is not None and declared_api != recorded_api:
        reasons.append(f"API endpoint changed: {recorded_api} -> {declared_api}")
    reasons.extend(_set_reasons("scopes", have.requested_scopes, want.scopes))
    if have.status == "pending_authorization" and link_moved:
        reasons.append("authorization endpoint changed: the pending link is withdrawn")
    if have.status == "pending_authorization" and not reasons:
        reasons.append("pending authorization no longer matches the configuration")
    if have.status == "authorized" and set(want.scopes) == set(have.requested_scopes):
        missing = missing_scopes(connector, want.scopes, have.granted_scopes)
        if missing:
            reasons.append("scopes not granted: " + ", ".join(missing))
    return tuple(reasons)


def _update_reasons(want: DesiredInstallation, have: InstallationRecord) -> tuple[str, ...]:
    """Changes applied in place (verified against the provider), without a new consent."""
    reasons: list[str] = []
    if want.partner != have.partner:  # same client and endpoints (else a re-authorization): a rename
        reasons.append(f"partner changed: {have.partner} -> {want.partner}")
    for key in sorted(want.parameters.keys() | have.parameters.keys()):
        old, new = have.parameters.get(key), want.parameters.get(key)
        if old != new:
            reasons.append(f"{key} changed: {_quote(old)} -> {_quote(new)}")
    if want.client_secret_ref != have.client_secret_ref and want.credentials_source == "installation":
        reasons.append("client_secret reference changed")
    if want.credentials_source != have.credentials_source and want.client_id == have.client_id:
        reasons.append(f"credentials now from the {want.credentials_source}")
    if want.protected != have.protected:  # recorded, so that the protection of what state holds is known
        reasons.append("protection added" if want.protected else "protection removed")
    if want.token_url == have.token_url and want.revoke_url != have.revoke_url:  # where its grant is revoked
        reasons.append(f"revocation endpoint changed: {_quote(have.revoke_url)} -> {_quote(want.revoke_url)}")
    return tuple(reasons)


def _check_protected_deletes(
    desired: DesiredState,
    changes: list[ResourceChange],
    recorded: dict[str, InstallationRecord],
    allow_delete: Globs,
) -> list[ResourceChange]:
    """Deleting an installation that state records as protected (or whose tenant is still declared protected) is
    an error unless `allow_delete` names it; the allowed ones say so in their reasons."""
    out: list[ResourceChange] = []
    refused: list[str] = []
    for change in changes:
        record = recorded.get(change.address)
        protected = record is not None and (record.protected or record.tenant in desired.protected_tenants)
        if change.action is not Action.DELETE or not protected:
            out.append(change)
            continue
        allowed_by = allow_delete.first_match(change.address)
        if allowed_by is None:
            refused.append(change.address)
            continue
        reason = f"protected: deletion allowed by --allow-delete {allowed_by}"
        out.append(dataclasses.replace(change, reasons=(*change.reasons, reason)))
    if refused:
        noun = "installation" if len(refused) == 1 else "installations"
        raise PlanError(
            f"the plan would delete protected {noun}: {', '.join(refused)}",
            hint="pass --allow-delete ADDRESS for each (globs such as 'installation.acme.*' work), "
            "or apply protect: false first and delete in a later change",
        )
    return out


def _grant_warnings(want: DesiredInstallation, have: InstallationRecord, connector: Connector) -> tuple[str, ...]:
    """A grant wider than the declaration is reported, never planned (Entra keeps earlier consent)."""
    if have.status != "authorized":
        return ()
    declared = connector.closure(want.scopes)
    extra = sorted(s for s in have.granted_scopes if s not in declared)  # normalised when recorded
    return (f"consent still held: {', '.join(extra)}",) if extra else ()


def _quote(value: str | None) -> str:
    """A value inside a reason, quoted so that no name can pass for plan text."""
    return json.dumps(value) if value is not None else "(none)"


def _set_reasons(label: str, old: tuple[str, ...] | list[str], new: tuple[str, ...] | list[str]) -> list[str]:
    if old == new:
        return []
    added, removed = sorted(set(new) - set(old)), sorted(set(old) - set(new))
    out = []
    if added:
        out.append(f"{label} added: {', '.join(added)}")
    if removed:
        out.append(f"{label} removed: {', '.join(removed)}")
    return out
