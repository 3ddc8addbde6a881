"""Platform rules: `platform:` made `CyclrSettings` (or the local platform), and each tenant's `account:` made a
`DeclaredAccount`.

Owns: platform.type (local by default), service_domain (on cyclr, required unless endpoints.service_url; the
schema requires it on the local platform unless a `service:` section is the callback),
api_domain (cyclr: required unless endpoints.api_url), the platform's API client (client_id, client_secret by
reference), endpoints (overrides; plain http only on loopback), the callback origin partners derive their redirect
URI from, tenants.<t>.account with its defaults (one account per tenant), and the one refusal of a key that applies
only on the Cyclr platform. Must not: read files, resolve a reference itself (`Values` does), or look at partners'
or installations' other keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import BaseModel, SecretStr

from reconciler.config.desired import CyclrSettings
from reconciler.config.located import KeyPath, Report, SourceFile
from reconciler.config.partners import Checks, url_problem
from reconciler.config.schema import AccountSpec, PlatformSpec, RootFile, TenantSpec
from reconciler.config.values import NO_REFERENCE
from reconciler.placement import DeclaredAccount

__all__ = ["account_of", "callback_origin", "cyclr_settings", "declared_accounts", "is_cyclr", "only_on_cyclr"]

_PATH: KeyPath = ("platform",)
_CYCLR_KEYS = ("api_domain", "client_id", "client_secret", "endpoints")


def is_cyclr(root: RootFile) -> bool:
    """Whether installations live on the Cyclr platform (else the local one: our own state holds the tokens)."""
    return root.platform is not None and root.platform.type == "cyclr"


def callback_origin(root: RootFile) -> str | None:
    """The origin of the callback partners derive their redirect URI from: the service endpoint (cyclr) or
    https://<service_domain>; None when neither is declared."""
    spec = root.platform
    if spec is None:
        return None
    if spec.type == "cyclr" and spec.endpoints is not None and spec.endpoints.service_url is not None:
        return spec.endpoints.service_url.rstrip("/")
    return f"https://{spec.service_domain}" if spec.service_domain else None


def only_on_cyclr(report: Report, src: SourceFile, path: KeyPath, spec: BaseModel, keys: Iterable[str]) -> None:
    """Each of `keys` that `spec` (written at `path`) declares is an error: it applies only on the Cyclr platform."""
    for key in keys:
        if getattr(spec, key) is not None:
            report.issue(
                src,
                (*path, key),
                f"{key} applies only on the Cyclr platform",
                "remove it, or set platform.type: cyclr; on the local platform the reconciler signs in and keeps the tokens",
                at_key=True,
            )


def cyclr_settings(checks: Checks, src: SourceFile, root: RootFile) -> CyclrSettings | None:
    """The Cyclr platform's settings (None: the local platform, or a problem reported). `src` is the root file.
    A client secret not available here (a command that needs no secret's value) is left empty, and listed as
    unchecked by `Values`."""
    spec, report, values = root.platform, checks.report, checks.values
    if spec is None or spec.type != "cyclr":
        if spec is not None:
            only_on_cyclr(report, src, _PATH, spec, _CYCLR_KEYS)
        return None
    api_url = _origin(report, src, spec, "api_domain", "api_url")
    service_url = _origin(report, src, spec, "service_domain", "service_url")
    client_id = secret = None
    for key, how in (("client_id", "literal or reference"), ("client_secret", "by reference: ${env:CYCLR_CLIENT_SECRET}")):
        if getattr(spec, key) is None:
            hint = f"the API client of Console > Settings > OAuth Client Credentials; its {key} {how}"
            report.issue(src, src.missing_at(_PATH, key), f"platform type cyclr needs {key}", hint)
    if spec.client_id is not None:
        client_id = values.value(src, (*_PATH, "client_id"), spec.client_id, secret=False)
        if client_id is not None:
            values.client_id(src, (*_PATH, "client_id"), spec.client_id, client_id, "cyclr", True)
    if spec.client_secret is not None:
        secret = values.value(src, (*_PATH, "client_secret"), spec.client_secret, secret=True)
    if api_url is None or service_url is None or client_id is None or spec.client_secret is None:
        return None
    if secret is None and spec.client_secret not in values.unchecked:
        return None
    return CyclrSettings(api_url, service_url, client_id, spec.client_secret, SecretStr(secret or ""))


def _origin(report: Report, src: SourceFile, spec: PlatformSpec, domain_key: str, url_key: str) -> str | None:
    """https://<domain>, or the endpoint that overrides it (http only to a loopback host); None after reporting."""
    override: str | None = getattr(spec.endpoints, url_key) if spec.endpoints is not None else None
    if override is not None:
        problem = NO_REFERENCE if "${" in override else url_problem(override, allow_http_loopback=True)
        if problem:
            hint = "plain http reaches only a sandbox on this machine" if override.startswith("http://") else None
            report.issue(src, (*_PATH, "endpoints", url_key), problem, hint)
            return None
        return override.rstrip("/")
    domain: str | None = getattr(spec, domain_key)
    if domain is None:
        example = "api.eu.cyclr.com" if domain_key == "api_domain" else "app-h.cyclr.com"
        hint = f"set platform.{domain_key}, e.g. {example}, or endpoints.{url_key} for a sandbox"
        report.issue(src, src.missing_at(_PATH, domain_key), f"platform type cyclr needs {domain_key}", hint)
        return None
    return f"https://{domain}"


def account_of(tenant: str, spec: TenantSpec) -> DeclaredAccount:
    """A tenant's account: its API id and name default to the tenant key."""
    account = spec.account or AccountSpec()
    return DeclaredAccount(tenant=tenant, id=account.id or tenant, name=account.name or tenant, timezone=account.timezone)


def declared_accounts(
    checks: Checks, tenants: Mapping[str, tuple[SourceFile, TenantSpec]]
) -> dict[str, DeclaredAccount]:
    """One account per tenant, by address (cyclr; on the local platform none, and `account:` is refused). Two
    tenants may not share an account id (deleting one tenant would take the other's account)."""
    if not checks.cyclr:
        for name, (src, tenant) in tenants.items():
            only_on_cyclr(checks.report, src, ("tenants", name), tenant, ("account",))
        return {}
    out: dict[str, DeclaredAccount] = {}
    owners: dict[str, str] = {}  # account id (case folded) -> tenant
    for name, (src, tenant) in tenants.items():
        account = account_of(name, tenant)
        owner = owners.setdefault(account.id.casefold(), name)
        if owner != name:
            declared = tenant.account is not None and tenant.account.id is not None
            where: KeyPath = ("tenants", name, "account", "id") if declared else ("tenants", name)
            message = f"account id '{account.id}' is already the account of tenant '{owner}'"
            checks.report.issue(src, where, message, "each tenant has an account of its own: set account.id")
            continue
        out[account.address] = account
    return out
