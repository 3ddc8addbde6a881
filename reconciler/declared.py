"""What a partner or an installation should be: the one frozen description every layer shares.

Owns: `DeclaredPartner` and `DeclaredInstallation` (the declared attributes, secrets by reference only), their
addresses, the views plans show of them, the digest a pending authorization is bound to, and `INSTALLATION_FIELDS`
— the one table of which declared change is applied in place (update) and which needs a new consent
(reauthorize), with its reason wording. The configuration resolves one (plus the secret value), state records one
(plus what happened), a plan change carries the one it moves to, and the executor carries that out.
Must not: import YAML, HTTP, OAuth, state backends or configuration loading; hold a secret value.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from reconciler.placement import Placement

__all__ = [
    "INSTALLATION_FIELDS",
    "PARTNER_FIELDS",
    "SENSITIVE",
    "DeclaredInstallation",
    "DeclaredPartner",
    "Effect",
    "api_url_of",
    "FieldRule",
    "declared_reasons",
    "installation_address",
    "installation_view",
    "partner_address",
    "partner_reasons",
    "partner_view",
    "quote",
    "set_reasons",
    "target_digest",
]

SENSITIVE = "(sensitive)"


def partner_address(name: str) -> str:
    return f"partner.{name}"


def installation_address(tenant: str, name: str) -> str:
    return f"installation.{tenant}.{name}"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DeclaredPartner(_Frozen):
    """A partner entry with defaults filled in from the catalog and the platform settings. The client secret is
    named by reference only."""

    name: str
    connector: str
    auth: str
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret_ref: str | None = None
    redirect_uri: str
    authorize_url: str
    token_url: str
    api_url: str
    scopes: tuple[str, ...] | None = None
    revoke_url: str | None = None  # RFC 7009 revocation endpoint on the token_url's origin; None: none offered
    client_secret_expires: dt.date | None = None  # as declared: status and plan warn ahead of it
    app_type: Literal["web", "spa"] | None = None  # Entra only; spa: refresh tokens last 24 hours from sign-in
    migrate_to: str | None = None  # the partner its installations move to (a migration campaign)

    @property
    def address(self) -> str:
        return partner_address(self.name)


class DeclaredInstallation(_Frozen):
    """One installation with its effective client and endpoints (from its partner or its own). On a platform
    (`placement`), a connector the catalog does not describe has no partner, flavour, client or endpoints (empty
    strings); `credentials_source` "platform" means the client is the platform's own (Cyclr's Application Connector
    Library)."""

    tenant: str
    name: str
    connector: str
    partner: str
    auth: str
    parameters: dict[str, str]
    scopes: tuple[str, ...]
    client_id: str
    client_secret_ref: str
    credentials_source: Literal["partner", "installation", "platform"] = "partner"
    redirect_uri: str
    token_url: str
    # Where the tokens are used (verification, refresh checks): tokens never go anywhere else. On a record, None:
    # recorded before it was kept (its recorded partner's API stands in, see `api_url_of`).
    api_url: str | None = None
    protected: bool = False  # `protect: true` on the installation or its tenant: deleting it needs --allow-delete
    revoke_url: str | None = None  # its partner's revocation endpoint (same origin as token_url), if any
    placement: Placement | None = None  # None: our own state holds it (the local platform)

    @property
    def address(self) -> str:
        return installation_address(self.tenant, self.name)


def api_url_of(installation: DeclaredInstallation, partner: DeclaredPartner | None) -> str | None:
    """The API an installation's tokens are used at: its own, else its partner's (a record from before the API was
    kept names none: its recorded partner's stands in); None when neither is known."""
    return installation.api_url or (partner.api_url if partner is not None else None)


# -- views and digest -------------------------------------------------------------------------------------------


def partner_view(partner: DeclaredPartner) -> dict[str, Any]:
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
        **({"client_secret_expires": partner.client_secret_expires.isoformat()} if partner.client_secret_expires else {}),
        **({"app_type": partner.app_type} if partner.app_type else {}),
        **({"migrate_to": partner.migrate_to} if partner.migrate_to else {}),
    }


def installation_view(installation: DeclaredInstallation) -> dict[str, Any]:
    """The declared attributes of an installation shown in plans (a record's view adds what happened). Attributes
    an installation on a platform does not have (no partner, client or endpoints of its own) are left out."""
    view: dict[str, Any] = {
        "connector": installation.connector,
        "partner": installation.partner,
        "auth": installation.auth,
        "parameters": dict(installation.parameters),
        "scopes": list(installation.scopes),
        "client_id": installation.client_id,
        "credentials_source": installation.credentials_source,
        "redirect_uri": installation.redirect_uri,
        "token_url": installation.token_url,
    }
    placement = installation.placement
    if placement is not None:  # where the platform signs in, our own OAuth endpoints are not used
        ours = ("redirect_uri", "token_url") if placement.platform_holds_tokens else ()
        view = {k: v for k, v in view.items() if v != "" and k not in ours}
        view.update(platform=placement.platform, account=placement.account, auth_via=placement.auth_via)
        if placement.authentication is not None:
            view["authentication"] = placement.authentication
    if installation.credentials_source == "installation":  # a partner's own secret is shown on the partner
        view["client_secret"] = SENSITIVE
        view["client_secret_ref"] = installation.client_secret_ref
    if installation.protected:  # shown only when set, so that unprotected plans read as before
        view["protected"] = True
    if installation.revoke_url:  # likewise: only where a revocation endpoint is declared
        view["revoke_url"] = installation.revoke_url
    return view


