"""Platforms other than our own state: where an installation lives (`Placement`) and the tenant's account it lives
in (`DeclaredAccount`, address `account.<tenant>`), with the account's plan view and which of its changes are
updates.

Owns: those declared types (frozen; no secret). Must not: import YAML, HTTP, state or configuration loading.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["ACCOUNT_FIELDS", "secret_digest", "DeclaredAccount", "Placement", "account_address", "account_reasons", "account_view"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def account_address(tenant: str) -> str:
    return f"account.{tenant}"


class DeclaredAccount(_Frozen):
    """A tenant's account on the integration platform (Cyclr): its API id (the tenant key unless declared), name
    and time zone."""

    tenant: str
    id: str
    name: str
    timezone: str | None = None

    @property
    def address(self) -> str:
        return account_address(self.tenant)


class Placement(_Frozen):
    """Where an installation lives when the platform is not our own state: the account it is installed in, who runs
    its sign-in (`platform`: the platform, which then holds the tokens; `reconciler`: we do, and push the tokens),
    and a pinned authentication entry (AuthName or Id) of the platform's connector."""

    platform: Literal["cyclr"] = "cyclr"
    account: str
    auth_via: Literal["platform", "reconciler"] = "platform"
    authentication: str | None = None

    @property
    def platform_holds_tokens(self) -> bool:
        return self.auth_via == "platform"


def account_view(account: DeclaredAccount) -> dict[str, Any]:
    return {"id": account.id, "name": account.name, "timezone": account.timezone}


ACCOUNT_FIELDS: tuple[tuple[str, str], ...] = (("name", "name changed"), ("timezone", "timezone changed"))


def account_reasons(want: DeclaredAccount, have: DeclaredAccount) -> tuple[str, ...]:
    """An account's name and time zone are updated in place; its id is what it is (another id: another account)."""
    if want.id != have.id:
        return (f"account id changed: {json.dumps(have.id)} -> {json.dumps(want.id)}",)
    return tuple(reason for field, reason in ACCOUNT_FIELDS if getattr(want, field) != getattr(have, field))


def secret_digest(address: str, value: str) -> str:
    """What state keeps of a client secret pushed to the platform (a ClientSecret property), to notice a new value
    behind the same reference: a digest bound to the installation (the value itself is never kept)."""
    return hashlib.sha256(f"reconciler client secret v1\0{address}\0{value}".encode()).hexdigest()[:32]
