"""The platform's connector list, read: which Cyclr connector an installation names, which of its
`Authentication[]` entries the auth flavour picks, and which account-connector `Properties` its parameters,
scopes and credentials become.

Names are matched as slugs (`microsoft-azure-devops` is the connector Cyclr calls "Microsoft Azure DevOps";
`organization` is the parameter whose TargetName is "Organization"); where several versions of a connector are
offered, the newest is used. Every mismatch is a `PlanError` with a did-you-mean from the platform's own list.

Owns: the mapping from what the configuration declares to the install request. Must not: call the API (the
list is passed in), read files, or hold a secret value anywhere but in the Properties it returns.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.errors import PlanError, one_line

__all__ = ["CyclrConnector", "InstallRequest", "install_request", "resolve_connector", "slug"]

# The catalog's auth flavours and the words by which Cyclr names the matching authentication entry.
FLAVOUR_WORDS: Mapping[str, tuple[str, ...]] = {
    "entra-id": ("entra",),
    "azure-devops-oauth": ("azure devops oauth",),
}
SCOPES = "scopes"
CLIENT_ID, CLIENT_SECRET = "ClientId", "ClientSecret"  # from the partner or the installation's credentials
CREDENTIALS = frozenset({"clientid", "clientsecret"})


@functools.lru_cache(maxsize=4096)
def slug(name: str) -> str:
    """`Microsoft Azure DevOps` -> `microsoft-azure-devops`: lower case, runs of other characters as one dash
    (memoised: a plan of 10,000 installations asks for the same few names about 200,000 times)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


@dataclass(frozen=True)
class CyclrConnector:
    """One connector as the platform lists it (the newest version of its name)."""

    id: str
    name: str
    version: str
    authentications: tuple[Mapping[str, Any], ...]
    parameters: tuple[Mapping[str, Any], ...]

    def authentication(self, flavour: str | None, pinned: str | None = None) -> Mapping[str, Any] | None:
        """The entry a flavour (or a pinned AuthName or Id) picks; None for a connector with no entry at all."""
        entries = self.authentications
        if pinned is not None:
            chosen = [e for e in entries if pinned in (str(e.get("Id")), e.get("AuthName"))]
            return _one(chosen, entries, f"authentication {pinned!r}", self.name)
        if len(entries) <= 1:
            return entries[0] if entries else None
        words = FLAVOUR_WORDS.get(flavour or "", ())
        chosen = [e for e in entries if any(w in str(e.get("AuthName", "")).lower() for w in words)]
        return _one(chosen, entries, f"auth {flavour!r}" if flavour else "no auth", self.name)

    def account_parameters(self) -> dict[str, Mapping[str, Any]]:
        """The parameters an installation declares per account connector, by the slug of their TargetName (the
        client credentials are not among them: they come from the partner or the installation's `credentials:`)."""
        return {
            key: p
            for p in self.parameters
            if p.get("IsAccountConnectorProperty") and (key := slug(str(p.get("TargetName", "")))) not in CREDENTIALS
        }


def _one(
    chosen: Sequence[Mapping[str, Any]], entries: Sequence[Mapping[str, Any]], what: str, connector: str
) -> Mapping[str, Any]:
    if len(chosen) == 1:
        return chosen[0]
    listed = ", ".join(f"{e.get('AuthName')} (Id {e.get('Id')})" for e in entries) or "none"
    problem = "matches several" if chosen else "matches none"
    raise PlanError(
        f"connector {connector!r}: {what} {problem} of its authentication types: {one_line(listed)}",
        hint="pin one on the partner with `authentication: <AuthName or Id>`",
    )


