"""The shape of the YAML files, as strict pydantic models — the source of `reconciler schema`.

Owns: what keys exist, their types and the name patterns, and the requirements of the local platform: `scopes`
(the root file's `platform.type` is every file's validation context, see `validation_context`) and
`platform.service_domain` (unless a `service:` section is the callback). Must not: resolve secrets, read files, or check anything that needs the catalog or other
files (`partners`, `installations`, `placements`, `platform`, `values`, `documents`).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from reconciler.names import NAME_PATTERN  # the one rule for names, shared with addresses
from reconciler.references import path_text_problem  # the one rule for paths, shared with ${file:} references

__all__ = [
    "AccountSpec",
    "ApiKeySpec",
    "AuthVia",
    "BackendSpec",
    "LocalBackendSpec",
    "PostgresBackendSpec",
    "CredentialsSpec",
    "EndpointsSpec",
    "IncludedFile",
    "InstallationSpec",
    "PartnerSpec",
    "PlatformEndpointsSpec",
    "PlatformSpec",
    "RootFile",
    "ServiceSpec",
    "TenantSpec",
    "WebhookSpec",
    "validation_context",
]

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
ConnectorName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
NonEmpty = Annotated[str, StringConstraints(min_length=1)]


def _path_text(value: str) -> str:
    problem = path_text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


PathText = Annotated[str, StringConstraints(min_length=1), AfterValidator(_path_text)]
# YAML sequences arrive as lists; accept them for tuple fields (items stay strict).
Strings = Annotated[tuple[NonEmpty, ...], Field(strict=False)]
HostName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.-]+(:[0-9]+)?$")]
AuthVia = Literal["platform", "reconciler"]
AUTH_VIA_DESCRIPTION = (
    "cyclr only: who runs the sign-in — platform (Cyclr's sign-in link; Cyclr holds the tokens) or reconciler (our "
    "OAuth flow, the tokens pushed to Cyclr; needs client credentials and a catalog connector)."
)
SECRET_REF_DESCRIPTION = "A reference, never a literal: ${env:NAME} or ${file:PATH} (relative to the config directory)."  # noqa: S105 - a description


def _a_list_when_given(schema: dict[str, Any]) -> None:
    """An optional list is described as the list (leaving it out is how it is optional, not null)."""
    listed = [option for option in schema.pop("anyOf", ()) if option.get("type") != "null"]
    if len(listed) == 1:
        schema.update(listed[0])
    schema.pop("default", None)


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class EndpointsSpec(_Strict):
    """Overrides of a connector's default endpoints (sovereign clouds, proxies, the sandbox)."""

    authorize_url: NonEmpty | None = None
    token_url: NonEmpty | None = None
    api_url: NonEmpty | None = None
    revoke_url: NonEmpty | None = Field(
        None,
        description="RFC 7009 token revocation endpoint offered by the peer (a proxy, the sandbox, another OAuth "
        "server), on the token_url's origin; without it, grants given up are forgotten, not revoked.",
    )


class PartnerSpec(_Strict):
    """Partner settings for one connector: the OAuth app's credentials, or none (installations bring their own)."""

    connector: ConnectorName | None = Field(None, description="Catalog connector; defaults to the partner's key.")
    auth: NonEmpty = Field(description="Auth flavour: azure-devops-oauth or entra-id.")
    tenant_id: NonEmpty | None = Field(None, description="Entra ID tenant GUID, or 'organizations' (entra-id only).")
    app_tenant_id: NonEmpty | None = Field(
        None,
        description="entra-id only: the directory the app is registered in (its home tenant), where `reconciler "
        "preflight` reads its registration when tenant_id is organizations or common (a GUID or a domain).",
    )
    client_id: NonEmpty | None = Field(None, description="Client (App) ID, literal or ${env:}/${file:} reference.")
    client_secret: NonEmpty | None = Field(None, description=SECRET_REF_DESCRIPTION)
    client_secret_expires: dt.date | None = Field(
        None, strict=False, description="When the client secret expires: plan and status warn 14 days before."
    )
    app_type: Literal["web", "spa"] | None = Field(
        None,
        description="entra-id only: how the app's redirect URI is registered. spa: refresh tokens last 24 hours from "
        "the sign-in; web (the default): 90 days unused.",
    )
    redirect_uri: NonEmpty | None = Field(
        None,
        description="Callback registered with the app; default https://<service_domain>/connector/callback, or "
        "<public_url>/connector/callback with a `service:` section (then it must be that one).",
    )
    scopes: Annotated[Strings, Field(min_length=1)] | None = Field(
        None, description="Scopes registered with the app; installations may ask only these."
    )
    endpoints: EndpointsSpec | None = None
    authentication: NonEmpty | None = Field(
        None, description="cyclr only: the connector's Authentication entry to install with (its AuthName or Id)."
    )
    auth_via: AuthVia | None = Field(None, description=AUTH_VIA_DESCRIPTION + " Default of its installations: platform.")
    migrate_to: NonEmpty | None = Field(
        None,
        description="Move this partner's installations to another partner of the same connector (its key), e.g. "
        "from Azure DevOps OAuth to Entra ID: each is re-authorized with the other partner's app; `--target` moves "
        "a wave at a time, `reconciler status` tracks the progress.",
    )
    default: bool = Field(
        False,
        description="The partner of its connector for installations that name no `partner:` (at most one per "
        "connector; without it, the partner declared first: root file first, then included files in include order).",
    )


