"""`validate`, `schema` and `refresh`: checking the configuration, describing it, checking tokens at the provider.

Owns: those commands' options and what they print. Must not: hold loading, planning or state logic.
"""

from __future__ import annotations

import json
from typing import Any

import click

from reconciler.cli.group import EXIT_OK, GlobalOptions, cli, count
from reconciler.cli.options import EXCLUDE_HELP, globs_option, plan_scope, refresh_options, refresh_settings
from reconciler.cli.output import progress_bar
from reconciler.errors import ReconcilerError, one_line


@cli.command()
@click.pass_obj
def validate(opts: GlobalOptions) -> int:
    """Check the configuration: schema, catalog, secret references. Writes nothing.

    \b
    Examples:
      reconciler validate
      reconciler -C examples/quickstart validate
    """
    from reconciler.app.source import config_source
    from reconciler.app.workspace import check_backend

    loaded = config_source(opts.workspace(), unchecked_secrets=True, parse_ahead=False).load()

    check_backend(opts.workspace(), loaded.root)
    for warning in loaded.warnings:
        click.echo(f"warning: {warning}", err=True)
    if loaded.unchecked:
        click.echo(loaded.unchecked_note(), err=True)
    desired = loaded.desired
    tenants = len({i.declared.tenant for i in desired.installations.values()})
    click.echo(
        f"The configuration is valid: {count(len(desired.partners), 'partner')}, {count(tenants, 'tenant')}, "
        f"{count(len(desired.installations), 'installation')} in {count(len(loaded.files), 'file')}."
    )
    return EXIT_OK



@cli.command()
@refresh_options
@globs_option("--target", "Only these addresses (globs; repeatable).")
@globs_option("--exclude", EXCLUDE_HELP)
@click.pass_obj
def refresh(opts: GlobalOptions, parallelism: int, window: float, lock_timeout: float, target: tuple[str, ...],
            exclude: tuple[str, ...]) -> int:
    """Refresh tokens that expire soon, check every installation at the provider, and record what was found.

    Only state changes: rotated tokens are stored, and installations whose token was revoked or whose refresh
    token was rejected are marked, so that `plan` (even offline) asks to re-authorize them. A rejected partner
    secret is an error on the partner, never a re-authorization of its installations.

    \b
    Examples:
      reconciler refresh
      reconciler refresh --parallelism 32 --target 'installation.acme.*'
    """
    from reconciler.app.refresh import run_refresh

    with progress_bar("Refreshing") as progress:
        outcome = run_refresh(
            opts.workspace(),
            scope=plan_scope(target, exclude),
            settings=refresh_settings(parallelism, window),
            progress=progress,
            lock_timeout=lock_timeout,
            record=True,
        )
    counts: dict[str, int] = {}
    for finding in outcome.findings:
        counts[finding.outcome] = counts.get(finding.outcome, 0) + 1
        if finding.outcome not in ("ok", "refreshed"):
            click.echo(f"{finding.address}: {one_line(finding.drift.words if finding.drift else finding.message)}", err=True)
    labels = {"ok": "fine", "refreshed": "refreshed", "revoked": "revoked", "rejected": "refresh rejected",
              "partner": "partner fault", "transient": "could not be checked", "skipped": "skipped",
              "deauthenticated": "not authenticated on the platform", "gone": "gone from the platform",
              "edited": "edited on the platform"}
    summary = ", ".join(f"{counts[k]} {label}" for k, label in labels.items() if counts.get(k))
    click.echo(f"Refresh complete: {summary or 'nothing to refresh'}.")
    partners = sorted({f.partner for f in outcome.findings if f.outcome == "partner" and f.partner})
    if partners:
        raise ReconcilerError(
            f"the provider rejected the client credentials of partner(s) {', '.join(partners)}",
            hint="rotate the partner's client secret; users need not sign in again",
        )
    if counts.get("transient"):
        raise ReconcilerError(
            f"{count(counts['transient'], 'installation')} could not be refreshed or checked (see above); nothing "
            "was changed for them",
            hint="run `reconciler refresh` again later",
        )
    return EXIT_OK


@cli.command()
@click.option("--include-file", is_flag=True,
              help="The schema of an included file (partners and tenants; no `version`) instead of reconciler.yaml.")
def schema(include_file: bool) -> int:
    """Print the JSON Schema of reconciler.yaml (or, with --include-file, of an included file), for editors and
    CI linters. Scopes are the catalog's; secrets must be ${env:NAME} or ${file:PATH} references.

    \b
    Examples:
      reconciler schema > reconciler.schema.json
      reconciler schema --include-file > tenant.schema.json
      # then, first line of reconciler.yaml (or of tenants/acme.yaml):
      # yaml-language-server: $schema=./reconciler.schema.json
    """
    from reconciler.config.schema import IncludedFile, RootFile

    model = IncludedFile if include_file else RootFile
    document = {"$schema": "https://json-schema.org/draft/2020-12/schema", **model.model_json_schema()}
    click.echo(json.dumps(_with_catalog_and_references(document), indent=2))
    return EXIT_OK


SECRET_FIELDS = (
    ("PartnerSpec", "client_secret"),
    ("CredentialsSpec", "client_secret"),
    ("PlatformSpec", "client_secret"),
    ("PostgresBackendSpec", "dsn"),
)
REFERENCE_PATTERN = r"^\$\{(env|file):[^}]+\}$"


def _with_catalog_and_references(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with what the model alone does not say: scopes come from the catalog (an enum of every
    connector's scopes) and secret fields take a reference only (the loader refuses literals)."""
    from reconciler.catalog.files import load_catalog

    catalog = load_catalog()
    scopes = sorted({scope for connector in catalog.connectors.values() for scope in connector.scopes})
    defs = document.get("$defs", {})
    for model, field in (("InstallationSpec", "scopes"), ("PartnerSpec", "scopes")):
        for schema in _string_schemas(defs.get(model, {}).get("properties", {}).get(field, {})):
            schema["enum"] = scopes
    for model, field in SECRET_FIELDS:
        for schema in _string_schemas(defs.get(model, {}).get("properties", {}).get(field, {})):
            schema["pattern"] = REFERENCE_PATTERN
    return document


def _string_schemas(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The string schemas inside `schema`: itself, its array items, and its anyOf branches (for `X | None`)."""
    if schema.get("type") == "string":
        return [schema]
    if schema.get("type") == "array":
        return _string_schemas(schema.get("items", {}))
    return [found for branch in schema.get("anyOf", []) for found in _string_schemas(branch)]


