"""The planner: a pure function of (desired, recorded, now) -> Plan.

Owns: every rule that decides an action, one small function each (which declared attribute is an update and
which a re-authorization is `reconciler.declared`'s table; whether a pending authorization stands is
`reconciler.pending`'s), and the view of a recorded installation shown in plans.
Must not: read files, the environment, the network or the clock (`now` is passed in), nor import YAML, HTTP,
OAuth or CLI libraries. Output is sorted by address — partners before installations — and reproducible.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr

from reconciler.addresses import EVERYTHING, NO_GLOBS, Globs, Selection
from reconciler.catalog import AuthFlavour, Catalog, Connector
from reconciler.config.desired import (
    DesiredInstallation,
    DesiredState,
    same_origin,
    url_origin,
)
from reconciler.declared import (
    DeclaredInstallation,
    DeclaredPartner,
    Effect,
    api_url_of,
    declared_reasons,
    installation_view,
    partner_reasons,
    partner_view,
)
from reconciler.errors import PlanError
from reconciler.pending import link_goes_to, pending_matches
from reconciler.placed import account_change, placed_installation_change, placed_view
from reconciler.plan import NOT_TARGETED, Action, Plan, ResourceChange, StateRef
from reconciler.state.model import AccountRecord, Drift, InstallationRecord, PartnerRecord, StateDocument
from reconciler.tokens.scopes import missing_scopes

__all__ = [
    "make_plan",
    "record_view",
    "revocation_url",
    "revoke_in",
]



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
    refreshed: Mapping[str, Drift] | None = None,
) -> Plan:
    """Diff `desired` against `recorded` (None: no state yet) and return every address's action, restricted to
    `selection` (see `_select`).

    Deleting a protected installation raises `PlanError` unless an `allow_delete` glob matches its address.
    `refreshed` maps addresses to what a refresh just found at the provider (a revoked token, a rejected refresh
    token): those installations must re-authorize, as must any whose record carries such a finding.
    """
    records = recorded.resources if recorded is not None else {}
    recorded_partners = {a: r for a, r in records.items() if isinstance(r, PartnerRecord)}
    recorded_installations = {a: r for a, r in records.items() if isinstance(r, InstallationRecord)}
    recorded_accounts = {a: r for a, r in records.items() if isinstance(r, AccountRecord)}

    partners = [
        _partner_change(address, p.declared if (p := desired.partners.get(address)) else None, recorded_partners.get(address))
        for address in sorted(desired.partners.keys() | recorded_partners.keys())
    ]
    _check_partners_in_use(desired, partners)
    accounts = [account_change(a, desired.accounts.get(a), recorded_accounts.get(a), allow_delete, (refreshed or {}).get(a)) for a in sorted(desired.accounts.keys() | recorded_accounts.keys())]
    drift = refreshed or {}
    installations = [
        _installation_change(
            address,
            i.declared if (i := desired.installations.get(address)) else None,
            recorded_installations.get(address),
            now=now,
            catalog=catalog,
            drift=drift.get(address),
            partner=_partner_of_installation(desired, desired.installations.get(address)),
            secret=i.client_secret if (i := desired.installations.get(address)) else None,
            recorded_partner=_recorded_partner_of(recorded_partners, recorded_installations.get(address)),
        )
        for address in sorted(desired.installations.keys() | recorded_installations.keys())
    ]
    installations = _check_protected_deletes(desired, installations, recorded_installations, allow_delete)
    if replace:
        installations = [
            _replaced(change, replace, recorded_installations.get(change.address), catalog) for change in installations
        ]
    # Partners and accounts first, so installations find their partner and account; partner and account deletes
    # last, after the installations that may still need the partner's client (to be revoked) or live in the account.
    removed = [c for c in (*partners, *accounts) if c.action is Action.DELETE]
    kept = [c for c in (*partners, *accounts) if c.action is not Action.DELETE]
    changes = kept + installations + removed

    state = StateRef(state_location, recorded.lineage, recorded.serial) if recorded else StateRef(state_location)
    plan = Plan(environment=desired.environment, state=state, changes=tuple(changes))
    return plan if selection.everything else _select(plan, selection)


# -- views ------------------------------------------------------------------------------------------------------


def record_view(record: InstallationRecord) -> dict[str, Any]:
    """The attributes of a recorded installation shown in plans: as declared, and what the provider granted."""
    view = installation_view(record)
    view["granted_scopes"] = list(record.granted_scopes)
    view["status"] = record.status
    view["authorized_at"] = _iso(record.authorized_at)
    view["expires_at"] = _iso(record.expires_at)
    if record.pending is not None and record.pending.authorize_url:
        view["authorization_url"] = record.pending.authorize_url
    if record.pending is not None and record.pending.link:
        view["link"] = record.pending.link  # the service's signed link (it starts a fresh sign-in)
    return placed_view(record, view) if record.placement is not None else view


def _partner_of_installation(desired: DesiredState, installation: DesiredInstallation | None) -> DeclaredPartner | None:
    if installation is None:
        return None
    partner = desired.partners.get(f"partner.{installation.declared.partner}")
    return partner.declared if partner is not None else None


def _recorded_partner_of(
    partners: Mapping[str, PartnerRecord], installation: InstallationRecord | None
) -> PartnerRecord | None:
    return partners.get(f"partner.{installation.partner}") if installation is not None else None


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# -- partners ---------------------------------------------------------------------------------------------------


def _select(plan: Plan, selection: Selection) -> Plan:
    """The plan restricted to the selected addresses. A targeted installation keeps its partner's change, which it
    needs, and — when it moves to another partner — the in-place changes of the partners that declare a move to
    that one (`migrate_to` is recorded with a campaign's first wave, whichever partner the moved installation was
    recorded on); no other partner's change comes along (its other installations depend on it). Everything else
    (no-ops too, so that summaries count only what is selected) becomes a no-op "not targeted"."""
    chosen = {c.address for c in plan.changes if selection.chooses(c.address)}
    needed = {f"partner.{_partner_of(c)}" for c in plan.changes if c.address in chosen and _partner_of(c)}
    moved = [c for c in plan.changes if c.address in chosen and c.before is not None]
    arriving = {_partner_of(c) for c in moved if _partner_of(c) != _partner_of(c, before=True)} - {None}
    needed |= {c.address for c in plan.changes if c.kind == "partner" and c.action is Action.UPDATE
               and (c.after or {}).get("migrate_to") in arriving}
    needed |= {f"account.{c.tenant}" for c in plan.changes if c.address in chosen and c.kind == "installation"}
    chosen |= {a for a in needed if not selection.excludes.match(a)}
    changes = tuple(
        c
        if c.address in chosen
        else ResourceChange(c.address, Action.NOOP, (NOT_TARGETED,), c.before, c.before)
        for c in plan.changes
    )
    return Plan(plan.environment, plan.state, changes)


def _partner_of(change: ResourceChange, *, before: bool = False) -> str | None:
    """The partner an installation change declares (`before`: the one recorded)."""
    view = (change.before if before else change.after or change.before) or {}
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
    replaced = dataclasses.replace(change, action=Action.REAUTHORIZE, reasons=reasons, warnings=(), pending=False)
    return _reauthorized(replaced, have, catalog)


def _partner_change(address: str, want: DeclaredPartner | None, have: PartnerRecord | None) -> ResourceChange:
    if have is None:
        assert want is not None
        return ResourceChange(address, Action.CREATE, ("new partner",), None, partner_view(want), target=want)
    before = partner_view(have)
    if want is None:
        return ResourceChange(address, Action.DELETE, ("removed from configuration",), before, None)
    after = partner_view(want)
    reasons = partner_reasons(want, have)
    if reasons:
        return ResourceChange(address, Action.UPDATE, reasons, before, after, target=want)
    return ResourceChange(address, Action.NOOP, ("up to date",), before, after, target=want)


def _check_partners_in_use(desired: DesiredState, changes: list[ResourceChange]) -> None:
    """A partner leaving the configuration while a declared installation still uses it cannot be planned."""
    removed = {c.address.split(".", 1)[1] for c in changes if c.action is Action.DELETE}
    for installation in desired.installations.values():
        if installation.declared.partner in removed:
            raise PlanError(
                f"partner '{installation.declared.partner}' is removed while {installation.address} still uses it",
                hint="remove or move its installations in the same change",
            )


# -- installations ----------------------------------------------------------------------------------------------


def _installation_change(
    address: str,
    want: DeclaredInstallation | None,
    have: InstallationRecord | None,
    *,
    now: dt.datetime,
    catalog: Catalog,
    drift: Drift | None = None,
    partner: DeclaredPartner | None = None,
    recorded_partner: PartnerRecord | None = None,
    secret: SecretStr | None = None,
) -> ResourceChange:
    placed = placed_installation_change(
        address, want, have, record_view(have) if have is not None else None, now=now, drift=drift, secret=secret
    )
    if placed is not None:
        return placed
    if have is None:
        assert want is not None
        new = ("new installation: needs authorization",)
        return ResourceChange(address, Action.CREATE, new, None, installation_view(want), target=want)
    before = record_view(have)
    if want is None:
        reasons, warnings = _revocation(have, catalog, "its grant is revoked at the provider, then its tokens forgotten",
                                        "its tokens are forgotten, not revoked")
        return ResourceChange(address, Action.DELETE, ("removed from configuration", *reasons), before, None, warnings)
    after = installation_view(want)
    pending = have.pending
    authorize_url = partner.authorize_url if partner is not None else ""
    if pending is not None and pending_matches(want, have, authorize_url, recorded_partner):
        if now < pending.expires_at:
            reason = f"authorization pending since {_iso(pending.since)} (link valid until {_iso(pending.expires_at)})"
            return ResourceChange(address, Action.NOOP, (reason,), before, after, pending=True, target=want)
        reason = f"pending authorization expired on {_iso(pending.expires_at)}"
        return ResourceChange(address, Action.REAUTHORIZE, (reason,), before, after, target=want)
    link_moved = pending is not None and partner is not None and not link_goes_to(pending, authorize_url, recorded_partner)
    api = (api_url_of(have, recorded_partner), api_url_of(want, partner) or "")
    connector = catalog.connectors[want.connector]
    reauthorize = _reauthorize_reasons(want, have, connector, api, link_moved)
    drift = drift or have.drift
    if drift and have.status == "authorized":
        reauthorize = (*reauthorize, drift.words)
    update = tuple(declared_reasons(Effect.UPDATE, want, have))  # applied in place, verified with the tokens held
    if pending is not None and have.status == "authorized":  # one that still matches returned above
        update = (*update, "pending authorization withdrawn: it no longer matches the configuration")
    if reauthorize:
        change = ResourceChange(address, Action.REAUTHORIZE, reauthorize + update, before, after, target=want)
        return _reauthorized(change, have, catalog)
    warnings = _grant_warnings(want, have, connector)
    if update:
        return ResourceChange(address, Action.UPDATE, update, before, after, warnings, target=want)
    return ResourceChange(address, Action.NOOP, ("up to date",), before, after, warnings, target=want)


def _revocation(have: InstallationRecord, catalog: Catalog, revoked: str, forgotten: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What becomes of the grant `have` holds when its tokens are given up: a reason when its recorded endpoints
    let the client revoke it (`revocation_url`), else a warning saying where a person can. Nothing when no grant is
    held (a pending first authorization)."""
    if have.status != "authorized" or have.platform_holds_tokens:
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
    want: DeclaredInstallation,
    have: InstallationRecord,
    connector: Connector,
    api: tuple[str | None, str],
    link_moved: bool = False,
) -> tuple[str, ...]:
    """Why the recorded tokens no longer stand for what is declared (each forces a new consent): the declared
    attributes the tokens are bound to (`INSTALLATION_FIELDS`), a pending link that moved, a grant short of the
    declared scopes."""
    reasons = declared_reasons(Effect.REAUTHORIZE, want, have, judged=_api_reasons(have, *api))
    if have.status == "pending_authorization" and link_moved:
        reasons.append("authorization endpoint changed: the pending link is withdrawn")
    if have.status == "pending_authorization" and not reasons:
        reasons.append("pending authorization no longer matches the configuration")
    if have.status == "authorized" and set(want.scopes) == set(have.scopes):
        missing = missing_scopes(connector, want.scopes, have.granted_scopes)
        if missing:
            reasons.append("scopes not granted: " + ", ".join(missing))
    if want.auth != have.auth and want.auth in connector.auth:
        reasons.append(_requested_as(want, connector.auth[want.auth]))
    return tuple(reasons)