class CredentialsSpec(_Strict):
    """Per-installation client credentials, for a partner that left its own blank."""

    client_id: NonEmpty
    client_secret: NonEmpty = Field(description=SECRET_REF_DESCRIPTION)


class InstallationSpec(_Strict):
    """One connector installation of a tenant."""

    connector: ConnectorName | None = Field(
        None,
        description="Catalog connector (or implied by `partner`); with platform type cyclr, any connector the "
        "account can install (one outside the catalog takes no partner, and Cyclr runs its sign-in).",
    )
    partner: Name | None = Field(None, description="Partner entry to use; default: the connector's default partner.")
    parameters: dict[Name, str] = Field(
        default_factory=dict,
        description="Install parameters: organization, project (a connector outside the catalog: its own, checked "
        "against the platform's connector list when planning).",
    )
    scopes: Annotated[Strings, Field(min_length=1)] | None = Field(
        None,
        validate_default=True,
        json_schema_extra=_a_list_when_given,
        description="Scopes to request; required on the local platform and for the catalog's connectors.",
    )
    credentials: CredentialsSpec | None = None
    auth_via: AuthVia | None = Field(None, description=AUTH_VIA_DESCRIPTION + " Default: its partner's.")
    protect: bool = Field(False, description="A plan that would delete it fails unless --allow-delete names it.")

    @field_validator("scopes", mode="after")
    @classmethod
    def _scopes_required_locally(cls, value: tuple[str, ...] | None, info: ValidationInfo) -> tuple[str, ...] | None:
        if value is None and (info.context or {}).get("platform", "local") == "local":
            raise PydanticCustomError("missing", "Field required")  # reported as today's missing key
        return value


# An account's API id is the platform's: any text of 1-128 characters without '/', '\\', control characters or
# spaces around it (Cyclr ids are often GUIDs, sometimes words with spaces).
AccountId = Annotated[
    str, StringConstraints(pattern=r"^[^\s/\\\x00-\x1f\x7f](?:[^/\\\x00-\x1f\x7f]{0,126}[^\s/\\\x00-\x1f\x7f])?$")
]


class AccountSpec(_Strict):
    """The tenant's account on the Cyclr platform (platform type cyclr only)."""

    id: AccountId | None = Field(None, description="The account's API id; default: the tenant key.")
    name: NonEmpty | None = Field(None, description="The account's name; default: the tenant key.")
    timezone: NonEmpty | None = Field(None, description="The account's time zone, e.g. Europe/London.")


class TenantSpec(_Strict):
    """One tenant: its installations, and whether all of them are protected from deletion."""

    installations: dict[Name, InstallationSpec] = Field(default_factory=dict)
    account: AccountSpec | None = None
    protect: bool = Field(False, description="Protect every installation of the tenant (as `protect: true` on each).")


class PlatformEndpointsSpec(_Strict):
    """Overrides of the Cyclr origins (a sandbox, a proxy); plain http only to 127.0.0.1 or localhost."""

    api_url: NonEmpty | None = Field(None, description="The Cyclr API, instead of https://<api_domain>.")
    service_url: NonEmpty | None = Field(
        None, description="The service (sign-in links, the callback), instead of https://<service_domain>."
    )


class PlatformSpec(_Strict):
    """Where installations live: `local` (our state holds the tokens) or `cyclr` (accounts and account connectors
    reconciled through the partner's Cyclr API)."""

    type: Literal["local", "cyclr"] = Field("local", description="local (the default) or cyclr.")
    service_domain: HostName | None = Field(
        None,
        validate_default=True,
        description="e.g. app-h.cyclr.com; the callback is https://<service_domain>/connector/callback. Required, "
        "but for cyclr with endpoints.service_url, and on the local platform with a `service:` section.",
    )
    api_domain: HostName | None = Field(
        None,
        description="cyclr: the API domain — api.cyclr.com, api.us2.cyclr.com, api.cyclr.uk, api.eu.cyclr.com, "
        "api.apac.cyclr.com, or a private instance's. Required, but with endpoints.api_url.",
    )
    client_id: NonEmpty | None = Field(
        None, description="cyclr: the API client id (Console > Settings > OAuth Client Credentials), literal or reference."
    )
    client_secret: NonEmpty | None = Field(None, description="cyclr: the API client secret. " + SECRET_REF_DESCRIPTION)
    endpoints: PlatformEndpointsSpec | None = None

    @field_validator("service_domain", mode="after")
    @classmethod
    def _service_domain_required_locally(cls, value: str | None, info: ValidationInfo) -> str | None:
        local = info.data.get("type") == "local"  # cyclr: see `config.platform`; a wrong type: reported
        served = (info.context or {}).get("service") == "declared"  # the service is the callback
        if value is None and local and not served:
            raise PydanticCustomError("missing", "Field required")
        return value


