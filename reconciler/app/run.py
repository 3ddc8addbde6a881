"""Carrying out a plan: `apply` (a fresh plan or a saved one) and `authorize` (pending authorizations), wired to
the executor with the state key, the HTTP transport and the consent step.

Owns: the order of a run — lock, plan or check the saved plan's freshness, confirm, execute — and the executor's
services. Must not: print, prompt, read the clock or the environment itself, or know about click.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.addresses import Globs, Selection
from reconciler.app.keys import no_note, sealed_key_id, state_key
from reconciler.app.planning import check_fresh, plan_of, plan_warnings, read_saved
from reconciler.app.request import PlanScope
from reconciler.app.source import config_source
from reconciler.app.workspace import Workspace, open_backend, read_root
from reconciler.catalog.files import load_catalog
from reconciler.config.schema import RootFile
from reconciler.errors import ReconcilerError, UsageError
from reconciler.render.document import PlanDocument, to_document
from reconciler.state.backend import StateBackend
from reconciler.state.model import InstallationRecord

if TYPE_CHECKING:  # the apply and OAuth layers (httpx, authlib) load only for commands that use them
    from reconciler.apply import ApplyHooks, ApplyResult, Services
    from reconciler.auth.consent import ConsentStep
    from reconciler.auth.signin import PlatformSignIn
    from reconciler.auth.transport import Http
    from reconciler.config.desired import DesiredState
    from reconciler.links import LinkIssuer
    from reconciler.refresh import RefreshSettings

__all__ = ["RunOutcome", "run_apply", "run_authorize", "services_for"]


@dataclass
class RunOutcome:
    """What an apply or authorize run achieved (None: nothing was attempted)."""

    result: ApplyResult | None


def services_for(
    ws: Workspace,
    root: RootFile,
    backend: StateBackend,
    *,
    http: Http,
    consent: ConsentStep | None,
    on_key_created: Callable[[str], None],
    desired: DesiredState | None = None,
    sign_in: PlatformSignIn | None = None,
) -> Services:
    """The executor's side effects (the key is checked, or created, on first use); with `desired`, its platform's
    (`sign_in`: how a person signs in through the platform; None: every such sign-in is deferred)."""
    from reconciler.app.platform import platform_services
    from reconciler.apply import Services
    from reconciler.tokens.vault import Vault

    def vault_for(lineage: str) -> Vault:
        key = state_key(ws, root, backend, on_key_created=on_key_created)
        return Vault(backend.credential_store(), key, lineage=lineage, environment=ws.environment_name)

    platform = platform_services(ws, desired, http, sign_in) if desired is not None else None
    services = Services(
        backend=backend, vault_for=vault_for, http=http.client(), consent=consent, now=ws.clock, catalog=load_catalog(),
        platform=platform,
    )
    service = desired.service if desired is not None else None
    if service is None:
        return services
    from reconciler.links import link_issuer

    def links(lineage: str) -> LinkIssuer:
        key = state_key(ws, root, backend, on_key_created=on_key_created)
        return link_issuer(key, service.public_url, lineage=lineage, environment=ws.environment_name)

    return dataclasses.replace(services, links=links, link_lifetime=service.link_lifetime)


def run_apply(
    ws: Workspace,
    *,
    scope: PlanScope,
    consent: ConsentStep | None,
    hooks: ApplyHooks,
    confirm: Callable[[PlanDocument], bool],
    require_scopes: bool,
    lock_timeout: float,
    on_key_created: Callable[[str], None],
    plan_file: Path | None = None,
    on_missed: Callable[[str, ReconcilerError], bool] | None = None,
    sign_in: PlatformSignIn | None = None,
    refresh: RefreshSettings | None = None,
) -> RunOutcome:
    """Lock, plan (or read the saved plan; with `refresh`, after a refresh), confirm (the callback shows the plan),
    and carry it out. `on_missed` decides whether a sign-in that timed out is left pending while the others go on
    (see `Services`)."""
    from reconciler.apply import ApplyResult, apply_plan

    if plan_file is not None:
        root = read_root(ws)
        saved = read_saved(ws, plan_file, root)
        backend, desired, plan, document = open_backend(ws, root), saved.desired, saved.plan, saved.document
    else:
        loaded = config_source(ws).load()
        root, desired, backend = loaded.root, loaded.desired, open_backend(ws, loaded.root)
    with backend.lock("apply", timeout=lock_timeout):
        if sealed_key_id(backend.credential_store()) is not None:  # a wrong key fails before the plan is confirmed
            state_key(ws, root, backend, on_key_created=on_key_created, create=False)
        if plan_file is not None:
            check_fresh(plan_file, plan, backend)
        elif refresh is not None:
            from reconciler.app.refresh import refreshed_plan

            result = refreshed_plan(ws, loaded, backend, scope, refresh, lambda done, total: None)[1]
            plan, document = result.plan, result.document
        else:
            recorded = backend.read()
            plan = plan_of(ws, loaded, backend, scope, recorded)
            document = to_document(plan, warnings=plan_warnings(loaded, recorded, ws.clock(), backend))
        from reconciler.app.preflight import preflight_plan

        document = preflight_plan(ws, desired, plan, document)
        if not confirm(document):
            if document.has_changes:
                raise ReconcilerError("apply cancelled; nothing was changed")
            return RunOutcome(ApplyResult(state=None, pending=[(c.address, "") for c in plan.changes if c.pending]))
        from reconciler.auth.transport import Http

        with Http(timeout=ws.http_timeout) as http:
            services = services_for(
                ws, root, backend, http=http, consent=consent, on_key_created=on_key_created, desired=desired,
                sign_in=sign_in,
            )
            services = dataclasses.replace(services, on_missed=on_missed)
            return RunOutcome(apply_plan(plan, desired, services, hooks, require_scopes=require_scopes))


def run_authorize(
    ws: Workspace,
    patterns: list[str],
    *,
    consent: ConsentStep | None,
    hooks: ApplyHooks,
    reissue: bool,
    require_scopes: bool,
    lock_timeout: float,
    excludes: Collection[str] = (),
    sign_in: PlatformSignIn | None = None,
    links: bool = False,
) -> RunOutcome:
    """Complete (or reissue) pending authorizations matching `patterns` (all pending ones when empty), minus those
    matching `excludes`; with `links`, give each its link of the service instead (nothing is completed)."""
    from reconciler.authorize import authorize_pending, issue_links

    loaded = config_source(ws).load()
    if links and loaded.desired.service is None:
        raise UsageError("--links needs the authorization service", hint="declare service.public_url in reconciler.yaml")
    backend = open_backend(ws, loaded.root)
    if backend.read() is None:  # before the lock, which would create the state directory
        if patterns:
            raise UsageError(f"no pending authorization matches {', '.join(patterns)}")
        return RunOutcome(None)
    with backend.lock("authorize", timeout=lock_timeout):
        doc = backend.read()
        pending = [
            a for a, r in (doc.resources.items() if doc else ()) if isinstance(r, InstallationRecord) and r.pending
        ]
        selected = Selection.of(patterns, excludes).pick(pending)
        unmatched = Globs.of(patterns).unmatched(pending)
        if unmatched:
            raise UsageError(f"no pending authorization matches {', '.join(unmatched)}")
        if not selected:
            return RunOutcome(None)
        from reconciler.auth.transport import Http

        with Http(timeout=ws.http_timeout) as http:
            services = services_for(
                ws, loaded.root, backend, http=http, consent=consent, on_key_created=no_note, desired=loaded.desired,
                sign_in=sign_in,
            )
            if links:
                return RunOutcome(issue_links(selected, services, hooks))
            return RunOutcome(
                authorize_pending(selected, loaded.desired, services, hooks, reissue=reissue, require_scopes=require_scopes)
            )
