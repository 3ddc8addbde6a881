"""Sign-ins through the service: opening a link starts the provider flow at that moment; the provider's callback
completes it through the executor's own authorize step, under the state lock.

Owns: which link may be opened (signed, its pending authorization still recorded, unexpired, still what the
configuration declares), the attempt kept between the redirect and the callback (taken exactly once: a replayed
callback finds nothing), and what the tenant is told. Must not: speak HTTP or render HTML (`answers` values are
turned into responses by `reconciler.service.app`), or carry out a step itself (`reconciler.apply.Run` does).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from reconciler.apply import Run
from reconciler.auth.errors import ConsentError, ProviderError
from reconciler.auth.request import AuthorizationRequest
from reconciler.declared import DeclaredInstallation
from reconciler.errors import ReconcilerError, StateLockedError, one_line
from reconciler.links import split_pending_id
from reconciler.pending import pending_target
from reconciler.service.context import ServiceContext
from reconciler.service.observe import LOGGER
from reconciler.service.platform_signin import (
    open_platform_link,
    platform_target,
    record_platform_sign_in,
    signed_in,
)
from reconciler.state.model import InstallationRecord, StateDocument
from reconciler.state.service_store import Attempt, AuditEntry

__all__ = [
    "ATTEMPT_LIFETIME", "Answer", "QuietHooks", "attempt_key", "complete_callback", "complete_platform_return", "open_link",
]

ATTEMPT_LIFETIME = dt.timedelta(minutes=30)  # from opening a link to its callback
log = logging.getLogger(LOGGER)


@dataclass(frozen=True)
class Answer:
    """What the tenant gets: a redirect to the provider, or a page (title and lines, no secret in either)."""

    status: int
    title: str = ""
    lines: tuple[str, ...] = ()
    location: str | None = None
    scopes: tuple[str, ...] = field(default=())


def _reissue(address: str) -> str:
    return f"ask the team that sent it for a new link (reconciler authorize --reissue {address})"


def _gone(address: str, why: str) -> Answer:
    return Answer(410, "This link no longer works", (why, _reissue(address)))


def _forged() -> Answer:
    return Answer(403, "This link is not valid", ("the link is incomplete or was changed; open it exactly as it was sent",))


class _Refused(Exception):
    def __init__(self, answer: Answer) -> None:
        self.answer = answer


def _standing(ctx: ServiceContext, doc: StateDocument, address: str, pending_id: str) -> DeclaredInstallation:
    """The declaration the link's pending authorization may still be completed for; `_Refused` (410) when it is
    completed, replaced, expired or withdrawn."""
    record = doc.resources.get(address)
    if not isinstance(record, InstallationRecord) or (record.pending is None and record.status != "authorized"):
        raise _Refused(_gone(address, "the sign-in it was for was withdrawn"))
    if record.pending is None:
        raise _Refused(_gone(address, "the sign-in it was for is already completed"))
    if ctx.issuer(doc.lineage).pending_id(address, record.pending) != pending_id:
        raise _Refused(_gone(address, "a newer link replaced it, or the sign-in it was for is already completed"))
    if ctx.now() >= record.pending.expires_at:
        raise _Refused(_gone(address, f"it expired at {record.pending.expires_at.isoformat(timespec='minutes')}"))
    target = platform_target if record.platform_holds_tokens else _target
    installation = target(ctx, doc, address)
    if installation is None and ctx.reload_config():
        installation = target(ctx, doc, address)
    if installation is None:
        raise _Refused(_gone(address, "the configuration changed since it was sent: the sign-in it was for was withdrawn"))
    return installation


def _target(ctx: ServiceContext, doc: StateDocument, address: str) -> DeclaredInstallation | None:
    return pending_target(ctx.loaded.desired, doc, address)


def _run(ctx: ServiceContext, doc: StateDocument, code: str | None = None) -> Run:  # code: the consent step's
    consent = _Code(code) if code is not None else None
    return Run(ctx.loaded.desired, dataclasses.replace(ctx.services, consent=consent), QuietHooks(), doc, False)


def open_link(ctx: ServiceContext, pending_id: str, sig: str | None) -> Answer:
    """A link opened: its signature checked (403), its pending authorization still standing (410), then a fresh
    request (new `state`, PKCE where the flavour has it) kept as an attempt, and a redirect to the provider."""
    address = split_pending_id(pending_id)
    doc = ctx.peek(address) if address is not None else None
    if address is None or doc is None or not ctx.issuer(doc.lineage).signed(pending_id, sig):
        return _forged()
    try:
        installation = _standing(ctx, doc, address, pending_id)
    except _Refused as refused:
        return refused.answer
    if installation.placement is not None and installation.placement.platform_holds_tokens:
        try:
            return Answer(302, location=open_platform_link(ctx, doc, installation, pending_id, lambda n: attempt_key("platform", n)))
        except (ReconcilerError, ProviderError) as exc:
            return Answer(502, "This sign-in cannot start", (f"the integration platform refused: {exc.message}", "try again in a minute"))
    request = _run(ctx, doc).flow(installation).authorization_request()
    if request.redirect_uri != ctx.settings.callback_url:
        return Answer(500, "This sign-in cannot start", ("the application's redirect URI is not this service's callback",))
    now = ctx.now()
    sealed = ctx.vault(doc.lineage).seal_attempt(address, request.sealed(now, now + ATTEMPT_LIFETIME))
    key = attempt_key("oauth", request.state.get_secret_value())
    ctx.store.put_attempt(Attempt(key, address, pending_id, sealed, now, now + ATTEMPT_LIFETIME))
    return Answer(302, location=request.url)


def attempt_key(kind: str, value: str) -> str:
    """Where an attempt is kept: a digest of its kind (`oauth`: the OAuth `state`; `platform`: the return nonce) and
    its value, so that one kind's value never finds the other's attempt."""
    return hashlib.sha256(f"reconciler attempt\n{kind}\n{value}".encode()).hexdigest()


def complete_callback(ctx: ServiceContext, params: Mapping[str, str]) -> Answer:
    """The provider's redirect back: the attempt its `state` names, taken once (400 when unknown or used), the code
    exchanged (before the state lock), then under the lock the organization checked and the tokens recorded —
    the executor's own steps, as `reconciler authorize` runs them."""
    state = params.get("state", "")
    if "admin_consent" in params or state.startswith("admin-consent."):
        return _admin_consent(params)
    attempt, doc = _taken(ctx, "oauth", state)
    if attempt is None or doc is None:
        return _unknown()
    try:
        request = AuthorizationRequest.unsealed(ctx.vault(doc.lineage).open_attempt(attempt.address, dict(attempt.blob)))
    except ReconcilerError:  # sealed under another key or lineage (a rekey, a new state): nothing to complete
        return _unknown()
    if not hmac.compare_digest(request.state.get_secret_value().encode(), state.encode()):
        return _unknown()
    if "error" in params:
        denied = params.get("error") == "access_denied"
        reason = "you declined the request" if denied else f"the sign-in page refused: {one_line(params['error'])[:100]}"
        return _failed(ctx, attempt, reason)
    code = params.get("code", "")
    if not code:
        return Answer(400, "This sign-in cannot be completed", ("the answer carries no authorization code",))
    try:
        installation = _standing(ctx, doc, attempt.address, attempt.pending_id)
        tokens = _run(ctx, doc, code).obtain_tokens(installation, request)
    except _Refused as refused:
        return refused.answer
    except (ConsentError, ProviderError) as exc:
        return _failed(ctx, attempt, exc.message)
    return _completed(ctx, attempt, lambda run, want: run.record_tokens(want, tokens))