class LocalBackendSpec(_Strict):
    """State in local files (the default): `<path>/<environment>.json` beside the configuration."""

    type: Literal["local"] = "local"
    path: PathText = Field("state", description="Directory of local state, relative to the config directory.")


class PostgresBackendSpec(_Strict):
    """Shared state in PostgreSQL (one row per environment; session advisory locks; a direct connection)."""

    type: Literal["postgres"]
    dsn: NonEmpty = Field(description="Connection string, by reference: ${env:RECONCILER_PG_DSN}.")


def _backend_type(value: object) -> str:
    """`type` picks the backend; omitted, it is local (so `backend: {path: other}` stays valid)."""
    found = value.get("type", "local") if isinstance(value, dict) else getattr(value, "type", "local")
    return found if isinstance(found, str) else "?"


BackendSpec = Annotated[
    Annotated[LocalBackendSpec, Tag("local")] | Annotated[PostgresBackendSpec, Tag("postgres")],
    Discriminator(_backend_type, custom_error_type="backend_type", custom_error_message="type must be local or postgres"),
]


def validation_context(root: object) -> dict[str, str]:
    """The context every file of a configuration is validated in: the platform type the root file's data declares
    (read before validation; anything but `cyclr` is the local platform, and a wrong type is reported by the root
    file's own validation), and whether it declares a `service:` section."""
    platform = root.get("platform") if isinstance(root, dict) else None
    cyclr = isinstance(platform, dict) and platform.get("type") == "cyclr"
    service = isinstance(root, dict) and root.get("service") is not None
    return {"platform": "cyclr" if cyclr else "local", "service": "declared" if service else "none"}


class ApiKeySpec(_Strict):
    """A key of the token API (`GET /v1/installations/{address}/token`) and the tenants it may read."""

    name: Name = Field(description="Shown in the audit log of token reads; unique.")
    key: NonEmpty = Field(description="The bearer key. " + SECRET_REF_DESCRIPTION)
    tenants: Annotated[Strings, Field(min_length=1)] = Field(
        description="Globs over tenant keys (eu-*, acme): the installations of these tenants only."
    )


class WebhookSpec(_Strict):
    """Where the service posts its events, each signed with HMAC-SHA256 of the body and `secret`."""

    url: NonEmpty = Field(description="https (plain http only on a loopback host).")
    secret: NonEmpty = Field(description="The signing secret. " + SECRET_REF_DESCRIPTION)


class ServiceSpec(_Strict):
    """The authorization service (`reconciler serve`) at its public URL: tenants' sign-in links, the token API,
    events."""

    public_url: NonEmpty = Field(
        description="Where the service is reached (https; plain http only on a loopback host; a path prefix is "
        "allowed); partners' redirect URI is <public_url>/connector/callback."
    )
    link_lifetime: NonEmpty = Field("7d", description="How long a sign-in link is valid: 45s, 30m, 12h, 7d (at most 30d).")
    api_keys: Annotated[tuple[ApiKeySpec, ...], Field(strict=False)] = ()
    webhooks: Annotated[tuple[WebhookSpec, ...], Field(strict=False)] = ()
    trusted_proxies: Strings = Field(
        (), description="Networks or addresses (10.0.0.0/8, ::1) whose X-Forwarded-* headers are honoured."
    )


class IncludedFile(_Strict):
    """A file pulled in by `include:`: partners and tenants, and further includes."""

    partners: dict[Name, PartnerSpec] = Field(default_factory=dict)
    tenants: dict[Name, TenantSpec] = Field(default_factory=dict)
    include: Annotated[tuple[PathText, ...], Field(strict=False)] = ()


class RootFile(IncludedFile):
    """`reconciler.yaml`, the root of a configuration."""

    model_config = ConfigDict(title="reconciler.yaml", frozen=True, extra="forbid", strict=True)

    version: Literal[1] = Field(description="The configuration format version: 1.")

    @field_validator("version", mode="before")
    @classmethod
    def _exact_version(cls, value: object) -> object:
        if type(value) is not int:  # YAML's `true` and `1.0` would pass as 1
            raise ValueError("input should be 1")
        return value
    platform: PlatformSpec | None = None
    backend: BackendSpec = LocalBackendSpec()
    service: ServiceSpec | None = None
