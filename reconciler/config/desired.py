"""DesiredState: the configuration after validation and secret resolution — what the planner consumes.

Owns: the resolved, immutable types. Secrets are `SecretStr` and are never part of `repr` or equality
(the reference string is what plans compare). Must not: import YAML, files or the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pydantic import SecretStr

__all__ = [
    "DesiredInstallation",
    "DesiredPartner",
    "DesiredState",
    "installation_address",
    "partner_address",
    "same_origin",
    "url_origin",
]


def url_origin(url: str) -> str:
    """scheme://host[:port] of a URL: tokens are only ever sent back to the origin that issued them."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def same_origin(a: str, b: str) -> bool:
    """Whether two URLs share scheme, host (case-insensitive) and port (the scheme's default when omitted)."""
    pa, pb = urlsplit(a), urlsplit(b)
    defaults = {"https": 443, "http": 80}
    try:
        ports = (pa.port or defaults.get(pa.scheme), pb.port or defaults.get(pb.scheme))
    except ValueError:
        return False
    return pa.scheme == pb.scheme and pa.hostname == pb.hostname and ports[0] == ports[1]


def partner_address(name: str) -> str:
    return f"partner.{name}"


def installation_address(tenant: str, name: str) -> str:
    return f"installation.{tenant}.{name}"


@dataclass(frozen=True, slots=True)
class DesiredPartner:
    """A partner entry with defaults filled in from the catalog and the platform settings."""

    name: str
    connector: str
    auth: str
    tenant_id: str | None
    client_id: str | None
    client_secret_ref: str | None
    redirect_uri: str
    authorize_url: str
    token_url: str
    api_url: str
    scopes: tuple[str, ...] | None
    client_secret: SecretStr | None = field(default=None, repr=False, compare=False)
    revoke_url: str | None = None  # RFC 7009 revocation endpoint on the token_url's origin; None: none offered

    @property
    def address(self) -> str:
        return partner_address(self.name)

    @property
    def has_credentials(self) -> bool:
        return self.client_id is not None


@dataclass(frozen=True, slots=True)
class DesiredInstallation:
    """One installation with its effective credentials and endpoints (from its partner or its own)."""

    tenant: str
    name: str
    connector: str
    partner: str
    auth: str
    parameters: Mapping[str, str]
    scopes: tuple[str, ...]
    client_id: str
    client_secret_ref: str
    credentials_source: str  # "partner" | "installation"
    redirect_uri: str
    token_url: str
    api_url: str = ""  # where the token is used (verification, refresh checks): tokens never go anywhere else
    protected: bool = False  # `protect: true` on the installation or its tenant: deleting it needs --allow-delete
    client_secret: SecretStr | None = field(default=None, repr=False, compare=False)
    revoke_url: str | None = None  # its partner's revocation endpoint (same origin as token_url), if any

    @property
    def address(self) -> str:
        return installation_address(self.tenant, self.name)


@dataclass(frozen=True)
class DesiredState:
    """Everything the configuration declares, keyed by address."""

    partners: Mapping[str, DesiredPartner]
    installations: Mapping[str, DesiredInstallation]
    environment: str = "default"
    protected_tenants: frozenset[str] = frozenset()  # tenants declared with `protect: true`

    def secret_values(self) -> set[str]:
        """Every resolved secret value, for redaction of anything shown to a user."""
        values = {p.client_secret.get_secret_value() for p in self.partners.values() if p.client_secret}
        values |= {i.client_secret.get_secret_value() for i in self.installations.values() if i.client_secret}
        return values
