"""Partner rules: each `partners.<name>` entry checked against the catalog and made a `DesiredPartner`.

Owns: the partner's connector and auth flavour, tenant_id, the client id/secret pair, endpoint overrides and the
revocation endpoint's origin, the redirect URI (declared or derived: from the service's callback where a `service:`
section applies to the partner, else from the platform's callback origin), registered
scopes, the client secret's expiry warning, and which partner is the default of its connector. Each rule is a
small function of the spec and what it needs. Must not: read files, resolve a reference itself (`Values` does),
or look at installations.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from pydantic import SecretStr

from reconciler.catalog import AuthFlavour, Catalog, Connector
from reconciler.config.desired import DesiredPartner, same_origin, url_origin
from reconciler.config.located import KeyPath, Report, SourceFile, did_you_mean
from reconciler.config.schema import PartnerSpec
from reconciler.config.values import NO_REFERENCE, Values
from reconciler.declared import DeclaredPartner

__all__ = ["SECRET_EXPIRY_WARNING", "Checks", "default_partners", "desired_partners", "unknown_scope", "url_problem"]

SECRET_EXPIRY_WARNING = dt.timedelta(days=14)
_TENANT_ID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|organizations|common|consumers"
    r"|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+"
)
_URL_UNSAFE = re.compile(r"[\x00-\x20\x7f-\x9f]")  # never raw in a URL; a client would send them or choke


@dataclass(frozen=True)
class Checks:
    """What the catalog rules of one load share: where problems go, the values resolved so far, the catalog, the
    date warnings are computed for (None: no date warnings), whether installations live on the Cyclr platform, and
    the callback origin redirect URIs derive from (see `reconciler.config.platform`), and the service's callback
    (see `reconciler.config.service`; None: no `service:` section)."""

    report: Report
    values: Values
    catalog: Catalog
    today: dt.date | None
    cyclr: bool = False
    callback_origin: str | None = None
    service_callback: str | None = None


class _Endpoints(NamedTuple):
    authorize_url: str
    token_url: str
    api_url: str
    overridden: bool  # a default the flows use was overridden: the peer is not necessarily Microsoft
    revoke_url: str | None  # None: none declared


def desired_partners(
    checks: Checks, partners: Mapping[str, tuple[SourceFile, PartnerSpec]]
) -> tuple[dict[str, DesiredPartner], dict[str, bool]]:
    """The partners that pass every rule, and for each declared partner whether its endpoints are overridden."""
    out: dict[str, DesiredPartner] = {}
    overridden: dict[str, bool] = {}
    for name, (src, spec) in partners.items():
        partner = _partner(checks, src, name, spec, overridden)
        if partner is not None:
            out[name] = partner
    return out, overridden


def _partner(
    checks: Checks, src: SourceFile, name: str, spec: PartnerSpec, overridden: dict[str, bool]
) -> DesiredPartner | None:
    report, values = checks.report, checks.values
    path: KeyPath = ("partners", name)
    connector = _connector(checks, src, path, spec, name)
    if connector is None:
        return None
    flavour = connector.auth.get(spec.auth)
    if flavour is None:
        known = ", ".join(sorted(connector.auth))
        report.issue(src, (*path, "auth"), f"unknown auth '{spec.auth}' for {connector.name}; expected one of: {known}")
        return None
    ok = _tenant_id_ok(report, src, path, spec, flavour)
    if spec.app_type is not None and not flavour.spa_refresh_token_hours:
        report.issue(src, (*path, "app_type"), f"app_type does not apply to auth {spec.auth}",
                     "app_type describes an Entra ID app registration (web or spa)")
        ok = False
    ok = _credentials_paired(report, src, path, spec) and ok
    client_id = values.value(src, (*path, "client_id"), spec.client_id, secret=False) if spec.client_id else None
    secret = values.value(src, (*path, "client_secret"), spec.client_secret, secret=True) if spec.client_secret else None
    endpoints = _endpoints(report, src, path, spec, flavour)
    overridden[name] = endpoints is not None and endpoints.overridden
    if client_id is not None and spec.client_id is not None:
        values.client_id(src, (*path, "client_id"), spec.client_id, client_id, spec.auth, overridden[name])
    redirect = _redirect(checks, src, path, spec, flavour.redirect_allows_loopback or overridden[name])
    ok = _registered_scopes_ok(report, src, path, spec, connector) and ok
    _expiry_warning(report, src, path, spec, checks.today)
    if not ok or endpoints is None or redirect is None:
        return None
    unchecked = spec.client_secret in values.unchecked  # not available here, and not needed: no value
    if spec.client_id is not None and (client_id is None or (secret is None and not unchecked)):
        return None
    declared = DeclaredPartner(
        name=name,
        connector=connector.name,
        auth=spec.auth,
        tenant_id=spec.tenant_id,
        client_id=client_id,
        client_secret_ref=spec.client_secret,
        redirect_uri=redirect,
        authorize_url=endpoints.authorize_url,
        token_url=endpoints.token_url,
        api_url=endpoints.api_url,
        scopes=tuple(sorted(set(spec.scopes))) if spec.scopes is not None else None,
        revoke_url=endpoints.revoke_url,
        client_secret_expires=spec.client_secret_expires,
        app_type=spec.app_type,
        migrate_to=spec.migrate_to,
    )
    return DesiredPartner(
        declared, client_secret=SecretStr(secret) if secret is not None else None, app_tenant_id=spec.app_tenant_id
    )


def _connector(checks: Checks, src: SourceFile, path: KeyPath, spec: PartnerSpec, name: str) -> Connector | None:
    """The catalog connector a partner is for: `connector:`, else the partner's key."""
    catalog = checks.catalog
    connector_name = spec.connector or name
    connector = catalog.get(connector_name)
    if connector is None:
        where = (*path, "connector") if spec.connector else path
        hint = did_you_mean(connector_name, list(catalog.connectors)) or (
            "known connectors: " + ", ".join(sorted(catalog.connectors))
        )
        message = f"unknown connector '{connector_name}'"
        if not spec.connector:
            message += " (the partner key names the connector unless `connector:` is set)"
        checks.report.issue(src, where, message, hint, at_key=not spec.connector)
    return connector


