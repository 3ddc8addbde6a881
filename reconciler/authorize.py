"""Completing pending authorizations (`reconciler authorize`): each one's sign-in, as the executor's authorize step,
with the request sealed when it was deferred — or, with `reissue`, a new pending authorization in its place.

Owns: which pending authorizations may still be completed (unexpired, still matching the configuration: the
code, the secret and the new tokens go where the authorization was planned to send them). Must not: print or
prompt (the consent step may), or write tokens itself (the executor's steps do, through the custodian).
"""

from __future__ import annotations

from reconciler.apply import ApplyError, ApplyHooks, ApplyResult, Run, Services
from reconciler.auth.errors import ProviderError
from reconciler.auth.request import AuthorizationRequest
from reconciler.config.desired import DesiredState
from reconciler.declared import target_digest
from reconciler.errors import ReconcilerError
from reconciler.pending import pending_target
from reconciler.platform_apply import PlatformSteps
from reconciler.state.model import InstallationRecord

__all__ = ["authorize_pending", "issue_links"]


def authorize_pending(
    addresses: list[str],
    desired: DesiredState,
    services: Services,
    hooks: ApplyHooks,
    *,
    reissue: bool = False,
    require_scopes: bool = False,
) -> ApplyResult:
    """Complete (or, with `reissue`, replace) the pending authorizations of `addresses`. Lock held by the caller."""
    doc = services.backend.read()
    if doc is None:
        raise ApplyError("no state yet: nothing is pending", hint="run `reconciler apply` first")
    run = Run(desired, services, hooks, doc, require_scopes)
    for address in addresses:
        try:
            record = run.installation_record(address)
            if record is None or record.pending is None:
                raise ApplyError("no pending authorization")
            if record.platform_holds_tokens:
                sign_in_on_platform(run, record, desired, services)
                continue
            installation = pending_target(desired, run.doc, address)
            if installation is None:
                raise ApplyError(
                    "the pending authorization no longer matches the configuration (its client or endpoints moved)",
                    hint="run plan and apply: it is withdrawn and issued anew",
                )
            if reissue or services.consent is None:
                run.defer(installation)
                continue
            if services.now() >= record.pending.expires_at:
                raise ApplyError("the pending authorization expired", hint="reissue it with --reissue")
            pending = run.tokens.pending(address, record.pending.client_id)
            if pending is None:
                raise ApplyError("the pending authorization's sealed record is missing", hint="reissue it with --reissue")
            run.authorize(installation, AuthorizationRequest.unsealed(pending))
        except (ReconcilerError, ProviderError) as exc:
            run.result.error = ApplyError(exc.message if address in exc.message else f"{address}: {exc.message}", hint=exc.hint)
            break
    return run.result


def sign_in_on_platform(run: Run, record: InstallationRecord, desired: DesiredState, services: Services) -> None:
    """A sign-in due on the platform: a fresh one-use link now that someone is there to use it (a deferred one
    recorded no link). Only while the configuration still declares what was installed, and it is installed."""
    want = desired.installations.get(record.address)
    if want is None or record.pending is None or record.pending.target_digest != target_digest(want.declared):
        raise ApplyError(
            "the configuration changed since it was installed", hint="run plan and apply: it is updated first"
        )
    if record.account_connector is None:  # a refresh found it (or its account) gone from the platform
        raise ApplyError("its account connector is gone from the platform", hint="run plan and apply: it is installed again")
    if services.platform is None or services.platform.sign_in is None:
        raise ApplyError(
            "a sign-in through the platform needs someone to open its link",
            hint="run `reconciler authorize` with --auth-mode browser or paste",
        )
    PlatformSteps(run, services.platform, services.now).sign_in(want.declared, record)


def issue_links(addresses: list[str], services: Services, hooks: ApplyHooks) -> ApplyResult:
    """The service's link of each pending authorization of `addresses` (recorded with it where it was not yet: one
    issued before `service:` was configured). Lock held by the caller; `services.links` set."""
    doc = services.backend.read()
    result = ApplyResult(state=doc)
    if doc is None or services.links is None:
        return result
    issuer = services.links(doc.lineage)
    for address in addresses:
        record = doc.resources.get(address)
        if not isinstance(record, InstallationRecord) or record.pending is None:
            continue
        link = issuer.link(address, record.pending)
        if record.pending.link != link:
            updated = record.model_copy(update={"pending": record.pending.model_copy(update={"link": link})})
            doc = services.backend.write(doc.with_record(address, updated), expected_serial=doc.serial, changed={address})
            result.state = doc
        result.pending.append((address, link))
        hooks.link(address, link)
    return result
