"""`preflight`: ask Microsoft about each Entra ID app before any tenant's user is asked to sign in.

Owns: the command's options, its output (text or JSON) and exit code: 0 nothing stands in the way, 2 an
administrator's consent is needed first in some tenant (each step with its URL) or a warning, 1 a problem every sign-in would
hit (the app is not in tenant_id's directory, scopes not on its registration, rejected credentials) or an error.
Must not: hold the checks (`auth/preflight.py`) or choose what is checked (`app/preflight.py`).
"""

from __future__ import annotations

import click

from reconciler.cli.group import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, GlobalOptions, cli
from reconciler.cli.options import patterns


@cli.command()
@click.option("--tenant", "tenants", multiple=True, metavar="GLOB", callback=patterns,
              help="Only the installations of tenants matching this glob (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text for a terminal, json for automation.")
@click.pass_obj
def preflight(opts: GlobalOptions, tenants: tuple[str, ...], fmt: str) -> int:
    """Check each Entra ID partner's app with Microsoft before anyone signs in: the app's tenant against
    tenant_id, scopes not on its registration, and permissions only an administrator may consent to (then one
    admin-consent link per tenant, for an administrator of that tenant's directory to open first).

    Uses the partner's client credentials (an app-only token in its tenant) and Microsoft Graph (the app needs
    Application.Read.All to read its registration; without it that part is reported as not checked). A partner
    with tenant_id organizations or common names no directory to ask and is reported as not checked.

    Exit status: 0 nothing stands in the way, 2 an admin consent is needed first (or a warning: a sign-in may
    fail), 1 a problem (every sign-in would fail) or an error.

    \b
    Examples:
      reconciler preflight
      reconciler preflight --tenant 'eu-*' --format json | jq -r '.admin_consents[].url'
    """
    from reconciler.addresses import Globs
    from reconciler.app.preflight import run_preflight

    report = run_preflight(opts.workspace(), Globs.of(tenants) if tenants else None)
    if fmt == "json":
        import json

        click.echo(json.dumps(_document(report), indent=2))
    else:
        click.echo(_text(report), nl=False)
    if report.problems:
        return EXIT_ERROR
    return EXIT_CHANGES if report.admin_consents or any(c.warnings for c in report.checks) else EXIT_OK


def _document(report) -> dict:  # type: ignore[no-untyped-def, type-arg]
    return {
        "format_version": "1.0",
        "partners": [
            {"partner": c.partner, "checked": c.checked, "problems": list(c.problems), "warnings": list(c.warnings),
             "admin_only_scopes": list(c.admin_only), "notes": list(c.notes)}
            for c in report.checks
        ],
        "admin_consents": [
            {"tenant": s.tenant, "partner": s.partner, "scopes": list(s.scopes), "url": s.url,
             "installations": list(s.installations)}
            for s in report.admin_consents
        ],
    }


def _text(report) -> str:  # type: ignore[no-untyped-def]
    if not report.checks:
        return "No Entra ID partner with its own client credentials to check.\n"
    lines = []
    for check in report.checks:
        word = "problem" if check.problems else "warning" if check.warnings else "checked" if check.checked else "not checked"
        lines.append(f"partner.{check.partner}: {word}")
        lines += [f"  problem: {p}" for p in check.problems]
        lines += [f"  warning: {w}" for w in check.warnings]
        if check.admin_only:
            lines.append(f"  admin consent only: {', '.join(check.admin_only)}")
        lines += [f"  note: {n}" for n in check.notes]
    if report.admin_consents:
        lines += ["", "Admin consent needed first (an administrator of each tenant's directory opens its link once):"]
        for step in report.admin_consents:
            lines += [f"  tenant {step.tenant} (partner.{step.partner}: {', '.join(step.scopes)}):", f"    {step.url}"]
    return "\n".join(lines) + "\n"
