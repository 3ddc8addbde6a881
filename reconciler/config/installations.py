"""Installation rules: each `tenants.<t>.installations.<name>` entry checked and made a `DesiredInstallation`.

Owns: which partner an installation uses (`partner:`, or its connector's default), its connector agreeing with
the partner's, parameters (known, matching the catalog's pattern, required ones present), scopes (known,
registered with the partner, listed once, the recommended ones; required but on the Cyclr platform for a connector
outside the catalog), credentials (its own, the partner's, or on Cyclr the platform's own: the Application Connector
Library's), `protect`, and on the Cyclr platform an installation of a connector the catalog does not describe (no
partner, flavour or endpoints; its parameters and scopes are checked when planning, against the platform's own
connector list). Runs once per installation (10,000 on the hot path of `plan`): no per-installation regex compilation,
a scope list that passed without a remark is not checked again. Must not: read files, or resolve a reference
itself (`Values` does).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple

from pydantic import SecretStr

from reconciler.catalog import Connector
from reconciler.config.desired import DesiredInstallation, DesiredPartner
from reconciler.config.located import KeyPath, SourceFile, did_you_mean
from reconciler.config.partners import Checks, unknown_scope
from reconciler.config.placements import installation_placement
from reconciler.config.platform import account_of
from reconciler.config.schema import CredentialsSpec, InstallationSpec, PartnerSpec, TenantSpec
from reconciler.config.values import NO_REFERENCE
from reconciler.declared import DeclaredInstallation

__all__ = ["desired_installations"]

_CleanScopes = dict[tuple[str, tuple[str, ...]], tuple[str, ...]]  # (partner, scopes as written) -> checked
_Source = Literal["partner", "installation", "platform"]
_Credentials = tuple[str | None, SecretStr | None, str | None, _Source]  # client id, secret, its reference, source


class _At(NamedTuple):
    """Where an installation is declared: its file and key path, its tenant (whether that protects all its
    installations, and its account id), and its name."""

    src: SourceFile
    path: KeyPath
    tenant: str
    protected: bool
    account: str
    name: str


def desired_installations(
    checks: Checks,
    tenants: Mapping[str, tuple[SourceFile, TenantSpec]],
    partners: Mapping[str, DesiredPartner],
    declared: Mapping[str, tuple[SourceFile, PartnerSpec]],
    defaults: Mapping[str, str | None],
    overridden: Mapping[str, bool],
    moves: Mapping[str, str] | None = None,
) -> dict[str, DesiredInstallation]:
    """The installations that pass every rule, by address. An installation whose partner failed its own rules
    is left out silently (the partner's problem was reported). An installation of a partner that declares
    `migrate_to` uses the partner it moves to (`moves`)."""
    out: dict[str, DesiredInstallation] = {}
    clean: _CleanScopes = {}
    moves = moves or {}
    for tenant_name, (src, tenant) in tenants.items():
        account = account_of(tenant_name, tenant).id if checks.cyclr else ""  # "": the local platform has none
        for name, spec in tenant.installations.items():
            path: KeyPath = ("tenants", tenant_name, "installations", name)
            at = _At(src, path, tenant_name, tenant.protect, account, name)
            if checks.cyclr and spec.connector is not None and checks.catalog.get(spec.connector) is None:
                installation = _outside_catalog(checks, at, spec, declared)
            else:
                named = partner_name = _partner_of(checks, src, path, spec, defaults, declared)
                if partner_name is not None and partner_name in moves:
                    partner_name = _moved(checks, src, path, spec, partner_name, moves[partner_name])
                if partner_name is None or partner_name not in partners:
                    continue  # the reason was reported (here or on the partner)
                partner = (partners[partner_name], declared[partner_name][1])
                installation = _installation(checks, at, spec, partner, overridden, clean)
                if installation is not None and named != partner_name:
                    installation = dataclasses.replace(installation, moved_from=named)
            if installation is not None:
                out[installation.address] = installation
    return out


def _moved(checks: Checks, src: SourceFile, path: KeyPath, spec: InstallationSpec, source: str, target: str) -> str | None:
    """The partner an installation of a migrating partner moves to; None (reported) when it brings client
    credentials of its own, which are for the app it moves from."""
    if spec.credentials is None:
        return target
    message = f"partner '{source}' migrates to '{target}', but this installation brings its own client credentials"
    hint = f"name partner: {target} with the credentials of its {target} app, or remove credentials"
    checks.report.issue(src, (*path, "credentials"), message, hint)
    return None


def _partner_of(
    checks: Checks,
    src: SourceFile,
    path: KeyPath,
    spec: InstallationSpec,
    defaults: Mapping[str, str | None],
    declared: Mapping[str, object],
) -> str | None:
    """The partner an installation uses: the one it names, else its connector's default (None: reported)."""
    report = checks.report
    if spec.partner is not None:
        if spec.partner not in declared:
            hint = did_you_mean(spec.partner, list(declared))
            report.issue(src, (*path, "partner"), f"unknown partner '{spec.partner}'", hint)
            return None
        return spec.partner
    if spec.connector is None:
        report.issue(src, src.missing_at(path, "connector"), "missing required key 'connector' (or name a `partner:`)")
        return None
    if spec.connector in defaults:
        return defaults[spec.connector]  # None: two defaults, reported on the partners
    if checks.catalog.get(spec.connector) is None:
        hint = did_you_mean(spec.connector, list(checks.catalog.connectors))
        report.issue(src, (*path, "connector"), f"unknown connector '{spec.connector}'", hint)
    else:
        report.issue(
            src,
            (*path, "connector"),
            f"connector '{spec.connector}' has no partner entry",
            f"add partners.{spec.connector} (auth, and client credentials or none)",
        )
    return None


def _installation(
    checks: Checks,
    at: _At,
    spec: InstallationSpec,
    partner_of: tuple[DesiredPartner, PartnerSpec],
    overridden: Mapping[str, bool],
    clean: _CleanScopes,
) -> DesiredInstallation | None:
    """An installation of a catalog connector, through its partner."""
    report, (src, path) = checks.report, at[:2]
    partner, partner_spec = partner_of
    connector = checks.catalog.connectors[partner.declared.connector]
    before = len(report.issues)
    _protect_false_warning(checks, at, spec)
    if spec.connector is not None and spec.connector != partner.declared.connector:
        message = f"connector '{spec.connector}' does not match partner '{partner.declared.name}' ({partner.declared.connector})"
        report.issue(src, (*path, "connector"), message)
    _check_parameters(checks, src, path, spec.parameters, connector)
    scopes = _scopes(checks, src, path, spec.scopes, connector, partner, clean)
    credentials = _credentials(checks, src, path, spec, partner, overridden.get(partner.declared.name, False))
    if credentials is None:
        return None
    client_id, secret, secret_ref, source = credentials
    placed = (partner.declared.name, partner_spec)
    placement = installation_placement(checks, src, path, spec, placed, at.account, holds_client=source != "platform")
    if len(report.issues) > before or client_id is None or secret_ref is None:
        return None
    declared = DeclaredInstallation(
        tenant=at.tenant,
        name=at.name,
        connector=partner.declared.connector,
        partner=partner.declared.name,
        auth=partner.declared.auth,
        parameters=dict(sorted(spec.parameters.items())),
        scopes=scopes,
        client_id=client_id,
        client_secret_ref=secret_ref,
        credentials_source=source,
        redirect_uri=partner.declared.redirect_uri,
        token_url=partner.declared.token_url,
        api_url=partner.declared.api_url,
        protected=spec.protect or at.protected,
        revoke_url=partner.declared.revoke_url,
        placement=placement,
    )
    return DesiredInstallation(declared, client_secret=secret)


def _outside_catalog(
    checks: Checks, at: _At, spec: InstallationSpec, declared: Mapping[str, tuple[SourceFile, PartnerSpec]]
) -> DesiredInstallation | None:
    """(Cyclr) An installation of a connector the catalog does not describe: no partner, flavour, endpoints or
    client but its own `credentials:` (else the platform's); parameters and scopes as written."""
    report, (src, path) = checks.report, at[:2]
    before = len(report.issues)
    _protect_false_warning(checks, at, spec)
    if spec.partner is not None:
        entry = declared.get(spec.partner)
        of = f"; partner '{spec.partner}' is for {entry[1].connector or spec.partner}" if entry is not None else ""
        message = f"connector '{spec.connector}' is outside the catalog and takes no partner{of}"
        hint = f"remove partner: the platform's own connector list describes {spec.connector}"
        report.issue(src, (*path, "partner"), message, hint)
    for key, value in spec.parameters.items():
        _no_reference(checks, src, (*path, "parameters", key), value)
    credentials: _Credentials = ("", None, "", "platform")
    if spec.credentials is not None:
        credentials = _own_credentials(checks, src, path, spec.credentials, "", overridden=True)
    client_id, secret, secret_ref, source = credentials
    placement = installation_placement(checks, src, path, spec, None, at.account, holds_client=source != "platform")
    if len(report.issues) > before or client_id is None or secret_ref is None:
        return None
    assert spec.connector is not None  # how an installation gets here
    declared_installation = DeclaredInstallation(
        tenant=at.tenant,
        name=at.name,
        connector=spec.connector,
        partner="",
        auth="",
        parameters=dict(sorted(spec.parameters.items())),
        scopes=tuple(sorted(set(spec.scopes or ()))),
        client_id=client_id,
        client_secret_ref=secret_ref,
        credentials_source=source,
        redirect_uri="",
        token_url="",
        protected=spec.protect or at.protected,
        placement=placement,
    )
    return DesiredInstallation(declared_installation, client_secret=secret)


def _protect_false_warning(checks: Checks, at: _At, spec: InstallationSpec) -> None:
    if at.protected and "protect" in spec.model_fields_set and not spec.protect:
        message = f"protect: false has no effect: tenant '{at.tenant}' protects all its installations"
        checks.report.issue(at.src, (*at.path, "protect"), message, "remove it, or the tenant's protect: true", warning=True)


def _credentials(
    checks: Checks, src: SourceFile, path: KeyPath, spec: InstallationSpec, partner: DesiredPartner, overridden: bool
) -> _Credentials | None:
    """The client id, secret (None: not checked here), secret reference and their source ("installation",
    "partner", or on Cyclr "platform": empty, the Application Connector Library's); None after reporting that
    there are none."""
    if spec.credentials is not None:
        return _own_credentials(checks, src, path, spec.credentials, partner.declared.auth, overridden)
    if partner.has_credentials:
        return partner.declared.client_id, partner.client_secret, partner.declared.client_secret_ref, "partner"
    if checks.cyclr:
        return "", None, "", "platform"
    checks.report.issue(
        src,
        src.missing_at(path, "credentials"),
        f"no client credentials: partner '{partner.declared.name}' leaves client_id/client_secret blank",
        'add credentials: {client_id: ..., client_secret: "${env:...}"} to this installation',
    )
    return None


def _own_credentials(
    checks: Checks, src: SourceFile, path: KeyPath, credentials: CredentialsSpec, auth: str, overridden: bool
) -> _Credentials:
    """An installation's own `credentials:`, resolved (the secret None: not checked here)."""
    values = checks.values
    cred_path = (*path, "credentials")
    client_id = values.value(src, (*cred_path, "client_id"), credentials.client_id, secret=False)
    if client_id is not None:
        values.client_id(src, (*cred_path, "client_id"), credentials.client_id, client_id, auth, overridden)
    secret_value = values.value(src, (*cred_path, "client_secret"), credentials.client_secret, secret=True)
    secret = SecretStr(secret_value) if secret_value is not None else None
    return client_id, secret, credentials.client_secret, "installation"


def _check_parameters(
    checks: Checks, src: SourceFile, path: KeyPath, parameters: Mapping[str, str], connector: Connector
) -> None:
    """Each parameter is one of the connector's and matches its pattern; each required one is present."""
    report = checks.report
    for key, value in parameters.items():
        param = connector.parameters.get(key)
        if param is None:
            hint = did_you_mean(key, list(connector.parameters)) or "expected: " + ", ".join(connector.parameters)
            report.issue(src, (*path, "parameters", key), f"unknown parameter '{key}'", hint, at_key=True)
        elif param.pattern and not _compiled(param.pattern).fullmatch(value):
            shown = json.dumps(value) if len(value) <= 80 else json.dumps(value[:80]) + "..."
            report.issue(src, (*path, "parameters", key), f"invalid {key} {shown} ({param.description})")
        else:
            _no_reference(checks, src, (*path, "parameters", key), value)
    for key, param in connector.parameters.items():
        if param.required and key not in parameters:
            where = src.missing_at((*path, "parameters"), key) if parameters else src.missing_at(path, "parameters")
            report.issue(src, where, f"missing parameter '{key}' ({param.display_name})")


def _no_reference(checks: Checks, src: SourceFile, path: KeyPath, value: str) -> None:
    """A parameter is taken as written: a reference in it is an error (it would be sent unresolved)."""
    if "${" in value:
        checks.report.issue(src, path, NO_REFERENCE)


_PATTERNS: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    compiled = _PATTERNS.get(pattern)
    if compiled is None:
        compiled = _PATTERNS[pattern] = re.compile(pattern)
    return compiled


def _scopes(
    checks: Checks,
    src: SourceFile,
    path: KeyPath,
    scopes: Sequence[str] | None,
    connector: Connector,
    partner: DesiredPartner,
    clean: _CleanScopes,
) -> tuple[str, ...]:
    """The declared scopes, sorted and without repeats, after checking them against the catalog and the
    partner's registration (required: the schema requires them on the local platform, this on Cyclr). Thousands
    of installations list one of a few scope lists: a list that passed without any remark is not checked again."""
    if scopes is None:
        hint = f"{connector.name} is a catalog connector: list the scopes to request"
        checks.report.issue(src, src.missing_at(path, "scopes"), "missing required key 'scopes'", hint)
        return ()
    key = (partner.declared.name, tuple(scopes))
    known = clean.get(key)
    if known is not None:
        return known
    report = checks.report
    remarks = len(report.issues) + len(report.warnings)
    checked = _check_scopes(checks, src, path, scopes, connector, partner)
    if len(report.issues) + len(report.warnings) == remarks:
        clean[key] = checked
    return checked


def _check_scopes(
    checks: Checks, src: SourceFile, path: KeyPath, scopes: Sequence[str], connector: Connector, partner: DesiredPartner
) -> tuple[str, ...]:
    report = checks.report
    registered = connector.closure(partner.declared.scopes) if partner.declared.scopes is not None else None
    seen: set[str] = set()
    for index, scope in enumerate(scopes):
        where = (*path, "scopes", index)
        if scope in seen:
            report.issue(src, where, f"scope '{scope}' is listed twice", warning=True)
            continue
        seen.add(scope)
        if scope not in connector.scopes:
            unknown_scope(report, src, where, scope, connector)
        elif registered is not None and scope not in registered:
            report.issue(
                src,
                where,
                f"scope '{scope}' is not registered with partner '{partner.declared.name}'",
                f"registered: {', '.join(partner.declared.scopes or ())}; the provider would refuse it (InvalidScope)",
            )
    missing = [s for s in connector.recommended_scopes if s not in connector.closure(frozenset(seen))]
    if missing and not any(s not in connector.scopes for s in seen):
        names = ", ".join(f"{s} ({connector.scopes[s].name})" for s in missing)
        report.issue(src, (*path, "scopes"), f"without {names} most methods of {connector.display_name} fail", warning=True)
    return tuple(sorted(seen))
