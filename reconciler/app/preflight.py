"""Preflight for a command: which Entra ID partners are checked, and the admin consent each tenant needs first.

Owns: choosing the partners to check (Entra ID, their own client credentials resolved, used by installations in
scope), one check per partner, and turning admin-only scopes into one admin-consent step per tenant (its URL on
the partner's authority, with every scope the tenant's installations of that partner declare, so that its users
need no consent of their own). Must not: print, prompt or know about click; secrets are passed to the check only.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reconciler.auth.preflight import Preflight, admin_consent_url, check_app

if TYPE_CHECKING:
    import httpx

    from reconciler.addresses import Globs
    from reconciler.app.workspace import Workspace
    from reconciler.config.desired import DesiredState
    from reconciler.plan import Plan
    from reconciler.render.document import PlanDocument

__all__ = ["AdminConsentStep", "PreflightReport", "preflight", "plan_preflight", "preflight_plan", "redact", "with_preflight",
           "run_preflight"]

ENTRA = "entra-id"


@dataclass(frozen=True)
class AdminConsentStep:
    """An administrator of `tenant`'s directory consents once for `partner`'s app, before its users sign in."""

    tenant: str
    partner: str
    scopes: tuple[str, ...]
    url: str
    installations: tuple[str, ...]


@dataclass(frozen=True)
class PreflightReport:
    checks: tuple[Preflight, ...]
    admin_consents: tuple[AdminConsentStep, ...]

    @property
    def problems(self) -> list[str]:
        return [f"partner.{c.partner}: {p}" for c in self.checks for p in c.problems]

    def warnings(self) -> list[str]:
        """One line per warning and per partner whose tenants need an admin consent (each step is listed on its
        own). What could not be checked is left to `reconciler preflight`: a plan is not to warn of it on every run
        (an app without Graph's Application.Read.All, a multi-tenant partner with no app_tenant_id)."""
        lines = [f"partner.{c.partner}: {w}" for c in self.checks for w in c.warnings]
        for check in self.checks:
            tenants = sorted({s.tenant for s in self.admin_consents if s.partner == check.partner})
            if tenants:
                lines.append(
                    f"partner.{check.partner}: {', '.join(check.admin_only)} may be consented to by an administrator "
                    f"only: {len(tenants)} tenant(s) need an admin consent before their users sign in "
                    f"({', '.join(tenants)}; each with its link under \"Admin consent needed first\")"
                )
        return lines

    def onto(self, document: PlanDocument) -> PlanDocument:
        """`document` with this report's warnings and admin-consent steps."""
        from reconciler.render.document import AdminConsentDoc

        extra = [w for w in self.warnings() if w not in document.warnings]
        steps = [
            AdminConsentDoc(tenant=s.tenant, partner=s.partner, scopes=list(s.scopes), url=s.url,
                            installations=list(s.installations))
            for s in self.admin_consents
        ]
        return document.model_copy(update={"warnings": [*document.warnings, *extra], "admin_consents": steps})


def preflight(desired: DesiredState, client: httpx.Client, addresses: Iterable[str] | None = None) -> PreflightReport:
    """Check each Entra ID partner whose own credentials installations in `addresses` (None: all) use."""
    wanted = set(desired.installations) if addresses is None else set(addresses) & set(desired.installations)
    users: dict[str, list[str]] = {}
    for address in sorted(wanted):
        installation = desired.installations[address].declared
        if installation.auth == ENTRA and installation.credentials_source == "partner" and installation.placement is None:
            users.setdefault(installation.partner, []).append(address)
    checks: list[Preflight] = []
    steps: list[AdminConsentStep] = []
    for name, addresses_of in sorted(users.items()):
        desired_partner = desired.partners.get(f"partner.{name}")
        if desired_partner is None or desired_partner.client_secret is None:
            continue
        partner = desired_partner.declared
        if not partner.client_id or not partner.tenant_id:
            continue
        scopes = {s for a in addresses_of for s in desired.installations[a].declared.scopes}
        check = check_app(
            client, partner=name, tenant_id=partner.tenant_id, client_id=partner.client_id,
            client_secret=desired_partner.client_secret.get_secret_value(), token_url=partner.token_url,
            scopes=scopes, app_tenant=desired_partner.app_tenant_id,
        )
        checks.append(check)
        if check.admin_only:
            steps += _steps(desired, name, addresses_of, check.admin_only)
    return PreflightReport(tuple(checks), tuple(steps))


def _steps(desired: DesiredState, name: str, addresses: list[str], admin_only: Collection[str]) -> list[AdminConsentStep]:
    partner = desired.partners[f"partner.{name}"].declared
    by_tenant: dict[str, list[str]] = {}
    for address in addresses:
        installation = desired.installations[address].declared
        if set(installation.scopes) & set(admin_only):
            by_tenant.setdefault(installation.tenant, []).append(address)
    steps = []
    for tenant, members in sorted(by_tenant.items()):
        scopes = tuple(sorted({s for a in members for s in desired.installations[a].declared.scopes}))
        url = admin_consent_url(partner.authorize_url, partner.client_id or "", scopes, partner.redirect_uri,
                                state=f"admin-consent.{tenant}")
        steps.append(AdminConsentStep(tenant, name, scopes, url, tuple(members)))
    return steps


def run_preflight(ws: Workspace, tenants: Globs | None = None) -> PreflightReport:
    """`reconciler preflight`: load the configuration (secrets resolved) and check its Entra ID partners for the
    installations of `tenants` (None: all)."""
    from reconciler.app.source import config_source
    from reconciler.auth.transport import Http

    desired = config_source(ws).load().desired
    addresses = [a for a, i in desired.installations.items() if tenants is None or tenants.match(i.declared.tenant)]
    with Http(timeout=ws.http_timeout) as http:
        report = preflight(desired, http.client(), addresses)
    return redact(report, desired.secret_values())


def redact(report: PreflightReport, secrets: Collection[str]) -> PreflightReport:
    """`report` with no secret value in any of its words, in any form a provider may echo it (as sent, URL-encoded,
    base64)."""
    from reconciler.auth.errors import scrubbed

    def clean(text: str) -> str:
        return scrubbed(text, secrets)

    checks = tuple(
        Preflight(c.partner, c.checked, tuple(map(clean, c.problems)), c.admin_only, tuple(map(clean, c.notes)),
                  tuple(map(clean, c.warnings)))
        for c in report.checks
    )
    return PreflightReport(checks, report.admin_consents)


def plan_preflight(ws: Workspace, desired: DesiredState, plan: Plan) -> PreflightReport | None:
    """The preflight of the Entra ID apps a plan's sign-ins will use; None (and no request at all) when the plan
    asks no one to sign in with Entra ID."""
    from reconciler.auth.transport import Http
    from reconciler.plan import Action

    asks = [
        c.address for c in plan.changes
        if c.action in (Action.CREATE, Action.REAUTHORIZE) and c.address in desired.installations
        and desired.installations[c.address].declared.auth == ENTRA
    ]
    if not asks:
        return None
    with Http(timeout=ws.http_timeout) as http:
        return redact(preflight(desired, http.client(), asks), desired.secret_values())


def with_preflight(ws: Workspace, desired: DesiredState, plan: Plan, document: PlanDocument) -> PlanDocument:
    """`document` with the plan's preflight (`plan --refresh`): problems as warnings, then notes, and the admin
    consents needed first."""
    report = plan_preflight(ws, desired, plan)
    if report is None:
        return document
    problems = [f"{p} (preflight: every sign-in with it would fail)" for p in report.problems]
    return report.onto(document.model_copy(update={"warnings": [*document.warnings, *problems]}))


def preflight_plan(ws: Workspace, desired: DesiredState, plan: Plan, document: PlanDocument) -> PlanDocument:
    """Before a plan is carried out: check the Entra ID apps its sign-ins will use. A problem every such sign-in
    would hit stops here (nothing asked of anyone, nothing written); admin consents needed first, and what could not
    be checked, join the plan's warnings. No Entra ID sign-in in the plan: no request at all."""
    from reconciler.errors import ReconcilerError

    report = plan_preflight(ws, desired, plan)
    if report is None:
        return document
    if report.problems:
        raise ReconcilerError(
            "preflight: " + "; ".join(report.problems),
            hint="nothing was changed and no one was asked to sign in; `reconciler preflight` lists every finding",
        )
    return report.onto(document)