def _tenant_id_ok(report: Report, src: SourceFile, path: KeyPath, spec: PartnerSpec, flavour: AuthFlavour) -> bool:
    """tenant_id is set exactly when the auth needs it, and names a tenant (a reference is not resolved here)."""
    ok = True
    if "tenant_id" in flavour.requires and not spec.tenant_id:
        message = f"auth {spec.auth} needs tenant_id (the Entra tenant GUID, or 'organizations')"
        report.issue(src, src.missing_at(path, "tenant_id"), message)
        ok = False
    if spec.tenant_id and "tenant_id" not in flavour.requires:
        report.issue(src, (*path, "tenant_id"), f"tenant_id does not apply to auth {spec.auth}")
        ok = False
    elif spec.tenant_id and not _TENANT_ID.fullmatch(spec.tenant_id):
        report.issue(
            src,
            (*path, "tenant_id"),
            "invalid tenant_id" + (f": {NO_REFERENCE}" if "${" in spec.tenant_id else ""),
            "a tenant GUID, a domain such as contoso.onmicrosoft.com, or organizations, common, consumers",
        )
        ok = False
    home = spec.app_tenant_id
    if home and "tenant_id" not in flavour.requires:
        report.issue(src, (*path, "app_tenant_id"), f"app_tenant_id does not apply to auth {spec.auth}")
        ok = False
    elif home and (not _TENANT_ID.fullmatch(home) or home.lower() in ("organizations", "common", "consumers")):
        report.issue(
            src,
            (*path, "app_tenant_id"),
            "invalid app_tenant_id" + (f": {NO_REFERENCE}" if "${" in home else ""),
            "the directory the app is registered in: a tenant GUID or a domain such as contoso.onmicrosoft.com",
        )
        ok = False
    return ok


def _credentials_paired(report: Report, src: SourceFile, path: KeyPath, spec: PartnerSpec) -> bool:
    """client_id and client_secret are both set (the partner's app) or both left out (each installation's)."""
    if (spec.client_id is None) == (spec.client_secret is None):
        return True
    missing = "client_secret" if spec.client_secret is None else "client_id"
    report.issue(
        src,
        src.missing_at(path, missing),
        f"client_id and client_secret go together: {missing} is missing",
        "set both, or omit both so that each installation brings credentials",
    )
    return False


