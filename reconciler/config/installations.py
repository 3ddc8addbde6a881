"""Installation rules: each `tenants.<t>.installations.<name>` entry checked and made a `DesiredInstallation`.

Owns: which partner an installation uses (`partner:`, or its connector's default), its connector agreeing with
the partner's, parameters (known, matching the catalog's pattern, required ones present), scopes (known,
registered with the partner, listed once, the recommended ones), credentials (its own, or the partner's), and
`protect`. Runs once per installation (10,000 on the hot path of `plan`): no per-installation regex compilation,
a scope list that passed without a remark is not checked again. Must not: read files, or resolve a reference
itself (`Values` does).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

from pydantic import SecretStr

from reconciler.catalog import Connector
from reconciler.config.desired import DesiredInstallation, DesiredPartner
from reconciler.config.located import KeyPath, SourceFile, did_you_mean
from reconciler.config.partners import Checks, unknown_scope
from reconciler.config.schema import InstallationSpec, PartnerSpec, TenantSpec
from reconciler.config.values import NO_REFERENCE
from reconciler.declared import DeclaredInstallation

__all__ = ["desired_installations"]

_CleanScopes = dict[tuple[str, tuple[str, ...]], tuple[str, ...]]  # (partner, scopes as written) -> checked


def desired_installations(
    checks: Checks,
    tenants: Mapping[str, tuple[SourceFile, TenantSpec]],
    partners: Mapping[str, DesiredPartner],
    declared: Mapping[str, tuple[SourceFile, PartnerSpec]],
    defaults: Mapping[str, str | None],
    overridden: Mapping[str, bool],
) -> dict[str, DesiredInstallation]:
    """The installations that pass every rule, by address. An installation whose partner failed its own rules
    is left out silently (the partner's problem was reported)."""
    out: dict[str, DesiredInstallation] = {}
    clean: _CleanScopes = {}
    for tenant_name, (src, tenant) in tenants.items():
        for name, spec in tenant.installations.items():
            path: KeyPath = ("tenants", tenant_name, "installations", name)
            partner_name = _partner_of(checks, src, path, spec, defaults, declared)
            if partner_name is None or partner_name not in partners:
                continue  # the reason was reported (here or on the partner)
            partner = partners[partner_name]
            tenant_of = (tenant_name, tenant.protect)
            installation = _installation(checks, src, path, tenant_of, name, spec, partner, overridden, clean)
            if installation is not None:
                out[installation.address] = installation
    return out


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
    src: SourceFile,
    path: KeyPath,
    tenant: tuple[str, bool],  # its name, and whether it protects all its installations
    name: str,
    spec: InstallationSpec,
    partner: DesiredPartner,
    overridden: Mapping[str, bool],
    clean: _CleanScopes,
) -> DesiredInstallation | None:
    report = checks.report
    connector = checks.catalog.connectors[partner.declared.connector]
    before = len(report.issues)
    tenant_name, tenant_protected = tenant
    if tenant_protected and "protect" in spec.model_fields_set and not spec.protect:
        message = f"protect: false has no effect: tenant '{tenant_name}' protects all its installations"
        report.issue(src, (*path, "protect"), message, "remove it, or the tenant's protect: true", warning=True)
    if spec.connector is not None and spec.connector != partner.declared.connector:
        message = f"connector '{spec.connector}' does not match partner '{partner.declared.name}' ({partner.declared.connector})"
        report.issue(src, (*path, "connector"), message)
    _check_parameters(checks, src, path, spec.parameters, connector)
    scopes = _scopes(checks, src, path, spec.scopes, connector, partner, clean)
    credentials = _credentials(checks, src, path, spec, partner, overridden.get(partner.declared.name, False))
    if credentials is None:
        return None
    client_id, secret, secret_ref, source = credentials
    if len(report.issues) > before or client_id is None or secret_ref is None:
        return None
    declared = DeclaredInstallation(
        tenant=tenant_name,
        name=name,
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
        protected=spec.protect or tenant_protected,
        revoke_url=partner.declared.revoke_url,
    )
    return DesiredInstallation(declared, client_secret=secret)


def _credentials(
    checks: Checks, src: SourceFile, path: KeyPath, spec: InstallationSpec, partner: DesiredPartner, overridden: bool
) -> tuple[str | None, SecretStr | None, str | None, str] | None:
    """The client id, secret (None: not checked here), secret reference and their source ("installation" or
    "partner"); None after reporting that there are none."""
    if spec.credentials is not None:
        values = checks.values
        cred_path = (*path, "credentials")
        client_id = values.value(src, (*cred_path, "client_id"), spec.credentials.client_id, secret=False)
        if client_id is not None:
            written = spec.credentials.client_id
            values.client_id(src, (*cred_path, "client_id"), written, client_id, partner.declared.auth, overridden)
        secret_value = values.value(src, (*cred_path, "client_secret"), spec.credentials.client_secret, secret=True)
        secret = SecretStr(secret_value) if secret_value is not None else None  # None: not checked here
        return client_id, secret, spec.credentials.client_secret, "installation"
    if partner.has_credentials:
        return partner.declared.client_id, partner.client_secret, partner.declared.client_secret_ref, "partner"
    checks.report.issue(
        src,
        src.missing_at(path, "credentials"),
        f"no client credentials: partner '{partner.declared.name}' leaves client_id/client_secret blank",
        'add credentials: {client_id: ..., client_secret: "${env:...}"} to this installation',
    )
    return None


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
        elif "${" in value:
            report.issue(src, (*path, "parameters", key), NO_REFERENCE)
    for key, param in connector.parameters.items():
        if param.required and key not in parameters:
            where = src.missing_at((*path, "parameters"), key) if parameters else src.missing_at(path, "parameters")
            report.issue(src, where, f"missing parameter '{key}' ({param.display_name})")


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
    scopes: Sequence[str],
    connector: Connector,
    partner: DesiredPartner,
    clean: _CleanScopes,
) -> tuple[str, ...]:
    """The declared scopes, sorted and without repeats, after checking them against the catalog and the
    partner's registration. Thousands of installations list one of a few scope lists: a list that passed
    without any remark is not checked again."""
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
