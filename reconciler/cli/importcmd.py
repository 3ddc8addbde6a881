"""`import`: adopt accounts and account connectors that already exist on the platform.

Owns: the command's options and what it prints (what was adopted, the files written, the include line to add,
the environment variables that must hold connector secrets). Must not: hold import logic (reconciler.app.importer).
"""

from __future__ import annotations

from pathlib import Path

import click

from reconciler.cli.group import EXIT_OK, GlobalOptions, cli
from reconciler.cli.options import LOCK_TIMEOUT, patterns
from reconciler.errors import one_line


@cli.command("import")
@click.option("--tenant", multiple=True, metavar="TENANT", callback=patterns,
              help="Only these tenants (globs over tenant keys; repeatable).")
@click.option("--write", "write_dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Where to write one YAML file per tenant not declared yet (default: tenants/).")
@click.option("--dry-run", is_flag=True, help="Print the YAML and what would be adopted; write and record nothing.")
@LOCK_TIMEOUT
@click.pass_obj
def import_(opts: GlobalOptions, tenant: tuple[str, ...], write_dir: Path | None, dry_run: bool, lock_timeout: float) -> int:
    """Adopt what exists on the platform: accounts and their account connectors.

    Tenants the configuration declares are matched by account id; other accounts get a YAML file each (connector
    secrets as ${env:...} references, never values). What is adopted is recorded as it is, so the next plan is
    "No changes" and nobody signs in again.

    \b
    Examples:
      reconciler import --dry-run
      reconciler import --write tenants
      reconciler import --tenant acme        # adopt the existing account of a declared tenant
    """
    from reconciler.addresses import Globs
    from reconciler.app.importer import run_import

    ws = opts.workspace()
    directory = None if write_dir is None else (write_dir if write_dir.is_absolute() else ws.config_dir / write_dir)
    outcome = run_import(ws, tenants=Globs.of(tenant), write_dir=directory, dry_run=dry_run, lock_timeout=lock_timeout)
    if dry_run:
        for path, text in outcome.documents.items():
            click.echo(f"# {path}\n{text}")
    verb = "would adopt" if dry_run else "adopted"
    for address in outcome.adopted:
        click.echo(f"{address}: {verb}", err=True)
    for note in outcome.notes:
        click.echo(f"note: {one_line(note)}", err=True)
    for path in outcome.written:
        click.echo(f"wrote {path}", err=True)
    for variable, address in sorted(outcome.secrets.items()):
        click.echo(f"note: set {variable} to the client secret of {address}", err=True)
    if outcome.include_line is not None:
        click.echo(f"note: the root file's include: does not cover these files; add:\n  include:\n    - {outcome.include_line}",
                   err=True)
    summary = f"{len(outcome.adopted)} {'would be ' if dry_run else ''}adopted" if outcome.adopted else "nothing to adopt"
    click.echo(f"Import complete: {summary}.")
    return EXIT_OK
