"""DesiredState: the configuration after validation and secret resolution — what the planner consumes: each
partner's and installation's declaration (`reconciler.declared`) with its resolved client secret.

Owns: the resolved, immutable types. Secrets are `SecretStr` and are never part of `repr` or equality
(the reference string is what plans compare). Must not: import YAML, files or the environment.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from urllib.parse import urlsplit

from pydantic import SecretStr

from reconciler.declared import DeclaredInstallation, DeclaredPartner
from reconciler.placement import DeclaredAccount

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

__all__ = [
    "ApiKey",
    "CyclrSettings",
    "DesiredInstallation",
    "DesiredPartner",
    "DesiredState",
    "IPNetwork",
    "ServiceSettings",
    "Webhook",
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


@dataclass(frozen=True, slots=True)
class DesiredPartner:
    """A partner's declaration and its resolved client secret (None: it declares no client of its own)."""

    declared: DeclaredPartner
    client_secret: SecretStr | None = field(default=None, repr=False, compare=False)
    # Entra ID: the app's home directory, for preflight only (not recorded: nothing is applied from it)
    app_tenant_id: str | None = None

    @property
    def address(self) -> str:
        return self.declared.address

    @property
    def has_credentials(self) -> bool:
        return self.declared.client_id is not None


@dataclass(frozen=True, slots=True)
class DesiredInstallation:
    """An installation's declaration (its effective client and endpoints) and its resolved client secret."""

    declared: DeclaredInstallation
    client_secret: SecretStr | None = field(default=None, repr=False, compare=False)
    # The partner it names, when that partner's `migrate_to` moves it to `declared.partner` (a campaign's doing,
    # recorded with its next grant as `migrated_from`)
    moved_from: str | None = None

    @property
    def address(self) -> str:
        return self.declared.address


@dataclass(frozen=True, slots=True)
class CyclrSettings:
    """`platform: {type: cyclr}`: where the partner's Cyclr API and service are, and its API client (Console >
    Settings > OAuth Client Credentials), the secret resolved."""

    api_url: str  # https://<api_domain>, or endpoints.api_url
    service_url: str  # https://<service_domain>, or endpoints.service_url: the connectorauth links' origin
    client_id: str
    client_secret_ref: str
    # Empty where the value was not available to a command that needs no secret's value (validate, plan: the
    # reference is then listed in `LoadedConfig.unchecked`).
    client_secret: SecretStr = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """`service.api_keys[]`: a key of the token API and the tenants (globs) whose installations it may read."""

    name: str
    key_ref: str
    key: SecretStr = field(repr=False, compare=False)  # empty where not available (see CyclrSettings)
    tenants: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Webhook:
    """`service.webhooks[]`: where events are posted, signed with `secret`."""

    url: str
    secret_ref: str
    secret: SecretStr = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """`service:`: the authorization service (`reconciler serve`) at its public URL."""

    public_url: str  # no trailing slash; https, or http on a loopback host
    link_lifetime: dt.timedelta = dt.timedelta(days=7)
    api_keys: tuple[ApiKey, ...] = ()
    webhooks: tuple[Webhook, ...] = ()
    trusted_proxies: tuple[IPNetwork, ...] = ()

    @property
    def callback_url(self) -> str:
        """The redirect URI partners register: where providers send tenants back to the service."""
        return f"{self.public_url}/connector/callback"

    def secret_values(self) -> set[str]:
        found = {k.key.get_secret_value() for k in self.api_keys} | {w.secret.get_secret_value() for w in self.webhooks}
        return {v for v in found if v}


@dataclass(frozen=True)
class DesiredState:
    """Everything the configuration declares, keyed by address."""

    partners: Mapping[str, DesiredPartner]
    installations: Mapping[str, DesiredInstallation]
    environment: str = "default"
    protected_tenants: frozenset[str] = frozenset()  # tenants declared with `protect: true`
    platform: CyclrSettings | None = None  # None: the local platform (our own state holds the tokens)
    accounts: Mapping[str, DeclaredAccount] = field(default_factory=dict)  # on a platform: one per tenant
    service: ServiceSettings | None = None  # `service:`: the authorization service's settings

    def secret(self, reference: str | None) -> SecretStr | None:
        """The resolved value of a client secret reference the configuration declares (None: not declared, or
        not resolved here)."""
        return self._secrets.get(reference) if reference is not None else None

    @cached_property
    def _secrets(self) -> dict[str, SecretStr]:
        items: tuple[DesiredPartner | DesiredInstallation, ...] = (*self.partners.values(), *self.installations.values())
        return {i.declared.client_secret_ref: i.client_secret for i in items if i.client_secret and i.declared.client_secret_ref}

    def secret_values(self) -> set[str]:
        """Every resolved secret value, for redaction of anything shown to a user."""
        values = {p.client_secret.get_secret_value() for p in self.partners.values() if p.client_secret}
        values |= {i.client_secret.get_secret_value() for i in self.installations.values() if i.client_secret}
        if self.platform is not None and self.platform.client_secret.get_secret_value():
            values.add(self.platform.client_secret.get_secret_value())
        if self.service is not None:
            values |= self.service.secret_values()
        return values
