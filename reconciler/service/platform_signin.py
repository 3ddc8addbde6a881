"""Sign-ins through the integration platform (Cyclr holds the tokens): opening the link mints a fresh one-use
sign-in token and sends the tenant to the platform's sign-in; the platform sends them back to the service, which
asks the platform whether the account connector is signed in and records it, as `reconciler authorize` does.

Owns: the platform's attempt (a random nonce in the return URL, kept in the service store and taken once) and the
answer to the return. Must not: hold tokens (the platform does), or record anything the platform does not report.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlencode

from reconciler.auth.errors import ConsentError
from reconciler.auth.signin import LinkFor
from reconciler.declared import DeclaredInstallation, target_digest
from reconciler.platform_apply import PlatformServices, PlatformSteps, Run, fresh_sign_in_link
from reconciler.service.context import ServiceContext
from reconciler.state.model import InstallationRecord, StateDocument
from reconciler.state.service_store import Attempt

__all__ = ["RETURN_PATH", "open_platform_link", "platform_target", "record_platform_sign_in", "signed_in"]

RETURN_PATH = "/connector/platform-return"
CONFIRMATIONS = 5  # times the platform is asked, a second apart, after it sent the tenant back
RETURN_WITHIN = dt.timedelta(minutes=30)  # from opening the link to coming back


def platform_target(ctx: ServiceContext, doc: StateDocument, address: str) -> DeclaredInstallation | None:
    """The declaration a platform sign-in of `address` may still be completed for: what was installed is still
    declared, and it is installed (None: withdrawn)."""
    record, want = doc.resources.get(address), ctx.loaded.desired.installations.get(address)
    if not isinstance(record, InstallationRecord) or want is None or record.pending is None:
        return None
    if record.pending.target_digest != target_digest(want.declared) or record.account_connector is None:
        return None
    return want.declared


def open_platform_link(
    ctx: ServiceContext, doc: StateDocument, want: DeclaredInstallation, pending_id: str, attempt_key: Callable[[str], str]
) -> str:
    """A fresh sign-in link of the platform for `want`, ending at the service's return URL; the attempt kept."""
    platform = _platform(ctx)
    record = doc.resources[want.address]
    assert isinstance(record, InstallationRecord) and record.account_connector is not None and want.placement
    nonce = secrets.token_urlsafe(24)
    back = f"{ctx.settings.public_url}{RETURN_PATH}?{urlencode({'attempt': nonce})}"
    link = fresh_sign_in_link(platform, want.placement.account, record.account_connector.account_connector_id, back)
    now = ctx.now()
    ctx.store.put_attempt(Attempt(attempt_key(nonce), want.address, pending_id, {}, now, now + RETURN_WITHIN))
    return link


def signed_in(ctx: ServiceContext, doc: StateDocument, want: DeclaredInstallation, params: Mapping[str, str]) -> None:
    """Back from the platform's sign-in: returns once the platform reports the account connector signed in (asked
    a few times, a second apart); `ConsentError` when it reported an error, or never says so."""
    if "error" in params:
        denied = params.get("error") == "access_denied"
        raise ConsentError("you declined the request" if denied else "the platform's sign-in reported an error")
    platform, record = _platform(ctx), doc.resources.get(want.address)
    assert isinstance(record, InstallationRecord) and record.account_connector is not None and want.placement
    account, connector_id = want.placement.account, record.account_connector.account_connector_id
    for attempt in range(CONFIRMATIONS):
        found = platform.api.get_account_connector(account, connector_id)
        if found and found.get("Authenticated"):
            return
        if attempt + 1 < CONFIRMATIONS:
            time.sleep(1.0)
    raise ConsentError("the platform does not report the connection signed in", category="missed")


def record_platform_sign_in(ctx: ServiceContext, run: Run, want: DeclaredInstallation) -> None:
    """Record the sign-in the platform reported (under the state lock, through the platform's own step)."""
    record = run.installation_record(want.address)
    assert record is not None
    PlatformSteps(run, dataclasses.replace(_platform(ctx), sign_in=_Reported()), ctx.now).sign_in(want, record)


class _Reported:
    """The sign-in step once the platform reported it signed in: asked once more, nothing opened."""

    def sign_in(self, link_for: LinkFor, authenticated: Callable[[], bool], label: str) -> None:
        if not authenticated():
            raise ConsentError("the platform does not report the connection signed in", category="missed")


def _platform(ctx: ServiceContext) -> PlatformServices:
    platform = ctx.services.platform
    if platform is None:
        raise ConsentError("the configuration has no integration platform")
    return platform
