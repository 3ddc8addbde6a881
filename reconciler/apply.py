"""The executor: carries out a Plan, one change at a time, persisting state after every completed step.

Owns: the order of effects per change (authorize -> exchange -> verify -> record tokens and document), deferred
authorizations, in-place updates verified against the provider, deletes, and what an interrupted run leaves
behind (everything completed before the failure, never a record without its tokens). Tokens are written only
through the custodian (`reconciler.tokens.custodian`), revoked through `reconciler.revocation`. Reports through
`ApplyHooks`; never prints or prompts (the consent step it is given may). Side effects come in through `Services`.
Recorded tokens (and the client secret with them) go only to the endpoints state recorded for their
installation; only a new authorization uses the declared ones. Each change is carried out from the declaration it
moves to (`ResourceChange.target`); the configuration is consulted only for secret values (by reference) and for
the partner's endpoints.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TypeVar

from reconciler.auth.errors import ConsentError, ProviderError
from reconciler.auth.flows import (
    Binding,
    Flow,
    bound_settings,
    declared_binding,
    installation_settings,
    make_flow,
    recorded_binding,
)
from reconciler.auth.request import AuthorizationRequest
from reconciler.auth.retry import retrying
from reconciler.auth.verify import Verification, verify_token
from reconciler.catalog import Connector
from reconciler.config.desired import DesiredState
from reconciler.declared import DeclaredInstallation, DeclaredPartner
from reconciler.errors import ReconcilerError, StaleStateError
from reconciler.plan import Action, Plan, ResourceChange
from reconciler.platform_apply import carry_out_on_platform, kept_installed, push_tokens
from reconciler.revocation import declared_secret, revoke_recorded
from reconciler.services import ApplyError, ApplyHooks, ApplyResult, Services
from reconciler.state.backend import StateBackend
from reconciler.state.model import AnyRecord, InstallationRecord, PartnerRecord, PendingRecord, StateDocument
from reconciler.state.records import (
    installation_record,
    migrated_from,
    partner_record,
    pending_installation_record,
    pending_marker,
    updated_installation_record,
)
from reconciler.tokens.custodian import RefreshRejected, TokenCustodian, refresh_due
from reconciler.tokens.model import TokenSet
from reconciler.tokens.scopes import granted_scopes, missing_scopes

__all__ = ["ApplyError", "ApplyHooks", "ApplyResult", "Run", "Services", "apply_plan"]

REFRESH_MARGIN = dt.timedelta(minutes=2)
T = TypeVar("T")


class Run:
    """One run of the executor (an apply, or `authorize`): the current document, the token custodian, and the
    helpers every step shares."""

    def __init__(
        self, desired: DesiredState, services: Services, hooks: ApplyHooks, doc: StateDocument, require_scopes: bool
    ) -> None:
        self.desired, self.services, self.hooks, self.doc = desired, services, hooks, doc
        self.require_scopes = require_scopes
        self.exists = doc.serial > 0
        self.tokens = TokenCustodian(services.vault_for(doc.lineage), policy=services.retry, sleep=services.sleep)
        self.result = ApplyResult(state=doc if self.exists else None)

    # -- persistence -------------------------------------------------------------------------------------------

    def save(self, address: str, record: AnyRecord | None) -> None:
        """Persist one completed step: `address` set to `record` (None: removed)."""
        expected = self.doc.serial if self.exists else None
        doc = self.doc.with_record(address, kept_installed(self.doc.resources.get(address), record))
        self.doc = self.services.backend.write(doc, expected_serial=expected, changed={address})
        self.exists = True
        self.result.state = self.doc

    def warn(self, address: str, message: str) -> None:
        self.result.warnings.append((address, message))
        self.hooks.warning(address, message)

    # -- helpers -----------------------------------------------------------------------------------------------

    def connector(self, installation: DeclaredInstallation) -> Connector:
        return self.services.catalog.connectors[installation.connector]

    def declared_partner(self, installation: DeclaredInstallation) -> DeclaredPartner:
        """The partner `installation` uses, as configured (its endpoints; its secret stays with the configuration)."""
        return self.desired.partners[f"partner.{installation.partner}"].declared

    def flow(self, installation: DeclaredInstallation) -> Flow:
        secret = self.desired.secret(installation.client_secret_ref)
        settings = installation_settings(installation, secret, self.declared_partner(installation), self.services.catalog)
        return make_flow(settings, self.services.http, self.services.now)

    def api_url(self, installation: DeclaredInstallation) -> str:
        """The declared API: where the tokens of a new authorization are checked (and then recorded)."""
        return declared_binding(installation, self.declared_partner(installation)).api_url

    def binding(self, installation: DeclaredInstallation, record: InstallationRecord) -> Binding:
        """The endpoints recorded for `record`'s tokens, which the configuration must still declare: recorded
        tokens are used nowhere else (a plan made before the configuration moved is refused, not carried out)."""
        recorded_partner = self.doc.resources.get(f"partner.{record.partner}")
        binding = recorded_binding(record, recorded_partner if isinstance(recorded_partner, PartnerRecord) else None)
        if binding is None or binding != declared_binding(installation, self.declared_partner(installation)):
            raise ApplyError(
                "the configuration moves its client or endpoints: its tokens are not sent there",
                hint="plan again: it is re-authorized",
            )
        return binding

    def bound_flow(self, installation: DeclaredInstallation, binding: Binding) -> Flow:
        secret = self.desired.secret(installation.client_secret_ref)
        partner = self.declared_partner(installation)
        settings = bound_settings(binding, installation, secret, partner, self.services.catalog)
        return make_flow(settings, self.services.http, self.services.now)

    def retrying(self, call: Callable[[], T]) -> T:
        return retrying(call, self.services.retry, self.services.sleep)

    def installation_record(self, address: str) -> InstallationRecord | None:
        record = self.doc.resources.get(address)
        return record if isinstance(record, InstallationRecord) else None

    # -- steps -------------------------------------------------------------------------------------------------

    def partner(self, change: ResourceChange) -> None:
        if change.action is Action.DELETE:
            self.save(change.address, None)
        else:
            self.save(change.address, partner_record(_target(change, DeclaredPartner)))
        self.result.completed.append(change.address)
        self.hooks.step(change.address, "deleted" if change.action is Action.DELETE else f"{change.action.value}d")

    def delete_installation(self, address: str) -> None:
        record = self.installation_record(address)
        tokens = self.held_tokens(address, record) if record is not None else None
        self.save(address, None)
        # Revoked after the document (a crash never leaves a record whose grant is gone) and before the tokens are
        # forgotten (a crash leaves an orphan blob, never a record without one).
        revoked = record is not None and self.revoke(address, record, tokens)
        self.tokens.forget(address)
        self.result.completed.append(address)
        self.hooks.step(address, "deleted; its grant is revoked" if revoked else "deleted; its tokens are forgotten")

    def held_tokens(self, address: str, record: InstallationRecord) -> TokenSet | None:
        """The tokens `record` holds (None: none, or they cannot be opened — nothing to revoke with)."""
        if record.status != "authorized":
            return None
        try:
            held = self.tokens.held(address, record.client_id)
        except ReconcilerError:
            return None
        return held.tokens if held is not None else None

    def revoke(self, address: str, record: InstallationRecord, tokens: TokenSet | None) -> bool:
        """Best effort (see `revoke_recorded`): a failure is a warning; the tokens are forgotten either way."""
        secret = declared_secret(self.desired, address, record)
        outcome = revoke_recorded(record, tokens, secret, self.services.catalog, self.services.http, self.retrying)
        if outcome.warning is not None:
            self.warn(address, outcome.warning)
        return outcome.revoked

    def defer(self, installation: DeclaredInstallation) -> None:
        address = installation.address
        now = self.services.now()
        request = self.flow(installation).authorization_request()
        expires_at = now + self.pending_lifetime
        self.tokens.stage_pending(address, installation.client_id, request.sealed(now, expires_at))
        marker = self.with_link(address, pending_marker(installation, request.url, since=now, expires_at=expires_at))
        link = marker.link or request.url  # with the service: its signed link, which starts a fresh sign-in
        self.save(address, pending_installation_record(self.installation_record(address), installation, marker))
        self.result.pending.append((address, link))
        self.hooks.link(address, link)

    @property
    def pending_lifetime(self) -> dt.timedelta:
        """How long a deferred authorization (and its link) is offered."""
        return self.services.link_lifetime

    def with_link(self, address: str, marker: PendingRecord) -> PendingRecord:
        """`marker` with the service's link to it, where the service is configured."""
        if self.services.links is None:
            return marker
        return marker.model_copy(update={"link": self.services.links(self.doc.lineage).link(address, marker)})

    def authorize(self, installation: DeclaredInstallation, request: AuthorizationRequest | None = None) -> None:
        """Interactive authorization, exchange, verification, then tokens sealed and the record written."""
        address = installation.address
        flow = self.flow(installation)
        request = request or flow.authorization_request()
        try:
            tokens = self.obtain_tokens(installation, request)
        except ConsentError as exc:
            if exc.category != "missed" or self.services.on_missed is None or not self.services.on_missed(address, exc):
                raise
            self.defer(installation)  # a pending authorization, its own link: the missed one's listener is gone
            return
        self.record_tokens(installation, tokens)

    def obtain_tokens(self, installation: DeclaredInstallation, request: AuthorizationRequest) -> TokenSet:
        """The consent step's code for `request`, exchanged (nothing is recorded: `record_tokens` does that)."""
        consent = self.services.consent
        assert consent is not None
        code = consent.obtain(request, installation.address)
        flow = self.flow(installation)
        try:
            return self.retrying(lambda: flow.exchange(code, request))
        except ProviderError as exc:
            if exc.category != "grant" or exc.hint:
                raise
            hint = "an authorization code works once: run the command again to sign in anew"
            raise ProviderError(exc.message, category=exc.category, status=exc.status, hint=hint) from None

    def record_tokens(self, installation: DeclaredInstallation, tokens: TokenSet) -> None:
        """Verify new tokens at the declared API, then record them with the document (stage, write, promote)."""
        address = installation.address
        connector = self.connector(installation)
        granted = self.granted(installation, connector, tokens)
        verification = self.retrying(
            lambda: verify_token(
                self.services.http, connector, self.api_url(installation), installation.parameters, granted, tokens
            )
        )
        for message in verification.warnings:
            self.warn(address, message)
        now = self.services.now()
        old = self.installation_record(address)
        replaced = self.held_tokens(address, old) if old is not None else None
        desired = self.desired.installations.get(address)
        moved = migrated_from(old, installation, desired.moved_from if desired is not None else None)
        record = installation_record(
            installation,
            granted=granted,
            authorized_at=now,
            expires_at=tokens.expires_at,
            authorized_by=verification.user,
        ).model_copy(update={"verified_at": now, "migrated_from": moved})
        self.tokens.record_new(address, installation.client_id, tokens, lambda: self.save(address, record))
        push_tokens(self, self.services.platform, installation, tokens)  # on a platform: its account connector's
        if old is not None and self.revoke(address, old, replaced):
            self.hooks.step(address, "the old grant is revoked")
        self.result.completed.append(address)
        self.hooks.step(address, f"authorized (granted: {', '.join(granted) or 'none'})")

    def granted(self, installation: DeclaredInstallation, connector: Connector, tokens: TokenSet) -> tuple[str, ...]:
        """The scopes to record for new tokens; fewer than asked is refused (`require_scopes`) or a warning."""
        address = installation.address
        granted, reported = granted_scopes(connector, installation.auth, tokens.scope, installation.scopes)
        if not reported:
            self.warn(address, "the provider did not say which scopes it granted; recording the requested ones")
        missing = missing_scopes(connector, installation.scopes, granted)
        if missing and self.require_scopes:
            raise ApplyError(f"the provider granted fewer scopes than asked (missing: {', '.join(missing)})")
        if missing:
            self.warn(address, f"granted fewer scopes than asked (missing: {', '.join(missing)}); recorded as granted")
        if tokens.refresh_token is None:
            self.warn(address, "the provider issued no refresh token: this installation cannot be refreshed")
        return granted

    def update_installation(self, installation: DeclaredInstallation) -> None:
        """Parameters or secret reference changed: verify the current token against the new declaration. A pending
        authorization is withdrawn (had it still matched the configuration, the plan would have waited for it)."""
        address = installation.address
        record = self.installation_record(address)
        assert record is not None
        binding = self.binding(installation, record)
        held = self.tokens.held(address, record.client_id)
        if held is None:
            raise ApplyError("no tokens recorded", hint=f"re-authorize with --replace {address}")
        now = self.services.now()
        connector = self.connector(installation)

        def check(tokens: TokenSet) -> Verification:
            api, parameters = binding.api_url, installation.parameters
            return verify_token(self.services.http, connector, api, parameters, record.granted_scopes, tokens)

        try:
            fresh = self.tokens.verify_fresh(
                address,
                record.client_id,
                held,
                lambda tokens: self.bound_flow(installation, binding).refresh(tokens),
                check,
                due=refresh_due(held.tokens, now, REFRESH_MARGIN),
            )
        except RefreshRejected as exc:
            raise ApplyError(
                f"the refresh token was rejected ({exc.message})",
                hint=f"this installation must sign in again: reconciler apply --replace {address}",
            ) from None
        for message in fresh.checked.warnings:
            self.warn(address, message)
        updated = updated_installation_record(record, installation).model_copy(
            update={"expires_at": fresh.tokens.expires_at, "verified_at": now, "pending": None}
        )
        self.save(address, updated)
        self.tokens.withdraw_pending(address)  # after the document, as a delete does
        self.result.completed.append(address)
        self.hooks.step(address, "updated and verified")