def _requested_as(want: DeclaredInstallation, flavour: AuthFlavour) -> str:
    """How the declared scopes are asked for in another flavour (a migration: Entra ID writes each with the Azure
    DevOps resource as prefix, and adds offline_access for a refresh token)."""
    asked = [flavour.scope_prefix + scope for scope in sorted(want.scopes)] + list(flavour.extra_scopes)
    return f"scopes requested in the {want.auth} form: {', '.join(asked)}"


def _api_reasons(have: InstallationRecord, recorded_api: str | None, declared_api: str) -> tuple[str, ...]:
    """The API the tokens were checked against (its recorded partner's standing in for a record from before it
    was kept) against the declared one."""
    if recorded_api is None and have.status == "authorized":
        return ("the API its tokens were checked against is not recorded",)
    if recorded_api is not None and declared_api != recorded_api:
        return (f"API endpoint changed: {recorded_api} -> {declared_api}",)
    return ()


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


def _grant_warnings(want: DeclaredInstallation, have: InstallationRecord, connector: Connector) -> tuple[str, ...]:
    """A grant wider than the declaration is reported, never planned (Entra keeps earlier consent)."""
    if have.status != "authorized":
        return ()
    declared = connector.closure(want.scopes)
    extra = sorted(s for s in have.granted_scopes if s not in declared)  # normalised when recorded
    return (f"consent still held: {', '.join(extra)}",) if extra else ()
