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
from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.apply import Run
from reconciler.auth.errors import ProviderError
from reconciler.auth.request import AuthorizationRequest
from reconciler.declared import DeclaredInstallation
from reconciler.errors import ReconcilerError, StateLockedError, one_line
from reconciler.links import split_pending_id
from reconciler.pending import pending_target
from reconciler.service.context import ServiceContext
from reconciler.state.model import InstallationRecord, StateDocument
from reconciler.state.service_store import Attempt, AuditEntry

__all__ = ["ATTEMPT_LIFETIME", "Answer", "QuietHooks", "attempt_key", "complete_callback", "open_link"]

ATTEMPT_LIFETIME = dt.timedelta(minutes=30)  # from opening a link to its callback


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
    if record.platform_holds_tokens:
        raise _Refused(_gone(address, "this sign-in runs through the integration platform"))
    installation = pending_target(ctx.loaded.desired, doc, address)
    if installation is None and ctx.reload_config():
        installation = pending_target(ctx.loaded.desired, doc, address)
    if installation is None:
        raise _Refused(_gone(address, "the configuration changed since it was sent: the sign-in it was for was withdrawn"))
    return installation


def _run(ctx: ServiceContext, doc: StateDocument, code: str | None = None) -> Run:
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
    request = _run(ctx, doc).flow(installation).authorization_request()
    if request.redirect_uri != ctx.settings.callback_url:
        return Answer(500, "This sign-in cannot start", ("the application's redirect URI is not this service's callback",))
    now = ctx.now()
    sealed = ctx.vault(doc.lineage).seal_attempt(address, request.sealed(now, now + ATTEMPT_LIFETIME))
    key = attempt_key(request.state.get_secret_value())
    ctx.store.put_attempt(Attempt(key, address, pending_id, sealed, now, now + ATTEMPT_LIFETIME))
    return Answer(302, location=request.url)


def attempt_key(state: str) -> str:
    return hashlib.sha256(b"reconciler attempt\n" + state.encode()).hexdigest()


def complete_callback(ctx: ServiceContext, params: Mapping[str, str]) -> Answer:
    """The provider's redirect back: the attempt its `state` names, taken once (400 when unknown or used), then the
    code exchanged, the organization checked and the tokens recorded, exactly as `reconciler authorize` does."""
    state = params.get("state", "")
    attempt = ctx.store.take_attempt(attempt_key(state), ctx.now()) if state else None
    doc = ctx.peek(attempt.address) if attempt is not None else None
    if attempt is None or doc is None:
        return Answer(400, "This sign-in cannot be completed", (
            "the answer from the sign-in page is unknown, expired or already used",
            "open the link you were sent again to start over",
        ))
    address = attempt.address
    request = AuthorizationRequest.unsealed(ctx.vault(doc.lineage).open_attempt(address, dict(attempt.blob)))
    if not hmac.compare_digest(request.state.get_secret_value().encode(), state.encode()):
        return Answer(400, "This sign-in cannot be completed", ("the answer does not belong to this sign-in",))
    if "error" in params:
        denied = params.get("error") == "access_denied"
        reason = "you declined the request" if denied else f"the sign-in page refused: {one_line(params['error'])[:100]}"
        return _failed(ctx, attempt, reason)
    code = params.get("code", "")
    if not code:
        return Answer(400, "This sign-in cannot be completed", ("the answer carries no authorization code",))
    try:
        return _complete(ctx, attempt, request, code)
    except StateLockedError:
        ctx.store.put_attempt(attempt)  # the same answer may be tried again in a moment
        return Answer(503, "Busy", ("the service is busy with another change; reload this page in a minute",))


def _complete(ctx: ServiceContext, attempt: Attempt, request: AuthorizationRequest, code: str) -> Answer:
    address = attempt.address
    with ctx.completions, ctx.writer.lock(f"serve: sign-in of {address}", timeout=ctx.lock_timeout):
        doc = ctx.writer.read()
        if doc is None:
            return _gone(address, "the sign-in it was for was withdrawn")
        try:
            installation = _standing(ctx, doc, address, attempt.pending_id)
        except _Refused as refused:
            return refused.answer
        before = doc.resources.get(address)
        recovering = isinstance(before, InstallationRecord) and before.drift is not None
        run = _run(ctx, doc, code)
        try:
            run.authorize(installation, request)
        except (ReconcilerError, ProviderError) as exc:
            return _failed(ctx, attempt, exc.message)
    record = run.installation_record(address)
    granted = record.granted_scopes if record is not None else ()
    ctx.audit(AuditEntry(ctx.now(), "authorization.completed", "tenant", address, " ".join(granted)))
    ctx.on_event("authorization.completed", address, {"scopes": list(granted), "by": record.authorized_by if record else None})
    if recovering:
        ctx.on_event("installation.recovered", address, {})
    lines = tuple(f"note: {message}" for _, message in run.result.warnings)
    return Answer(200, "Signed in", ("the connection is ready; you may close this page", *lines), scopes=granted)


def _failed(ctx: ServiceContext, attempt: Attempt, reason: str) -> Answer:
    """A sign-in that did not complete: recorded in the audit log and sent as an event; the link stays usable."""
    ctx.audit(AuditEntry(ctx.now(), "authorization.failed", "tenant", attempt.address, reason))
    ctx.on_event("authorization.failed", attempt.address, {"reason": reason})
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

