"""Carrying out changes on a platform (Cyclr): accounts, account connectors and their sign-in.

Owns: the order of effects per change on the platform — an account created before its installations; an
installation installed (and recorded, not yet authenticated) before its sign-in, so that a run stopped half way
keeps exactly what it created; properties set in place; an installation moved to another connector installed
anew in place of its old account connector (removed first); the sign-in run by the platform through a one-use link
(or deferred: recorded without any link); the account connector removed on delete. Reports through the run's
hooks, persists through the run (a write after every step). Must not: decide actions, print or prompt (the sign-in
step it is given may), hold a sign-in token anywhere but in the link it hands that step.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import SecretStr

from reconciler.auth.signin import PlatformSignIn
from reconciler.config.desired import DesiredState
from reconciler.declared import INSTALLATION_FIELDS, DeclaredInstallation, target_digest
from reconciler.errors import ReconcilerError
from reconciler.pending import PENDING_LIFETIME
from reconciler.placement import DeclaredAccount
from reconciler.plan import Action, ResourceChange
from reconciler.platforms.cyclr.api import CyclrApi, sign_in_link
from reconciler.platforms.cyclr.connectors import InstallRequest, install_request, resolve_connector
from reconciler.state.model import (
    AccountConnectorRecord,
    AccountRecord,
    AnyRecord,
    InstallationRecord,
    PendingRecord,
    StateDocument,
)
from reconciler.state.records import installation_record, updated_installation_record
from reconciler.tokens.model import TokenSet

__all__ = [
    "PlatformServices",
    "PlatformSteps",
    "auth_value",
    "carry_out_on_platform",
    "kept_installed",
    "push_tokens",
]


@dataclass(frozen=True)
class PlatformServices:
    """What the executor needs of the platform: its API, its connector list (cached by the caller), where its
    sign-in links start, and the sign-in step (None: every sign-in is deferred)."""

    api: CyclrApi
    connectors: Callable[[], Sequence[Mapping[str, Any]]]
    service_url: str
    sign_in: PlatformSignIn | None


class _Hooks(Protocol):
    def step(self, address: str, message: str) -> None: ...


class _Result(Protocol):
    @property
    def completed(self) -> list[str]: ...
    @property
    def pending(self) -> list[tuple[str, str]]: ...


class Run(Protocol):
    """What these steps use of the executor's run (`reconciler.apply.Run`)."""

    @property
    def doc(self) -> StateDocument: ...
    @property
    def desired(self) -> DesiredState: ...
    @property
    def hooks(self) -> _Hooks: ...
    @property
    def result(self) -> _Result: ...

    def save(self, address: str, record: AnyRecord | None) -> None: ...
    def installation_record(self, address: str) -> InstallationRecord | None: ...


def carry_out_on_platform(
    run: Run, change: ResourceChange, services: PlatformServices | None, now: Callable[[], dt.datetime]
) -> bool:
    """Carry out the platform's part of `change` (an account, or an installation that is or was on it). False: the
    rest is the usual executor's — none of it, or, where the reconciler holds the tokens (`auth_via: reconciler`),
    the authorization (its tokens then go to the account connector, see `push_tokens`) or the delete."""
    record = run.doc.resources.get(change.address)
    target = change.target
    placed = (isinstance(target, DeclaredInstallation) and target.placement is not None) or (
        isinstance(record, InstallationRecord) and record.placement is not None
    )
    if change.kind != "account" and not placed:
        return False
    if services is None:
        raise ReconcilerError("this change is on a platform, but no platform is configured", hint="plan again")
    steps = PlatformSteps(run, services, now)
    if change.kind == "account":
        steps.account(change, record if isinstance(record, AccountRecord) else None)
        return True
    if change.action is Action.DELETE:
        assert isinstance(record, InstallationRecord)
        return steps.delete_installation(change.address, record)
    assert isinstance(target, DeclaredInstallation)
    return steps.installation(change, target)