def resolve_connector(name: str, listed: Sequence[Mapping[str, Any]]) -> CyclrConnector:
    """The connector `name` (a slug) among the platform's list, newest version first."""
    matches = [c for c in listed if slug(str(c.get("Name", ""))) == name]
    if not matches:
        known = sorted({slug(str(c.get("Name", ""))) for c in listed})
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}?" if close else "the account can install: " + ", ".join(known[:20])
        raise PlanError(f"connector {name!r} is not offered by the platform", hint=hint)
    newest = max(matches, key=lambda c: _version_key(str(c.get("Version", ""))))
    return CyclrConnector(
        id=str(newest.get("Id")),
        name=str(newest.get("Name")),
        version=str(newest.get("Version", "")),
        authentications=tuple(newest.get("Authentication") or ()),
        parameters=tuple(newest.get("Parameters") or ()),
    )


def _version_key(version: str) -> tuple[tuple[int, str], ...]:
    return tuple((int(part), "") if part.isdigit() else (-1, part) for part in re.split(r"[.\-]", version))


@dataclass(frozen=True)
class InstallRequest:
    """What installing one account connector sends. `properties` may hold a secret (ClientSecret): never shown."""

    connector: CyclrConnector
    authentication_id: str | None
    properties: tuple[Mapping[str, str], ...]

    def __repr__(self) -> str:
        names = ", ".join(p["Name"] for p in self.properties)
        return f"InstallRequest({self.connector.name!r}, authentication={self.authentication_id!r}, [{names}])"


def install_request(
    connector: CyclrConnector,
    *,
    flavour: str | None,
    parameters: Mapping[str, str],
    scopes: Sequence[str],
    client: tuple[str, str] | None = None,
    pinned_authentication: str | None = None,
) -> InstallRequest:
    """The install of `connector` with `parameters` (by slug), `scopes` (the Scopes property, joined by single
    spaces, where the connector has one) and `client` (client id and secret, as ClientId/ClientSecret)."""
    entry = connector.authentication(flavour, pinned_authentication)
    declared = connector.account_parameters()
    given = {slug(key): value for key, value in parameters.items()}
    _check_parameters(connector, declared, given, parameters, scopes)
    if scopes:
        given[SCOPES] = " ".join(scopes)
    properties = [_property(declared[key], value) for key, value in sorted(given.items())]
    if client is not None:
        properties += [{"Name": CLIENT_ID, "Value": client[0]}, {"Name": CLIENT_SECRET, "Value": client[1]}]
    authentication_id = str(entry.get("Id")) if entry is not None else None
    return InstallRequest(connector, authentication_id, tuple(properties))


def _check_parameters(
    connector: CyclrConnector,
    declared: Mapping[str, Mapping[str, Any]],
    given: Mapping[str, str],
    raw: Mapping[str, str],
    scopes: Sequence[str],
) -> None:
    for key in raw:
        if slug(key) not in declared or slug(key) == SCOPES:
            known = sorted(k for k in declared if k != SCOPES)
            close = difflib.get_close_matches(slug(key), known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else "it takes: " + (", ".join(known) or "no parameters")
            raise PlanError(f"connector {connector.name!r} has no parameter {one_line(key)!r}", hint=hint)
    if scopes and SCOPES not in declared:
        raise PlanError(f"connector {connector.name!r} takes no scopes", hint="remove `scopes:` from the installation")
    for key, parameter in declared.items():
        present = bool(scopes) if key == SCOPES else key in given
        if not present and not parameter.get("IsOptional"):
            what = "scopes" if key == SCOPES else f"parameter {key!r}"
            raise PlanError(f"connector {connector.name!r} needs {what}", hint="declare it on the installation")
    for key, value in given.items():
        allowed = declared[key].get("Values")
        if allowed and value not in allowed:
            raise PlanError(
                f"connector {connector.name!r}: {value!r} is not a value of parameter {key!r}",
                hint="one of: " + ", ".join(map(str, allowed)),
            )


def _property(parameter: Mapping[str, Any], value: str) -> dict[str, str]:
    prop = {"Name": str(parameter.get("TargetName")), "Value": value}
    if parameter.get("Id") is not None:
        prop["Id"] = str(parameter["Id"])
    return prop
