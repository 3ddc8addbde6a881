"""Plan rules for a platform other than our own state: accounts (`account.<tenant>`) and the installations that
live in them (account connectors).

Owns: when an account is created, updated, kept or deleted; how an installation on a platform is judged —
installed anew (new, or gone from the platform), updated in place (properties), signed in again (what its grant is
bound to changed, or the platform says it is no longer authenticated), or waiting for its sign-in. Which declared
attribute is an update and which a re-authorization stays `reconciler.declared`'s table; endpoints the platform
runs itself (its own OAuth flow when it holds the tokens) are not ours to compare.
Must not: read files, the environment, the network or the clock, nor import YAML, HTTP, OAuth or CLI libraries.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from reconciler.addresses import Globs
from reconciler.declared import DeclaredInstallation, Effect, declared_reasons, installation_view, quote
from reconciler.placement import DeclaredAccount, account_reasons, account_view
from reconciler.plan import Action, ResourceChange
from reconciler.state.model import AccountRecord, Drift, InstallationRecord

__all__ = ["HELD_BY_PLATFORM", "account_change", "placed_installation_change", "placed_view"]

HELD_BY_PLATFORM = "held by the platform"
# Where the platform runs the sign-in itself, the endpoints of our own OAuth flow are not what its grant is bound to.
_PLATFORM_RUNS = frozenset({"redirect_uri", "token_url", "api_url", "revoke_url"})


def account_change(
    address: str, want: DeclaredAccount | None, have: AccountRecord | None, allow_delete: Globs
) -> ResourceChange:
    """An account is created for a new tenant and updated in place; when its tenant leaves the configuration it is
    deleted only if `--allow-delete` names it, else kept (its installations are deleted as planned)."""
    if have is None:
        assert want is not None
        return ResourceChange(address, Action.CREATE, ("new account",), None, account_view(want), target=want)
    before = account_view(have)
    if want is None:
        allowed_by = allow_delete.first_match(address)
        if allowed_by is None:
            reason = f"tenant removed from configuration: the account is kept (--allow-delete {address} deletes it)"
            return ResourceChange(address, Action.NOOP, (reason,), before, before)
        allowed = ("tenant removed from configuration", f"deletion allowed by --allow-delete {allowed_by}")
        return ResourceChange(address, Action.DELETE, allowed, before, None)
    after = account_view(want)
    reasons = account_reasons(want, have)
    if want.id != have.id:
        return ResourceChange(address, Action.REAUTHORIZE, reasons, before, after, target=want)
    if reasons:
        return ResourceChange(address, Action.UPDATE, reasons, before, after, target=want)
    return ResourceChange(address, Action.NOOP, ("up to date",), before, after, target=want)


def placed_view(record: InstallationRecord, view: dict[str, Any]) -> dict[str, Any]:
    """A recorded installation on a platform as plans show it: where it is installed, whether the platform says it
    is authenticated; granted scopes the platform holds are said to be held there, never invented."""
    installed = record.account_connector
    if record.platform_holds_tokens:
        view["granted_scopes"] = HELD_BY_PLATFORM
    if installed is not None:
        view["account_connector_id"] = installed.account_connector_id
        view["authenticated"] = installed.authenticated
    return view


def placed_installation_change(
    address: str,
    want: DeclaredInstallation | None,
    have: InstallationRecord | None,
    before: Mapping[str, Any] | None,
    *,
    now: dt.datetime,
    drift: Drift | None,
) -> ResourceChange | None:
    """The change of an installation that is (or was) on a platform; None when neither side is (the local rules
    judge it)."""
    placed = (want is not None and want.placement is not None) or (have is not None and have.placement is not None)
    if not placed:
        return None
    if have is None or want is None:
        return _new_or_removed(address, want, have, before)
    after = installation_view(want)
    if have.placement is None or have.account_connector is None:
        reason = "moves to the platform" if have.placement is None else "not found on the platform: installed again"
        return ResourceChange(address, Action.CREATE, (reason,), before, after, target=want)
    reauthorize = _reasons(Effect.REAUTHORIZE, want, have)
    update = _reasons(Effect.UPDATE, want, have) + _pushed_secret(want, have)
    pending = have.pending
    if pending is not None and not reauthorize and have.status == "pending_authorization":
        if update:  # the sign-in due is bound to the properties it was deferred with: `authorize` refuses it
            reauthorize.append("the sign-in due is for properties that changed since")
        elif now < pending.expires_at:
            reason = f"sign-in due since {pending.since.isoformat()}: reconciler authorize {address}"
            return ResourceChange(address, Action.NOOP, (reason,), before, after, pending=True, target=want)
        else:
            reauthorize.append(f"pending sign-in expired on {pending.expires_at.isoformat()}")
    if pending is None and have.status == "pending_authorization":  # installed; its sign-in failed or was stopped
        reauthorize.append("sign-in not completed")
    drift = drift or have.drift
    if have.status == "authorized" and (drift is not None or not have.account_connector.authenticated):
        reauthorize.append((drift or Drift.DEAUTHENTICATED).words)
    if reauthorize:
        return ResourceChange(address, Action.REAUTHORIZE, (*reauthorize, *update), before, after, target=want)
    if update:
        return ResourceChange(address, Action.UPDATE, tuple(update), before, after, target=want)
    return ResourceChange(address, Action.NOOP, ("up to date",), before, after, target=want)


def _new_or_removed(
    address: str, want: DeclaredInstallation | None, have: InstallationRecord | None, before: Mapping[str, Any] | None
) -> ResourceChange:
    if want is not None:
        assert want.placement is not None
        who = "through the platform" if want.placement.platform_holds_tokens else "by the reconciler"
        reason = f"new installation: installed in account {quote(want.placement.account)}, then signed in {who}"
        return ResourceChange(address, Action.CREATE, (reason,), None, installation_view(want), target=want)
    assert have is not None
    reasons: tuple[str, ...] = ("removed from configuration",)
    if have.placement is not None and have.account_connector is not None:
        reasons += (f"its account connector is removed from account {quote(have.placement.account)}",)
    return ResourceChange(address, Action.DELETE, reasons, before, None)


def _reasons(effect: Effect, want: DeclaredInstallation, have: InstallationRecord) -> list[str]:
    """The table's reasons of `effect`, less the endpoints of our own OAuth flow where the platform runs its own."""
    if want.placement is None or not want.placement.platform_holds_tokens:
        return declared_reasons(effect, want, have)
    same = have.model_copy(update={field: getattr(want, field) for field in _PLATFORM_RUNS})
    return declared_reasons(effect, want, same)


def _pushed_secret(want: DeclaredInstallation, have: InstallationRecord) -> list[str]:
    """A partner's client secret reference that changed is the partner's change, and on a platform also each of its
    installations': the ClientSecret property is pushed again."""
    if want.credentials_source != "partner" or want.client_secret_ref == have.client_secret_ref:
        return []
    return [f"partner {want.partner} client_secret reference changed: ClientSecret is set again"]