class PlatformSteps:
    def __init__(self, run: Run, services: PlatformServices, now: Callable[[], dt.datetime]) -> None:
        self.run, self.services, self.api, self.now = run, services, services.api, now

    # -- accounts -----------------------------------------------------------------------------------------------

    def account(self, change: ResourceChange, recorded: AccountRecord | None) -> None:
        address = change.address
        if change.action is Action.DELETE:
            assert recorded is not None
            gone = not self.api.delete_account(recorded.id)
            self.run.save(address, None)
            self.run.hooks.step(address, "deleted" + (" (it was already gone from the platform)" if gone else ""))
        else:
            want = change.target
            assert isinstance(want, DeclaredAccount)
            if change.action is Action.UPDATE:
                self.api.update_account(want.id, want.name, want.timezone)
            else:
                self.api.create_account(want.id, want.name, want.timezone)
            self.run.save(address, AccountRecord(**dict(want)))
            self.run.hooks.step(address, f"{change.action.value}d" if change.action is not Action.REAUTHORIZE else "created")
        self.run.result.completed.append(address)

    # -- installations ------------------------------------------------------------------------------------------

    def delete_installation(self, address: str, record: InstallationRecord) -> bool:
        self.uninstall(record)
        if not record.platform_holds_tokens:
            return False  # our tokens: revoked and forgotten as usual
        self.run.save(address, None)
        self.run.result.completed.append(address)
        self.run.hooks.step(address, "deleted; its account connector is removed")
        return True

    def installation(self, change: ResourceChange, want: DeclaredInstallation) -> bool:
        """Install (or update the properties of) `want`, then sign it in through the platform unless the change
        needs none. False: the reconciler holds its tokens, and the usual executor authorizes or updates it."""
        address, placement = want.address, want.placement
        assert placement is not None
        request = self.request(want)
        record = self.run.installation_record(address)
        moved = record is None or record.account_connector is None or record.placement != placement
        moved = moved or (record is not None and record.account_connector is not None
                          and record.account_connector.connector_id != request.connector.id)
        if change.action is Action.CREATE or moved:
            self.uninstall(record)  # one account connector per installation: the one it replaces goes first
            record = self.install(want, request)
        else:
            assert record is not None and record.account_connector is not None
            self.set_properties(placement.account, record.account_connector.account_connector_id, request)
            record = updated_installation_record(record, want)
            if change.action is Action.REAUTHORIZE:  # the new sign-in is for everything declared now
                record = record.model_copy(update={rule.field: getattr(want, rule.field) for rule in INSTALLATION_FIELDS})
            if change.action is Action.UPDATE and placement.platform_holds_tokens:
                self.run.save(address, record.model_copy(update={"pending": None}))
                self.run.result.completed.append(address)
                self.run.hooks.step(address, "properties updated")
                return True
        if not placement.platform_holds_tokens:
            return False
        self.sign_in(want, record)
        return True

    def request(self, want: DeclaredInstallation) -> InstallRequest:
        placement = want.placement
        assert placement is not None
        connector = resolve_connector(want.connector, self.services.connectors())
        client = None
        if want.client_id:
            secret_value = self.run.desired.secret(want.client_secret_ref)
            secret = secret_value.get_secret_value() if secret_value is not None else None
            if secret is None:
                raise ReconcilerError(f"the client secret {want.client_secret_ref} is not resolved")
            client = (want.client_id, secret)
        return install_request(
            connector, flavour=want.auth or None, parameters=want.parameters, scopes=want.scopes, client=client,
            pinned_authentication=placement.authentication,
        )

    def install(self, want: DeclaredInstallation, request: InstallRequest) -> InstallationRecord:
        """Install the account connector and record it at once (not yet authenticated)."""
        assert want.placement is not None
        installed = self.api.install(
            want.placement.account, request.connector.id, name=want.name,
            authentication_id=request.authentication_id, properties=request.properties,
        )
        where = AccountConnectorRecord(
            account_connector_id=str(installed.get("Id")), connector_id=request.connector.id,
            connector_version=request.connector.version or None, authentication_id=request.authentication_id,
            authenticated=bool(installed.get("Authenticated")),
        )
        record = installation_record(want, granted=(), authorized_at=None).model_copy(
            update={"status": "pending_authorization", "account_connector": where}
        )
        self.run.save(want.address, record)
        self.run.hooks.step(want.address, f"installed in account {want.placement.account} (account connector {where.account_connector_id})")
        return record

    def uninstall(self, record: InstallationRecord | None) -> None:
        """Remove the account connector `record` says it has (already gone is as good)."""
        if record is not None and record.placement is not None and record.account_connector is not None:
            self.api.delete_account_connector(record.placement.account, record.account_connector.account_connector_id)

    def set_properties(self, account: str, account_connector_id: str, request: InstallRequest) -> None:
        for prop in request.properties:
            self.api.set_property(account, account_connector_id, prop["Name"], prop["Value"])

    # -- sign-in ------------------------------------------------------------------------------------------------

    def sign_in(self, want: DeclaredInstallation, record: InstallationRecord) -> None:
        """The platform's sign-in: deferred (recorded as due, with no link: a link holds a one-use token), or run
        now through the sign-in step; the record says authenticated once the platform does."""
        address, placement, installed = want.address, want.placement, record.account_connector
        assert placement is not None and installed is not None
        sign_in = self.services.sign_in
        if sign_in is None:
            return self.defer(want, record)

        def link_for(target_origin: str | None) -> str:
            token = self.api.sign_in_token(placement.account)
            origin = target_origin or self.services.service_url  # None: the platform's own origin
            return sign_in_link(self.services.service_url, installed.account_connector_id, token, origin)

        def authenticated() -> bool:
            found = self.api.get_account_connector(placement.account, installed.account_connector_id)
            return bool(found and found.get("Authenticated"))

        sign_in.sign_in(link_for, authenticated, address)
        now = self.now()
        signed_in = record.model_copy(
            update={
                "status": "authorized", "pending": None, "drift": None, "authorized_at": now, "verified_at": now,
                "account_connector": installed.model_copy(update={"authenticated": True}),
            }
        )
        self.run.save(address, signed_in)
        self.run.result.completed.append(address)
        self.run.hooks.step(address, "signed in through the platform (authenticated)")

    def defer(self, want: DeclaredInstallation, record: InstallationRecord) -> None:
        now = self.now()
        marker = PendingRecord(
            since=now, expires_at=now + PENDING_LIFETIME, target_digest=target_digest(want),
            client_id=want.client_id, requested_scopes=want.scopes, authorize_url=None,
        )
        status = "pending_authorization"
        self.run.save(want.address, record.model_copy(update={"pending": marker, "status": status}))
        self.run.result.pending.append((want.address, ""))
        self.run.hooks.step(want.address, f"sign-in due: reconciler authorize {want.address}")


