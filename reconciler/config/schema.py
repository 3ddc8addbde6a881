"""The shape of the YAML files, as strict pydantic models — the source of `reconciler schema`.

Owns: what keys exist, their types and the name patterns. Must not: resolve secrets, read files, or check
anything that needs the catalog or other files (`partners`, `installations`, `values`, `documents`).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    field_validator,
)

from reconciler.names import NAME_PATTERN  # the one rule for names, shared with addresses
from reconciler.references import path_text_problem  # the one rule for paths, shared with ${file:} references

__all__ = [
    "BackendSpec",
    "LocalBackendSpec",
    "PostgresBackendSpec",
    "CredentialsSpec",
    "EndpointsSpec",
    "IncludedFile",
    "InstallationSpec",
    "PartnerSpec",
    "PlatformSpec",
    "RootFile",
    "TenantSpec",
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
SECRET_REF_DESCRIPTION = "A reference, never a literal: ${env:NAME} or ${file:PATH} (relative to the config directory)."  # noqa: S105 - a description


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
    client_id: NonEmpty | None = Field(None, description="Client (App) ID, literal or ${env:}/${file:} reference.")
    client_secret: NonEmpty | None = Field(None, description=SECRET_REF_DESCRIPTION)
    client_secret_expires: dt.date | None = Field(None, strict=False, description="Warn 14 days before this date.")
    redirect_uri: NonEmpty | None = Field(
        None, description="Callback registered with the app; default https://<service_domain>/connector/callback."
    )
    scopes: Annotated[Strings, Field(min_length=1)] | None = Field(
        None, description="Scopes registered with the app; installations may ask only these."
    )
    endpoints: EndpointsSpec | None = None
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

    connector: ConnectorName | None = Field(None, description="Catalog connector (or implied by `partner`).")
    partner: Name | None = Field(None, description="Partner entry to use; default: the connector's default partner.")
    parameters: dict[Name, str] = Field(default_factory=dict, description="Install parameters: organization, project.")
    scopes: Strings = Field(min_length=1)
    credentials: CredentialsSpec | None = None
    protect: bool = Field(False, description="A plan that would delete it fails unless --allow-delete names it.")


class TenantSpec(_Strict):
    """One tenant: its installations, and whether all of them are protected from deletion."""

    installations: dict[Name, InstallationSpec] = Field(default_factory=dict)
    protect: bool = Field(False, description="Protect every installation of the tenant (as `protect: true` on each).")


class PlatformSpec(_Strict):
    service_domain: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.-]+(:[0-9]+)?$")] = Field(
        description="e.g. app-h.cyclr.com; the callback is https://<service_domain>/connector/callback."
    )


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
