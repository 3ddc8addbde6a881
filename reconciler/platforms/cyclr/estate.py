"""What already exists on the platform, read for `reconciler import`: accounts and their account connectors, as
the names, parameters and scopes a configuration would declare for them.

Owns: reading the estate (one listing per account, one detail per account connector) and naming what was found
— a tenant key from the account (its id when that is a valid name, else a slug of its name), an installation name
from the account connector's name, parameters by the slug of their property names, the auth flavour from the
authentication entry. Must not: read configuration or state, or keep a secret (a ClientSecret property is never
read into what is returned; the platform masks it anyway).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.names import NAME_PATTERN
from reconciler.platforms.cyclr.api import CyclrApi
from reconciler.platforms.cyclr.connectors import CLIENT_ID, CREDENTIALS, FLAVOUR_WORDS, SCOPES, slug

__all__ = ["FoundAccount", "FoundInstallation", "masked", "read_estate", "unique_name"]

_NAME = re.compile(NAME_PATTERN)


@dataclass(frozen=True)
class FoundInstallation:
    """One account connector, as an installation would declare it."""

    name: str
    account_connector_id: str
    connector: str  # the slug of the platform connector's name
    connector_id: str
    connector_version: str | None
    authentication_id: str | None
    flavour: str | None  # the catalog's auth flavour the authentication entry is, if any
    authenticated: bool
    parameters: dict[str, str]
    scopes: tuple[str, ...]
    client_id: str | None  # a ClientId property of its own (its secret is referenced, never read)


@dataclass(frozen=True)
class FoundAccount:
    id: str
    name: str
    timezone: str | None
    tenant: str  # the tenant key it would have
    installations: tuple[FoundInstallation, ...] = field(default=())


def masked(prop: Mapping[str, Any]) -> bool:
    """Whether the platform hides a property's value (a sensitive one reads as asterisks): it is not the value."""
    value = str(prop.get("Value", ""))
    return len(value) >= 3 and set(value) == {"*"}


def unique_name(wanted: str, taken: set[str]) -> str:
    """`wanted` as a valid name not in `taken` (a numeric suffix where needed); added to `taken`."""
    base = slug(wanted)[:58] or "imported"
    if not _NAME.fullmatch(base):
        base = f"x-{base}"[:58]
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    return name


def tenant_key(account: Mapping[str, Any], taken: set[str]) -> str:
    """The account's id when it is a valid name not yet taken, else a slug of its name."""
    account_id = str(account.get("Id", ""))
    if _NAME.fullmatch(account_id) and account_id not in taken:
        taken.add(account_id)
        return account_id
    return unique_name(str(account.get("Name") or account_id), taken)


def read_estate(
    api: CyclrApi,
    accounts: Iterable[tuple[Mapping[str, Any], str]],
    connectors: Sequence[Mapping[str, Any]],
    map_: Callable[..., Any] = map,
) -> list[FoundAccount]:
    """Each (account, tenant key) with its account connectors read (`map_`: how the accounts are visited, e.g. a
    thread pool's map)."""

    def one(item: tuple[Mapping[str, Any], str]) -> FoundAccount:
        account, tenant = item
        account_id = str(account["Id"])
        taken: set[str] = set()
        found = []
        for listed in sorted(api.list_account_connectors(account_id), key=lambda c: str(c.get("Name", ""))):
            detail = api.get_account_connector(account_id, str(listed.get("Id")))
            if detail is None:
                continue
            merged = {**listed, **detail, "Connector": {**(listed.get("Connector") or {}), **(detail.get("Connector") or {})}}
            installation = _installation(merged, connectors, taken)
            if installation.connector:  # one whose connector the platform does not name cannot be declared
                found.append(installation)
        timezone = account.get("Timezone")
        return FoundAccount(account_id, str(account.get("Name") or account_id), str(timezone) if timezone else None,
                            tenant, tuple(found))

    return list(map_(one, list(accounts)))


def _installation(found: Mapping[str, Any], connectors: Sequence[Mapping[str, Any]], taken: set[str]) -> FoundInstallation:
    connector = found.get("Connector") or {}
    properties = {str(p.get("Name", "")): str(p.get("Value", "")) for p in found.get("Properties") or () if not masked(p)}
    parameters = {
        slug(name): value for name, value in properties.items() if slug(name) not in CREDENTIALS and slug(name) != SCOPES
    }
    scopes = next((tuple(v.split()) for n, v in properties.items() if slug(n) == SCOPES), ())
    authentication = found.get("AuthenticationId")
    return FoundInstallation(
        name=unique_name(str(found.get("Name") or found.get("Id")), taken),
        account_connector_id=str(found.get("Id")),
        connector=slug(str(connector.get("Name", ""))),
        connector_id=str(connector.get("Id", "")),
        connector_version=str(connector["Version"]) if connector.get("Version") else None,
        authentication_id=str(authentication) if authentication is not None else None,
        flavour=_flavour(connector.get("Id"), authentication, connectors),
        authenticated=bool(found.get("Authenticated")),
        parameters=dict(sorted(parameters.items())),
        scopes=scopes,
        client_id=properties.get(CLIENT_ID) or None,
    )


def _flavour(connector_id: Any, authentication: Any, connectors: Sequence[Mapping[str, Any]]) -> str | None:
    """The catalog's auth flavour whose words the authentication entry's AuthName carries."""
    for listed in connectors:
        if str(listed.get("Id")) != str(connector_id):
            continue
        for entry in listed.get("Authentication") or ():
            if str(entry.get("Id")) == str(authentication):
                name = str(entry.get("AuthName", "")).lower()
                return next((f for f, words in FLAVOUR_WORDS.items() if any(w in name for w in words)), None)
    return None
