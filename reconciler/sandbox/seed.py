"""The sandbox's seed file: apps and organizations for the provider, and a `cyclr:` section (the partner's API
credentials, the Application Connector Library, accounts that exist already with their account connectors).

Owns: the seed file's documented shape (docs/sandbox.md, "Seed file"), and adding existing accounts — the same
shape the `/_sandbox/cyclr/accounts` admin route takes. Must not: hold provider or Cyclr rules (it calls them).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reconciler.sandbox.cyclr import CyclrSandbox
from reconciler.sandbox.cyclr_model import CyclrFailure
from reconciler.sandbox.provider import Provider

__all__ = ["ExistingAccount", "SeedError", "add_existing", "load_seed"]


class SeedError(Exception):
    """The seed file is unreadable or does not have the documented shape."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SeedApp(_Strict):
    client_id: str
    client_secret: str
    flavour: Literal["azure-devops-oauth", "entra-id"] = "azure-devops-oauth"
    redirect_uris: list[str]
    scopes: list[str] | None = None
    grant_only: list[str] | None = None


class ExistingConnector(_Strict):
    """An account connector installed (and maybe signed in) before the reconciler came."""

    connector: str | int  # the connector's Id or Name
    name: str
    description: str = ""
    authentication_id: int | None = None
    properties: dict[str, str] = {}
    authenticated: bool = False


class ExistingAccount(_Strict):
    id: str
    name: str
    timezone: str | None = None
    description: str | None = None
    connectors: list[ExistingConnector] = []


class PartnerCredentials(_Strict):
    client_id: str
    client_secret: str


class LibraryEntry(_Strict):
    authentication_id: int
    client_id: str
    client_secret: str


class CyclrSeed(_Strict):
    partner: PartnerCredentials | None = None
    library: list[LibraryEntry] = []
    accounts: list[ExistingAccount] = []


class Seed(_Strict):
    apps: list[SeedApp] = []
    organizations: dict[str, list[str]] = {}
    cyclr: CyclrSeed = Field(default_factory=CyclrSeed)


def add_existing(cyclr: CyclrSandbox, accounts: list[ExistingAccount]) -> list[dict[str, Any]]:
    """Create the accounts and install their connectors as they are; `[{"Id", "Connectors": [ids]}]`."""
    added = []
    for account in accounts:
        cyclr.create_account(
            {"Id": account.id, "Name": account.name, "Timezone": account.timezone, "Description": account.description}
        )
        ids = []
        for existing in account.connectors:
            properties = [{"Name": k, "Value": v} for k, v in existing.properties.items()]
            body = {"Name": existing.name, "Description": existing.description,
                    "AuthenticationId": existing.authentication_id, "Properties": properties}
            installed = int(cyclr.install(account.id, cyclr.connector_id(existing.connector), body)["Id"])
            if existing.authenticated:
                cyclr.mark_authenticated(installed)
            ids.append(installed)
        added.append({"Id": account.id, "Connectors": ids})
    return added


def load_seed(provider: Provider, path: Path, cyclr: CyclrSandbox | None = None) -> None:
    """Register the apps and organizations listed in a seed file (YAML or JSON; `${NAME}` is taken from the
    environment; see docs/sandbox.md) and, given `cyclr`, its `cyclr:` section."""
    import yaml

    try:
        seed = Seed.model_validate(yaml.safe_load(os.path.expandvars(path.read_text())) or {})
    except (OSError, yaml.YAMLError) as exc:
        raise SeedError(f"{path}: cannot read the seed file ({type(exc).__name__})") from None
    except ValidationError as exc:
        error = exc.errors()[0]
        raise SeedError(f"{path}: {'.'.join(map(str, error['loc']))}: {error['msg']}") from None
    for app in seed.apps:
        provider.register_app(app.model_dump())
    for organization, projects in seed.organizations.items():
        provider.register_org(organization, projects)
    if cyclr is None:
        if seed.cyclr != CyclrSeed():
            raise SeedError(f"{path}: cyclr: this sandbox serves no Cyclr API")
        return
    try:
        if seed.cyclr.partner is not None:
            cyclr.set_partner(seed.cyclr.partner.client_id, seed.cyclr.partner.client_secret)
        for entry in seed.cyclr.library:
            cyclr.set_library(entry.authentication_id, entry.client_id, entry.client_secret)
        add_existing(cyclr, seed.cyclr.accounts)
    except CyclrFailure as failure:
        raise SeedError(f"{path}: cyclr: {failure.message}") from None