def complete_platform_return(ctx: ServiceContext, params: Mapping[str, str]) -> Answer:
    """The tenant back from the platform's sign-in: the attempt its nonce names, taken once (400 when unknown or
    used); once the platform reports the connection signed in (asked before the state lock), recorded."""
    attempt, doc = _taken(ctx, "platform", params.get("attempt", ""))
    if attempt is None or doc is None:
        return _unknown()
    try:
        installation = _standing(ctx, doc, attempt.address, attempt.pending_id)
        signed_in(ctx, doc, installation, params)
    except _Refused as refused:
        return refused.answer
    except (ConsentError, ProviderError) as exc:
        return _failed(ctx, attempt, exc.message)
    return _completed(ctx, attempt, lambda run, want: record_platform_sign_in(ctx, run, want))


def _taken(ctx: ServiceContext, kind: str, value: str) -> tuple[Attempt | None, StateDocument | None]:
    """The attempt of `kind` that `value` names, taken (once), and the state it is completed against."""
    attempt = ctx.store.take_attempt(attempt_key(kind, value), ctx.now()) if value else None
    return attempt, ctx.peek(attempt.address) if attempt is not None else None


def _completed(ctx: ServiceContext, attempt: Attempt, record: Callable[[Run, DeclaredInstallation], None]) -> Answer:
    """`_complete`, or a page asking to try again when the state stayed locked (by a long apply)."""
    try:
        return _complete(ctx, attempt, record)
    except StateLockedError:
        log.warning("state locked: a sign-in was not recorded", extra={"fields": {"address": attempt.address}})
        return Answer(503, "Busy", ("the service is busy with another change", "open the link you were sent again in a few minutes"))