def _endpoints(
    report: Report, src: SourceFile, path: KeyPath, spec: PartnerSpec, flavour: AuthFlavour
) -> _Endpoints | None:
    """The effective endpoints (the flavour's, with the tenant filled in, under the overrides). A revocation
    endpoint must share the token endpoint's origin: a token and the client secret are only ever sent to the
    origin that issued the token."""
    tenant = spec.tenant_id or ""
    defaults = {
        "authorize_url": flavour.authorize_url.replace("{tenant_id}", tenant),
        "token_url": flavour.token_url.replace("{tenant_id}", tenant),
        "api_url": flavour.api_url.replace("{tenant_id}", tenant),
    }
    overrides = spec.endpoints.model_dump(exclude_none=True) if spec.endpoints else {}
    ok = True
    for key, url in overrides.items():
        problem = NO_REFERENCE if "${" in url else url_problem(url, allow_http_loopback=True)
        if problem:
            report.issue(src, (*path, "endpoints", key), problem)
            ok = False
    if not ok:
        return None
    revoke_url = overrides.pop("revoke_url", None)
    merged = {**defaults, **overrides}
    if revoke_url is not None and not same_origin(revoke_url, merged["token_url"]):
        token_origin = url_origin(merged["token_url"])
        report.issue(
            src,
            (*path, "endpoints", "revoke_url"),
            f"revoke_url is on {url_origin(revoke_url)}, not on the token endpoint's origin {token_origin}",
            "a token is only ever sent to the origin that issued it: put the revocation endpoint beside token_url",
        )
        return None
    api_url = merged["api_url"].rstrip("/")
    return _Endpoints(merged["authorize_url"], merged["token_url"], api_url, bool(overrides), revoke_url)


def _redirect(checks: Checks, src: SourceFile, path: KeyPath, spec: PartnerSpec, allow_http: bool) -> str | None:
    """The redirect URI: the service's callback where it applies (declared, it must be that one), else declared
    (http only to a loopback host, where `allow_http`), else derived from the platform's callback origin
    (https://<service_domain>)."""
    report = checks.report
    service = _service_callback(checks, spec)
    if service is not None and url_problem(service, allow_http_loopback=True) is not None:
        return None  # the public URL is unusable: reported on service.public_url
    if spec.redirect_uri is None and service is None:
        if checks.callback_origin is None:
            if checks.cyclr:
                return None  # reported on the platform
            report.issue(
                src,
                path,
                "no redirect_uri, and no platform.service_domain to derive it from",
                "set platform.service_domain (callback https://<service_domain>/connector/callback) or redirect_uri",
            )
            return None
        return f"{checks.callback_origin}/connector/callback"
    uri = spec.redirect_uri or service
    assert uri is not None
    where = (*path, "redirect_uri") if spec.redirect_uri is not None else path
    problem = NO_REFERENCE if "${" in uri else url_problem(uri, allow_http_loopback=allow_http)
    if problem:
        hint = None
        if not allow_http and uri.startswith("http://"):
            hint = "the provider matches an HTTPS callback exactly; http://127.0.0.1 works only with endpoints overridden"
        report.issue(src, where, problem, hint)
        return None
    if service is not None and uri != service:
        hint = "leave redirect_uri out: with a `service:` section it is <public_url>/connector/callback"
        report.issue(src, where, f"redirect_uri must be the service's callback {service}", hint)
        return None
    return uri


def _service_callback(checks: Checks, spec: PartnerSpec) -> str | None:
    """The service's callback when it is this partner's: on the local platform always; on the Cyclr platform only
    for a partner whose installations sign in through us (`auth_via: reconciler`; through the platform, Cyclr's
    callback stays)."""
    if checks.cyclr and spec.auth_via != "reconciler":
        return None
    return checks.service_callback


def _registered_scopes_ok(
    report: Report, src: SourceFile, path: KeyPath, spec: PartnerSpec, connector: Connector
) -> bool:
    """Each scope registered with the partner's app is one of the connector's."""
    ok = True
    for index, scope in enumerate(spec.scopes or ()):
        if scope not in connector.scopes:
            unknown_scope(report, src, (*path, "scopes", index), scope, connector)
            ok = False
    return ok