def _current_document(plan: Plan, backend: StateBackend) -> StateDocument:
    current = backend.read()
    if plan.state.lineage is None:
        if current is not None:
            raise StaleStateError("state was created after this plan was made", hint="plan again")
        return StateDocument.new(plan.environment)
    if current is None or current.lineage != plan.state.lineage or current.serial != plan.state.serial:
        raise StaleStateError("state changed after this plan was made", hint="plan again")
    return current


def apply_plan(
    plan: Plan,
    desired: DesiredState,
    services: Services,
    hooks: ApplyHooks,
    *,
    require_scopes: bool = False,
) -> ApplyResult:
    """Carry out `plan` in order. Call with the state lock held. Returns what was achieved, and the error that
    stopped the run (if any) — everything completed before it is persisted."""
    run = Run(desired, services, hooks, _current_document(plan, services.backend), require_scopes)
    for change in plan.changes:
        if change.action is Action.NOOP:
            continue
        try:
            _carry_out(run, change)
        except ReconcilerError as exc:
            message = exc.message if change.address in exc.message else f"{change.address}: {exc.message}"
            run.result.error = ApplyError(message, hint=exc.hint)
            run.result.error.__cause__ = exc
            break
    run.result.pending.extend(
        (c.address, "") for c in plan.changes if c.pending and c.address not in dict(run.result.pending)
    )
    return run.result


def _carry_out(run: Run, change: ResourceChange) -> None:
    if change.kind == "partner":
        return run.partner(change)
    if carry_out_on_platform(run, change, run.services.platform, run.services.now):
        return None
    if change.action is Action.DELETE:
        return run.delete_installation(change.address)
    installation = _target(change, DeclaredInstallation)
    if change.action is Action.UPDATE:
        return run.update_installation(installation)
    if run.services.consent is None:
        return run.defer(installation)
    return run.authorize(installation)


D = TypeVar("D", DeclaredPartner, DeclaredInstallation)


def _target(change: ResourceChange, kind: type[D]) -> D:
    """The declaration `change` moves to: what is carried out (the configuration gives only secret values)."""
    if not isinstance(change.target, kind):
        raise ApplyError("the plan does not say what this change moves to", hint="plan again")
    return change.target