def target_digest(installation: DeclaredInstallation, *, version: int = 2) -> str:
    """A digest of what an authorization of `installation` is for: a pending authorization is still good exactly
    while the configuration keeps this digest (and its authorization link's endpoint, see `reconciler.pending`).
    Versioned, and independent of what plans display. Version 2 adds the API the tokens will be used at; version 1
    digests (recorded before) are read by `reconciler.pending` only."""
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
        target["api_url"] = installation.api_url or ""
    if installation.placement is not None:  # absent for the local platform: earlier digests stay as they were
        target["placement"] = installation.placement.model_dump(mode="json")
    canonical = json.dumps(target, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


# -- what a declared change does --------------------------------------------------------------------------------


class Effect(Enum):
    """What a change of one declared attribute makes of a recorded installation."""

    UPDATE = "update"  # applied in place, verified with the tokens held
    REAUTHORIZE = "reauthorize"  # the tokens are bound to it: a new consent
    IDENTITY = "identity"  # part of the address: another value is another installation


Reasons = Callable[[DeclaredInstallation, DeclaredInstallation], Iterable[str]]  # (declared, recorded) -> wording


@dataclass(frozen=True, slots=True)
class FieldRule:
    """One declared attribute: its effect when it changes, why (display only), and — for an update — whether the
    declared value is recorded in place (else the recorded one is kept)."""

    field: str
    effect: Effect
    reasons: Reasons | None  # None: judged by the planner's binding rule (see `declared_reasons`)
    recorded_in_place: Callable[[DeclaredInstallation, DeclaredInstallation], bool] = lambda want, have: True


def quote(value: str | None) -> str:
    """A value inside a reason, quoted so that no name can pass for plan text."""
    return json.dumps(value) if value is not None else "(none)"


def set_reasons(label: str, old: Iterable[str], new: Iterable[str]) -> list[str]:
    old, new = tuple(old), tuple(new)
    if old == new:
        return []
    added, removed = sorted(set(new) - set(old)), sorted(set(old) - set(new))
    out = []
    if added:
        out.append(f"{label} added: {', '.join(added)}")
    if removed:
        out.append(f"{label} removed: {', '.join(removed)}")
    return out


def _changed(label: str, arrow: bool = True) -> Reasons:
    def reasons(want: DeclaredInstallation, have: DeclaredInstallation) -> Iterable[str]:
        old, new = getattr(have, label), getattr(want, label)
        if old == new:
            return ()
        return (f"{label} changed: {old} -> {new}",) if arrow else (f"{label} changed",)

    return reasons


def _client_id(want: DeclaredInstallation, have: DeclaredInstallation) -> Iterable[str]:
    if want.client_id == have.client_id:
        return ()
    source = f"partner {want.partner} " if want.credentials_source == "partner" else ""
    return (f"{source}client_id changed",)


def _token_url(want: DeclaredInstallation, have: DeclaredInstallation) -> Iterable[str]:
    changed = want.token_url != have.token_url
    return (f"token endpoint changed: {have.token_url} -> {want.token_url}",) if changed else ()


def _parameters(want: DeclaredInstallation, have: DeclaredInstallation) -> Iterable[str]:
    for key in sorted(want.parameters.keys() | have.parameters.keys()):
        old, new = have.parameters.get(key), want.parameters.get(key)
        if old != new:
            yield f"{key} changed: {quote(old)} -> {quote(new)}"


def _secret_ref(want: DeclaredInstallation, have: DeclaredInstallation) -> Iterable[str]:
    # a partner's own secret reference is the partner's change
    changed = want.client_secret_ref != have.client_secret_ref and want.credentials_source == "installation"
    return ("client_secret reference changed",) if changed else ()


def _credentials_source(want: DeclaredInstallation, have: DeclaredInstallation) -> Iterable[str]:
    changed = want.credentials_source != have.credentials_source and want.client_id == have.client_id
    return (f"credentials now from the {want.credentials_source}",) if changed else ()


def _placement(want: DeclaredInstallation, have: DeclaredInstallation) -> Iterable[str]:
    old, new = have.placement, want.placement
    if old == new:
        return ()
    if old is None or new is None:
        where = f"the {new.platform} platform" if new is not None else "local state"
        return (f"moves to {where}",)
    labels = ("platform", "account", "auth_via", "authentication")
    changed = [label for label in labels if getattr(old, label) != getattr(new, label)]
    return [f"{label} changed: {quote(getattr(old, label))} -> {quote(getattr(new, label))}" for label in changed]


def _protected(want: DeclaredInstallation, have: DeclaredInstallation) -> Iterable[str]:
    # recorded, so that the protection of what state holds is known
    if want.protected == have.protected:
        return ()
    return ("protection added" if want.protected else "protection removed",)


def _same_token_endpoint(want: DeclaredInstallation, have: DeclaredInstallation) -> bool:
    """A declared revocation endpoint is recorded only while the grant's token endpoint is still the declared one
    (the configuration validated it against that origin)."""
    return want.token_url == have.token_url


def _revoke_url(want: DeclaredInstallation, have: DeclaredInstallation) -> Iterable[str]:
    if not _same_token_endpoint(want, have) or want.revoke_url == have.revoke_url:
        return ()
    return (f"revocation endpoint changed: {quote(have.revoke_url)} -> {quote(want.revoke_url)}",)


# In reason order. Tokens are bound to the client and the endpoints that issued and accept them: any of those
# moving is a re-authorization; the rest is recorded in place.
INSTALLATION_FIELDS: tuple[FieldRule, ...] = (
    FieldRule("tenant", Effect.IDENTITY, None),
    FieldRule("name", Effect.IDENTITY, None),
    FieldRule("connector", Effect.REAUTHORIZE, _changed("connector")),
    FieldRule("auth", Effect.REAUTHORIZE, _changed("auth")),
    FieldRule("client_id", Effect.REAUTHORIZE, _client_id),
    FieldRule("redirect_uri", Effect.REAUTHORIZE, _changed("redirect_uri", arrow=False)),
    FieldRule("token_url", Effect.REAUTHORIZE, _token_url),
    FieldRule("api_url", Effect.REAUTHORIZE, None),  # the partner's API stands in for one not recorded
    FieldRule("scopes", Effect.REAUTHORIZE, lambda want, have: set_reasons("scopes", have.scopes, want.scopes)),
    FieldRule("placement", Effect.REAUTHORIZE, _placement),  # another account, or another party holding the tokens
    FieldRule("partner", Effect.UPDATE, _changed("partner")),  # same client and endpoints (else above): a rename
    FieldRule("parameters", Effect.UPDATE, _parameters),
    FieldRule("client_secret_ref", Effect.UPDATE, _secret_ref),
    FieldRule("credentials_source", Effect.UPDATE, _credentials_source),
    FieldRule("protected", Effect.UPDATE, _protected),
    FieldRule("revoke_url", Effect.UPDATE, _revoke_url, recorded_in_place=_same_token_endpoint),
)

_BY_EFFECT = {effect: tuple(rule for rule in INSTALLATION_FIELDS if rule.effect is effect) for effect in Effect}


def declared_reasons(
    effect: Effect, want: DeclaredInstallation, have: DeclaredInstallation, judged: Iterable[str] = ()
) -> list[str]:
    """Why `have` (recorded) differs from `want` (declared) in the attributes of `effect`, in table order;
    `judged` is the wording of the attribute the table leaves to the caller. A rule's wording is asked for only
    when its attribute differs (every rule says nothing of an equal attribute): an unchanged installation costs
    one comparison per attribute."""
    out: list[str] = []
    for rule in _BY_EFFECT[effect]:
        if rule.reasons is None:
            out.extend(judged)
        elif getattr(want, rule.field) != getattr(have, rule.field):
            out.extend(rule.reasons(want, have))
    return out


# Partners hold no grant: every change is applied in place. (attribute, reason wording) in reason order.
PARTNER_FIELDS: tuple[tuple[str, str], ...] = (
    ("connector", "connector changed"),
    ("auth", "auth changed"),
    ("tenant_id", "tenant_id changed"),
    ("client_id", "client_id changed"),
    ("redirect_uri", "redirect_uri changed"),
    ("client_secret_ref", "client_secret reference changed"),
    ("authorize_url", "endpoint authorize_url changed"),
    ("token_url", "endpoint token_url changed"),
    ("api_url", "endpoint api_url changed"),
    ("revoke_url", "endpoint revoke_url changed"),
    ("client_secret_expires", "client_secret_expires changed"),  # status and plan judge by the recorded date
    ("app_type", "app_type changed"),  # ... and refresh-token lifetimes by the recorded registration type
    ("migrate_to", "migrate_to changed"),
)


def partner_reasons(want: DeclaredPartner, have: DeclaredPartner) -> tuple[str, ...]:
    reasons = [reason for field, reason in PARTNER_FIELDS if getattr(want, field) != getattr(have, field)]
    reasons.extend(set_reasons("registered scopes", have.scopes or (), want.scopes or ()))
    return tuple(reasons)
