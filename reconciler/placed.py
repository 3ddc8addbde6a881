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

from pydantic import SecretStr

from reconciler.addresses import Globs
from reconciler.declared import DeclaredInstallation, Effect, declared_reasons, installation_view, quote
from reconciler.placement import DeclaredAccount, account_reasons, account_view, secret_digest
from reconciler.plan import Action, ResourceChange
from reconciler.state.model import AccountRecord, Drift, InstallationRecord

__all__ = ["HELD_BY_PLATFORM", "account_change", "placed_installation_change", "placed_view"]

HELD_BY_PLATFORM = "held by the platform"
# Where the platform runs the sign-in itself, the endpoints of our own OAuth flow are not what its grant is bound to.
_PLATFORM_RUNS = frozenset({"redirect_uri", "token_url", "api_url", "revoke_url"})


def account_change(
    address: str, want: DeclaredAccount | None, have: AccountRecord | None, allow_delete: Globs,
    drift: Drift | None = None,
) -> ResourceChange:
    """An account is created for a new tenant and updated in place; when its tenant leaves the configuration it is
    deleted only if `--allow-delete` names it, else kept (its installations are deleted as planned). One a refresh
    found gone from the platform (`Drift.GONE`) is created again, or — its tenant gone too — forgotten."""
    if have is None:
        assert want is not None
        return ResourceChange(address, Action.CREATE, ("new account",), None, account_view(want), target=want)
    before = account_view(have)
    if drift is Drift.GONE and want is not None:
        again = ("gone from the platform: created again",)
        return ResourceChange(address, Action.CREATE, again, before, account_view(want), target=want)
    if drift is Drift.GONE:
        return ResourceChange(address, Action.DELETE, ("gone from the platform: forgotten",), before, None)
    if want is None:
        allowed_by = allow_delete.first_match(address)
        if allowed_by is None:
            reason = f"tenant removed from configuration: the account is kept (--allow-delete {address} deletes it)"
            return ResourceChange(address, Action.NOOP, (reason,), before, before, warnings=(reason,))
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
    secret: SecretStr | None = None,
) -> ResourceChange | None:
    """The change of an installation that is (or was) on a platform; None when neither side is (the local rules
    judge it). `secret`: the declared client secret's value, when resolved here (a new value behind the same
    reference is pushed again)."""
    placed = (want is not None and want.placement is not None) or (have is not None and have.placement is not None)
    if not placed:
        return None
    if have is None or want is None:
        return _new_or_removed(address, want, have, before)
    after = installation_view(want)
    if have.placement is None or have.account_connector is None:
        reason = "moves to the platform" if have.placement is None else "not found on the platform: installed again"
        return ResourceChange(address, Action.CREATE, (reason,), before, after, target=want)
    after = _installed_view(after, have)
    compared = _compared(want, have)
    reauthorize = declared_reasons(Effect.REAUTHORIZE, want, compared)
    update = declared_reasons(Effect.UPDATE, want, compared) + _pushed_secret(want, have, secret)
    pending = have.pending
    if pending is not None and not reauthorize and have.status == "pending_authorization":
        due = f"sign-in due since {pending.since.isoformat()}: reconciler authorize {address}"
        if now < pending.expires_at and update:  # set in place; the sign-in stays due, for what is declared now
            return ResourceChange(address, Action.UPDATE, (*update, due), before, after, pending=True, target=want)
        if now < pending.expires_at:
            waiting = {**after, "authenticated": have.account_connector.authenticated}
            return ResourceChange(address, Action.NOOP, (due,), before, waiting, pending=True, target=want)
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


def _installed_view(after: dict[str, Any], have: InstallationRecord) -> dict[str, Any]:
    """The declared view, with where it stays installed (the same account connector) and — where the platform
    holds the tokens — the granted scopes as they will be held: a plan's diff shows only what moves."""
    assert have.account_connector is not None
    if have.platform_holds_tokens:
        after["granted_scopes"] = HELD_BY_PLATFORM
    after["account_connector_id"] = have.account_connector.account_connector_id
    after["authenticated"] = True
    return after


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


def _compared(want: DeclaredInstallation, have: InstallationRecord) -> InstallationRecord:
    """The record the table's reasons are judged against: where the platform runs its own OAuth flow, the
    endpoints of ours are left out (taken from `want`); one shallow copy per installation, not one per effect."""
    if want.placement is None or not want.placement.platform_holds_tokens:
        return have
    return have.model_copy(update={field: getattr(want, field) for field in _PLATFORM_RUNS})


def _pushed_secret(want: DeclaredInstallation, have: InstallationRecord, secret: SecretStr | None) -> list[str]:
    """A partner's client secret reference that changed is the partner's change, and on a platform also each of its
    installations': the ClientSecret property is set again — as it is when a new value stands behind the same
    reference (rotated where the reference points)."""
    if want.credentials_source == "partner" and want.client_secret_ref != have.client_secret_ref:
        return [f"partner {want.partner} client_secret reference changed: ClientSecret is set again"]
    pushed = have.account_connector.client_secret_digest if have.account_connector is not None else None
    if pushed is None or secret is None or want.client_secret_ref != have.client_secret_ref:
        return []
    if secret_digest(want.address, secret.get_secret_value()) != pushed:
        return ["client secret value changed: ClientSecret is set again"]
    return []
