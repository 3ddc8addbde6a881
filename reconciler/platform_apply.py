"""Carrying out changes on a platform (Cyclr): accounts, account connectors and their sign-in.

Owns: the order of effects per change on the platform — an account created before its installations; an
installation installed (and recorded, not yet authenticated) before its sign-in, so that a run stopped half way
keeps exactly what it created; properties set in place; the sign-in run by the platform through a one-use link
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

from reconciler.auth.errors import ProviderError
from reconciler.auth.signin import PlatformSignIn
from reconciler.config.desired import DesiredState
from reconciler.declared import DeclaredInstallation, target_digest
from reconciler.errors import ReconcilerError
from reconciler.placement import DeclaredAccount, secret_digest
from reconciler.plan import Action, ResourceChange
from reconciler.platforms.cyclr.api import CyclrApi, sign_in_link
from reconciler.platforms.cyclr.connectors import (
    CLIENT_SECRET,
    InstallRequest,
    install_request,
    resolve_connector,
)
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
    "fresh_sign_in_link",
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
    def link(self, address: str, url: str) -> None: ...


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

    @property
    def pending_lifetime(self) -> dt.timedelta: ...

    def save(self, address: str, record: AnyRecord | None) -> None: ...
    def installation_record(self, address: str) -> InstallationRecord | None: ...
    def with_link(self, address: str, marker: PendingRecord) -> PendingRecord: ...


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
    left = isinstance(record, InstallationRecord) and record.placement is not None and (
        not isinstance(target, DeclaredInstallation) or target.placement is None
    )
    if left and (services is None or change.action is not Action.DELETE):  # leaves the platform: ours from now on
        assert isinstance(record, InstallationRecord)
        return _left_platform(run, record, services)
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


def _left_platform(run: Run, record: InstallationRecord, services: PlatformServices | None) -> bool:
    """An installation the configuration no longer places on the platform: its account connector is removed where
    the platform is still configured, else named for removal in the console. The usual executor does the rest."""
    installed, placement = record.account_connector, record.placement
    if installed is None or placement is None:
        return False
    if services is not None:
        PlatformSteps(run, services, lambda: dt.datetime.now(dt.UTC)).remove_left(
            record.address, placement.account, installed.account_connector_id
        )
    else:
        run.hooks.step(record.address, f"warning: account connector {installed.account_connector_id} in account "
                       f"{placement.account} is left on the platform (no platform is configured): remove it in the console")
    return False


def fresh_sign_in_link(
    services: PlatformServices, account: str, account_connector_id: str, target_origin: str | None
) -> str:
    """A sign-in link with a freshly minted one-use token, ending at `target_origin` (None: the platform's own)."""
    token = services.api.sign_in_token(account)
    origin = target_origin or services.service_url
    return sign_in_link(services.service_url, account_connector_id, token, origin)


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
        installed, placement = record.account_connector, record.placement
        if installed is not None and placement is not None:
            try:
                self.api.delete_account_connector(placement.account, installed.account_connector_id)
            except ProviderError as exc:
                if exc.status != 405:
                    raise
                self.run.hooks.step(address, f"warning: {exc.message}; {exc.hint or 'remove it in the console'}")
        if not record.platform_holds_tokens:
            return False  # our tokens: revoked and forgotten as usual
        self.run.save(address, None)
        self.run.result.completed.append(address)
        self.run.hooks.step(address, "deleted; its account connector is removed")
        return True

    def installation(self, change: ResourceChange, want: DeclaredInstallation) -> bool:
        """Install (or update the properties of) `want`, then sign it in through the platform unless the change
        needs none. False: the reconciler holds its tokens, and the usual executor authorizes or updates it.
        Another account, platform connector or authentication entry is a new account connector (the old one is
        removed once the new one is recorded)."""
        address, placement = want.address, want.placement
        assert placement is not None
        request = self.request(want)
        record = self.run.installation_record(address)
        installed = record.account_connector if record is not None else None
        same = installed is not None and record is not None and record.placement == placement and (
            installed.connector_id, installed.authentication_id) == (request.connector.id, request.authentication_id)
        if change.action is Action.CREATE or not same:
            left = record if installed is not None else None
            record = self.install(want, request, found=record is None)
            if left is not None and left.placement is not None and left.account_connector is not None:
                self.remove_left(address, left.placement.account, left.account_connector.account_connector_id)
        else:
            assert record is not None and installed is not None
            self.set_properties(placement.account, installed.account_connector_id, request)
            installed = installed.model_copy(update={"client_secret_digest": _digest(want, request)})
            if change.action is Action.UPDATE:
                return self.updated(want, record.model_copy(update={"account_connector": installed}))
            # A new sign-in: the record is the declaration's, due until the platform says it is signed in.
            record = installation_record(want, granted=(), authorized_at=None).model_copy(
                update={"account_connector": installed, "status": "pending_authorization"}
            )
            self.run.save(address, record)
        if not placement.platform_holds_tokens:
            return False
        self.sign_in(want, record)
        return True

    def updated(self, want: DeclaredInstallation, record: InstallationRecord) -> bool:
        """Properties set in place: the record takes the declared updates (a sign-in still due stays due, now for
        this declaration). False where the reconciler holds the tokens: the usual update verifies them."""
        pending = record.pending
        if pending is not None and record.status == "pending_authorization":
            pending = pending.model_copy(update={"target_digest": target_digest(want)})
        elif want.placement is not None and want.placement.platform_holds_tokens:
            pending = None
        self.run.save(want.address, updated_installation_record(record, want).model_copy(update={"pending": pending}))
        if want.placement is None or not want.placement.platform_holds_tokens:
            return False
        self.run.result.completed.append(want.address)
        self.run.hooks.step(want.address, "properties updated")
        return True

    def remove_left(self, address: str, account: str, account_connector_id: str) -> None:
        """The account connector an installation moved away from (another account): removed once the new one is
        recorded (a failure is a warning: it is no longer ours to sign in)."""
        try:
            self.api.delete_account_connector(account, account_connector_id)
        except ReconcilerError as exc:
            self.run.hooks.step(address, f"warning: account connector {account_connector_id} in account {account} was not removed ({exc.message})")
            return
        self.run.hooks.step(address, f"account connector {account_connector_id} removed from account {account}")

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

    def install(self, want: DeclaredInstallation, request: InstallRequest, *, found: bool) -> InstallationRecord:
        """Install the account connector and record it at once (not yet authenticated). `found`: first look for
        one of this name and connector (an earlier run stopped between installing and recording it)."""
        assert want.placement is not None
        account = want.placement.account
        installed = self.api.installed(account, request.connector.id, want.name) if found else None
        if installed is None:
            installed = self.api.install(
                account, request.connector.id, name=want.name,
                authentication_id=request.authentication_id, properties=request.properties,
            )
        else:
            self.set_properties(account, str(installed.get("Id")), request)
        if installed.get("Id") in (None, ""):
            raise ReconcilerError("the platform answered an install without the account connector's Id")
        where = AccountConnectorRecord(
            account_connector_id=str(installed.get("Id")), connector_id=request.connector.id,
            connector_version=request.connector.version or None, authentication_id=request.authentication_id,
            authenticated=bool(installed.get("Authenticated")), client_secret_digest=_digest(want, request),
        )
        record = installation_record(want, granted=(), authorized_at=None).model_copy(
            update={"status": "pending_authorization", "account_connector": where}
        )
        self.run.save(want.address, record)
        self.run.hooks.step(want.address, f"installed in account {account} (account connector {where.account_connector_id})")
        return record

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
            return fresh_sign_in_link(self.services, placement.account, installed.account_connector_id, target_origin)

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
            since=now, expires_at=now + self.run.pending_lifetime, target_digest=target_digest(want),
            client_id=want.client_id, requested_scopes=want.scopes, authorize_url=None,
        )
        marker = self.run.with_link(want.address, marker)  # with the service: a link that mints a fresh sign-in
        status = "pending_authorization"
        self.run.save(want.address, record.model_copy(update={"pending": marker, "status": status}))
        self.run.result.pending.append((want.address, marker.link or ""))
        if marker.link:
            self.run.hooks.link(want.address, marker.link)
        else:
            self.run.hooks.step(want.address, f"sign-in due: reconciler authorize {want.address}")


def _digest(want: DeclaredInstallation, request: InstallRequest) -> str | None:
    secret = next((p["Value"] for p in request.properties if p["Name"] == CLIENT_SECRET), None)
    return secret_digest(want.address, secret) if secret is not None else None


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
