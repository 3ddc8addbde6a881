"""Connector catalog: connector definitions as data (`connectors/<name>.yaml` inside this package, read by
`files`).

Owns: the frozen models of a connector definition and scope look-ups (implication, did-you-mean, protocol
decorations). Adding a connector is adding one YAML file here. Must not: read files (the planner imports these
models without a YAML parser), user configuration, state, the network or the clock.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AuthFlavour", "Catalog", "Connector", "ParameterSpec", "ScopeSpec"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AuthFlavour(_Frozen):
    """One way to authorize against a connector's provider, with its default endpoints."""

    description: str = ""
    flow: Literal["azure-devops-assertion", "oauth2-pkce"]
    pkce: bool = False
    requires: tuple[str, ...] = ()
    authorize_url: str
    token_url: str
    api_url: str
    redirect_requires_https: bool = True
    redirect_allows_loopback: bool = False
    scope_prefix: str = ""
    extra_scopes: tuple[str, ...] = ()
    granted_decorations: tuple[str, ...] = ()
    # An RFC 7009 revocation endpoint the provider DOCUMENTS, as a path on the token endpoint's origin (tokens and
    # the client secret go to no other origin); None: it documents none (a partner may still declare
    # `endpoints.revoke_url`), and `revoke_in` tells the user where to revoke by hand.
    revoke_path: str | None = Field(default=None, pattern=r"^/[^?#]*$")
    revoke_in: str = ""
    # What the provider documents about when a person is needed (status and plan warn ahead of it).
    client_secret_days: int | None = None  # an app's client secret expires this long after it is created
    refresh_token_unused_days: int | None = None  # a refresh token lapses after this long unused
    spa_refresh_token_hours: int | None = None  # ... for a single-page-app registration: this long after sign-in
    retiring: str = ""  # the provider is removing this flavour: what to do (plan warns)


class ParameterSpec(_Frozen):
    display_name: str
    required: bool = True
    pattern: str | None = None
    description: str = ""


class ScopeSpec(_Frozen):
    name: str
    high_privilege: bool = False
    implies: tuple[str, ...] = ()


class VerifyCheck(_Frozen):
    """A REST call (relative to api_url, with `{parameter}` placeholders) a fresh token must pass."""

    path: str
    needs_any: tuple[str, ...] = ()  # scopes (or scopes implying them) the call needs; without: only a warning


class Connector(_Frozen):
    name: str
    display_name: str
    catalog_version: int
    auth: dict[str, AuthFlavour]
    parameters: dict[str, ParameterSpec]
    recommended_scopes: tuple[str, ...] = ()
    scopes: dict[str, ScopeSpec]
    verify: dict[str, VerifyCheck] = Field(default_factory=dict)

    def closure(self, scopes: Iterable[str]) -> frozenset[str]:
        """Every scope the given ones grant, following `implies` transitively (memoised per scope set)."""
        key = (self.name, scopes if isinstance(scopes, frozenset) else frozenset(scopes))
        cached = _CLOSURES.get(key)
        if cached is None:
            cached = _CLOSURES[key] = self._expand(key[1])
        return cached

    def _expand(self, scopes: frozenset[str]) -> frozenset[str]:
        seen: set[str] = set()
        todo = list(scopes)
        while todo:
            scope = todo.pop()
            if scope not in seen:
                seen.add(scope)
                spec = self.scopes.get(scope)
                if spec is not None:
                    todo.extend(spec.implies)
        return frozenset(seen)

    def suggest_scope(self, unknown: str) -> str | None:
        """The closest known scope name, for a did-you-mean hint."""
        matches = difflib.get_close_matches(unknown, list(self.scopes), n=1, cutoff=0.6)
        return matches[0] if matches else None

    def normalise_granted(self, flavour: str, granted: tuple[str, ...] | list[str]) -> tuple[str, ...]:
        """Granted scopes without protocol decoration (resource prefix, offline_access, ...), sorted (memoised)."""
        key = (self.name, flavour, tuple(granted))
        cached = _NORMALISED.get(key)
        if cached is None:
            cached = _NORMALISED[key] = self._normalise_granted(flavour, key[2])
        return cached

    def _normalise_granted(self, flavour: str, granted: tuple[str, ...]) -> tuple[str, ...]:
        spec = self.auth[flavour]
        out: set[str] = set()
        for scope in granted:
            if spec.scope_prefix and scope.startswith(spec.scope_prefix):
                scope = scope[len(spec.scope_prefix) :]
            if scope in spec.granted_decorations or scope in spec.extra_scopes:
                continue
            out.add(scope)
        return tuple(sorted(out))


# Scope closures per (connector, scope set): thousands of installations share a handful of scope sets.
_CLOSURES: dict[tuple[str, frozenset[str]], frozenset[str]] = {}
_NORMALISED: dict[tuple[str, str, tuple[str, ...]], tuple[str, ...]] = {}


class Catalog(_Frozen):
    """All connectors shipped with this version, keyed by name."""

    connectors: dict[str, Connector] = Field(default_factory=dict)

    @property
    def version(self) -> str:
        """A digest-friendly version string: each connector's catalog_version."""
        return ",".join(f"{n}@{c.catalog_version}" for n, c in sorted(self.connectors.items()))

    def get(self, name: str) -> Connector | None:
        return self.connectors.get(name)

    def suggest_connector(self, unknown: str) -> str | None:
        matches = difflib.get_close_matches(unknown, list(self.connectors), n=1, cutoff=0.5)
        return matches[0] if matches else None