def _admin_consent(params: Mapping[str, str]) -> Answer:
    """An administrator back from an admin-consent link (`reconciler preflight`): nothing to record (Microsoft keeps
    the consent), only what happens next. Nothing of the request is echoed."""
    if params.get("admin_consent", "").lower() == "true" and "error" not in params:
        return Answer(200, "Admin consent given", (
            "the application may now be used by every user of your directory",
            "your users can sign in with the links they were sent",
        ))
    return Answer(400, "Admin consent was not given", (
        "the consent page refused or was declined; nothing was changed",
        "open the admin-consent link again, as an administrator of the directory",
    ))


def _unknown() -> Answer:
    return Answer(400, "This sign-in cannot be completed", (
        "the answer from the sign-in page is unknown, expired or already used",
        "open the link you were sent again to start over",
    ))


def _complete(ctx: ServiceContext, attempt: Attempt, record: Callable[[Run, DeclaredInstallation], None]) -> Answer:
    """Under the state lock: the attempt's pending authorization still standing, then `record` (the executor's
    record step, or the platform's sign-in) carried out; the audit entry, the events and the tenant's page."""
    address = attempt.address
    with ctx.completing(f"serve: sign-in of {address}"):
        doc = ctx.writer.read()
        if doc is None:
            return _gone(address, "the sign-in it was for was withdrawn")
        try:
            installation = _standing(ctx, doc, address, attempt.pending_id)
        except _Refused as refused:
            return refused.answer
        before = doc.resources.get(address)
        recovering = isinstance(before, InstallationRecord) and before.drift is not None
        run = _run(ctx, doc)
        try:
            record(run, installation)
        except (ConsentError, ProviderError) as exc:
            return _failed(ctx, attempt, exc.message)
        except ReconcilerError as exc:  # not the tenant's to read (a path, a serial): logged, a plain page shown
            log.warning("a sign-in was not recorded", extra={"fields": {"address": address, "error": exc.message}})
            return _failed(ctx, attempt, "the sign-in could not be recorded")
    recorded = run.installation_record(address)
    granted = recorded.granted_scopes if recorded is not None else ()
    by = recorded.authorized_by if recorded is not None else None
    try:
        ctx.audit(AuditEntry(ctx.now(), "authorization.completed", f"tenant:{by}" if by else "tenant", address, " ".join(granted)))
        ctx.on_event("authorization.completed", address, {"scopes": list(granted), "by": by})
        if recovering:
            ctx.on_event("installation.recovered", address, {})
    except Exception:  # recorded already: the tenant is told so; the audit or event failure is logged
        log.exception("a completed sign-in was not audited", extra={"fields": {"address": address}})
    lines = tuple(f"note: {message}" for _, message in run.result.warnings)
    return Answer(200, "Signed in", ("the connection is ready; you may close this page", *lines), scopes=granted)


def _failed(ctx: ServiceContext, attempt: Attempt, reason: str) -> Answer:
    """A sign-in that did not complete: recorded in the audit log and sent as an event; the link stays usable."""
    try:
        ctx.audit(AuditEntry(ctx.now(), "authorization.failed", "tenant", attempt.address, reason))
        ctx.on_event("authorization.failed", attempt.address, {"reason": reason})
    except Exception:
        log.exception("a failed sign-in was not audited", extra={"fields": {"address": attempt.address}})
    return Answer(400, "The sign-in did not complete", (reason, "open the link you were sent again to try once more"))


class _Code:
    """The consent step of a callback: the code the provider sent (its `state` was checked with the attempt)."""

    def __init__(self, code: str) -> None:
        self._code = code

    def obtain(self, request: AuthorizationRequest, label: str) -> str:
        return self._code


class QuietHooks:
    """The executor's reports, unheard: a tenant's page says what happened (warnings come from the result)."""

    def step(self, address: str, message: str) -> None:
        pass

    def link(self, address: str, url: str) -> None:
        pass

    def warning(self, address: str, message: str) -> None:
        pass