# -- tokens of our own (auth_via: reconciler) -------------------------------------------------------------------


def kept_installed(old: AnyRecord | None, new: AnyRecord | None) -> AnyRecord | None:
    """`new`, keeping where `old` is installed when `new` (a record of the same placement, written by a step that
    knows nothing of platforms: an authorization of our own, a deferral) does not say."""
    if not isinstance(new, InstallationRecord) or new.placement is None or new.account_connector is not None:
        return new
    if isinstance(old, InstallationRecord) and old.placement == new.placement:
        return new.model_copy(update={"account_connector": old.account_connector})
    return new


def auth_value(tokens: TokenSet) -> SecretStr:
    """The platform's AuthValue of `tokens`: the JSON string {AccessToken, RefreshToken, Expires, RefreshExpires}."""
    expires = tokens.expires_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if tokens.expires_at else None
    refresh = tokens.refresh_token.get_secret_value() if tokens.refresh_token is not None else None
    value = {"AccessToken": tokens.access_token.get_secret_value(), "RefreshToken": refresh, "Expires": expires,
             "RefreshExpires": None}
    return SecretStr(json.dumps(value))


def push_tokens(run: Run, services: PlatformServices | None, installation: DeclaredInstallation, tokens: TokenSet) -> None:
    """Hand tokens we just recorded for an installation on the platform to its account connector."""
    placement = installation.placement
    if placement is None or services is None:
        return
    record = run.installation_record(installation.address)
    installed = record.account_connector if record is not None else None
    if record is None or installed is None:
        raise ReconcilerError("the account connector is not recorded: its tokens cannot be handed over", hint="plan again")
    services.api.put_auth_value(placement.account, installed.account_connector_id, auth_value(tokens))
    signed_in = installed.model_copy(update={"authenticated": True})
    run.save(installation.address, record.model_copy(update={"account_connector": signed_in}))
    run.hooks.step(installation.address, "tokens handed to the platform (authenticated)")