def _expiry_warning(report: Report, src: SourceFile, path: KeyPath, spec: PartnerSpec, today: dt.date | None) -> None:
    """A warning when the client secret has expired or expires within `SECRET_EXPIRY_WARNING`."""
    if not (spec.client_secret_expires and today):
        return
    left = spec.client_secret_expires - today
    if left < dt.timedelta(0):
        message = f"client secret expired on {spec.client_secret_expires}"
        report.issue(src, (*path, "client_secret_expires"), message, "rotate it", warning=True)
    elif left <= SECRET_EXPIRY_WARNING:
        message = f"client secret expires in {left.days} days ({spec.client_secret_expires})"
        report.issue(src, (*path, "client_secret_expires"), message, "rotate it", warning=True)


def default_partners(report: Report, declared: Mapping[str, tuple[SourceFile, PartnerSpec]]) -> dict[str, str | None]:
    """Per connector, the partner of installations that name none: the one that says `default: true`, else
    the one declared first (`declared` is in declaration order: the root file's partners, then the overlay's
    new ones, then each included file's in include order). Adding a partner therefore never moves an existing
    installation. Two defaults for one connector are an error (None: no default to use)."""
    by_connector: dict[str, list[str]] = {}
    for name, (_, spec) in declared.items():
        by_connector.setdefault(spec.connector or name, []).append(name)
    out: dict[str, str | None] = {}
    for connector, names in by_connector.items():
        marked = [name for name in names if declared[name][1].default]
        if len(marked) > 1:
            src = declared[marked[1]][0]
            message = f"partners '{marked[0]}' and '{marked[1]}' both say default: true for connector '{connector}'"
            report.issue(src, ("partners", marked[1], "default"), message, "keep default: true on one of them")
            out[connector] = None
        else:
            out[connector] = marked[0] if marked else names[0]
    return out


def migrations(report: Report, declared: Mapping[str, tuple[SourceFile, PartnerSpec]]) -> dict[str, str]:
    """Per partner that declares `migrate_to`, the partner its installations move to: one declared for the same
    connector, other than itself, that does not move on in turn."""
    out: dict[str, str] = {}
    for name, (src, spec) in declared.items():
        target = spec.migrate_to
        if target is None:
            continue
        path = ("partners", name, "migrate_to")
        entry = declared.get(target)
        if entry is None:
            report.issue(src, path, f"unknown partner '{target}'", did_you_mean(target, [n for n in declared if n != name]))
        elif target == name:
            report.issue(src, path, "a partner cannot migrate to itself")
        elif (entry[1].connector or target) != (spec.connector or name):
            message = f"partner '{target}' is for connector '{entry[1].connector or target}', not '{spec.connector or name}'"
            report.issue(src, path, message, "migrate to a partner of the same connector")
        elif entry[1].migrate_to is not None:
            report.issue(src, path, f"partner '{target}' migrates on to '{entry[1].migrate_to}'",
                         f"migrate straight to the last one: migrate_to: {entry[1].migrate_to}")
        else:
            out[name] = target
    return out


def unknown_scope(report: Report, src: SourceFile, path: KeyPath, scope: str, connector: Connector) -> None:
    """A scope the connector does not define (on a partner or an installation), with the closest as a hint."""
    suggestion = connector.suggest_scope(scope)
    hint = f"did you mean '{suggestion}'?" if suggestion else "run `reconciler schema` or see the connector catalog"
    report.issue(src, path, f"unknown scope '{scope}' for {connector.name}", hint)


def url_problem(url: str, *, allow_http_loopback: bool) -> str | None:
    """Why `url` cannot be an OAuth endpoint or redirect URI, or None."""
    from urllib.parse import urlsplit

    if _URL_UNSAFE.search(url):
        return "invalid URL: it contains a space or a control character (percent-encode it)"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port
    except ValueError:
        return f"invalid URL '{url}'"
    if parts.scheme not in {"https", "http"} or not host:
        return f"invalid URL '{url}': expected https://host/..."
    if parts.username or parts.password:
        return "a URL may not carry a user name or password"
    if parts.fragment or url.endswith("#"):
        return "an OAuth endpoint or redirect URI may not contain a fragment (#)"  # RFC 6749 3.1, 3.1.2
    if parts.scheme == "http" and not (allow_http_loopback and _is_loopback(host)):
        if allow_http_loopback:
            return f"'{url}' must use https (http is allowed only for 127.0.0.1 or localhost)"
        return f"'{url}' must use https"
    return None


def _is_loopback(host: str) -> bool:
    """localhost, or an address of the loopback networks (127.0.0.0/8, ::1): plain http never leaves this machine."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
