"""`plan` and `show`: what apply would change, and a saved plan rendered.

Owns: those commands' options, the `PlanRequest` built from them, and where the plan goes (stdout, the saved
plan, the split parts). Must not: hold loading or planning logic (the application layer does that).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from reconciler.cli.group import EXIT_CHANGES, EXIT_OK, GlobalOptions, cli
from reconciler.cli.options import (
    REFRESH_CATALOG,
    address_options,
    plan_scope,
    refresh_options,
    refresh_settings,
)
from reconciler.cli.output import progress_bar, redacted, replace_parts, warn_short_secrets
from reconciler.cli.views import view
from reconciler.errors import ReconcilerError, UsageError

if TYPE_CHECKING:
    from reconciler.app.request import PlanRequest


@cli.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
    help="text for a terminal, json for automation (docs/plan-json.md), markdown for a pull request.",
)
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 when there are no changes, 2 when there are.")
@click.option("--fail-on-warning", is_flag=True, help="Exit 1 when the plan has any warning (foresight included: "
              "client secrets and refresh tokens that run out, a flavour being removed), after printing it.")
@click.option(
    "--split-dir",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="With --format markdown, also write the comment in numbered parts that each fit a GitHub comment: "
    "DIR/plan-1.md, plan-2.md, ... (earlier plan-N.md files in DIR are replaced).",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Also save the plan, for `apply FILE`.")
@click.option("--refresh", "refresh", is_flag=True, help="Refresh expiring tokens and check each at the provider (and "
              "every account connector on the platform) first.")
@refresh_options
@REFRESH_CATALOG
@address_options
@click.pass_obj
def plan(opts: GlobalOptions, fmt: str, detailed_exitcode: bool, fail_on_warning: bool, split_dir: Path | None,
         out: Path | None, refresh: bool,
         parallelism: int, window: float, lock_timeout: float, refresh_catalog: bool, target: tuple[str, ...],
         exclude: tuple[str, ...], replace: tuple[str, ...], allow_delete: tuple[str, ...]) -> int:
    """Show what apply would change. Offline and read-only, unless --refresh (which stores rotated tokens).

    \b
    Examples:
      reconciler plan
      reconciler plan --format json | jq '.summary'
      reconciler plan --format markdown --detailed-exitcode > comment.md
      reconciler plan --format markdown --split-dir comment-parts > comment.md
      reconciler plan --out plan.bin && reconciler apply plan.bin
      reconciler plan --target 'installation.acme.*'
    """
    if split_dir is not None and fmt != "markdown":
        raise UsageError("--split-dir writes Markdown parts", hint="add --format markdown")
    from reconciler.app.request import PlanRequest

    request = PlanRequest(
        dataclasses.replace(opts.workspace(), refresh_catalog=refresh_catalog),
        plan_scope(target, exclude, replace, allow_delete),
        format=fmt,
        color=opts.use_color(),
        out=out,
        split_dir=split_dir,
        refresh=refresh_settings(parallelism, window) if refresh else None,
        lock_timeout=lock_timeout,
        detailed_exitcode=detailed_exitcode,
        fail_on_warning=fail_on_warning,
    )
    return _plan(request)


def _plan(request: PlanRequest) -> int:
    """The memo's answer when nothing changed; otherwise plan (included files parsed on a second core while this
    process imports the rest), print, and keep the output in the memo."""
    from reconciler.app.memoized import open_memo

    memo = open_memo(request)
    hit = memo.lookup(request.workspace.clock()) if memo is not None else None
    if hit is not None:
        output = redacted(hit.output, hit.secret_values)
        warn_short_secrets(hit.secret_values)
        return _print(request, output, hit.has_changes)
    ahead = None
    if request.refresh is None:
        from reconciler.app.source import start_parse_ahead

        ahead = start_parse_ahead(request.workspace)
    try:
        return _plan_and_print(request, memo, ahead)
    finally:
        if ahead is not None:
            ahead.close()


def _plan_and_print(request: PlanRequest, memo: Any, ahead: Any) -> int:
    from reconciler.app.memoized import remember
    from reconciler.app.plancmd import plan_request
    from reconciler.app.planning import save_plan

    with progress_bar("Refreshing" if request.refresh is not None else None) as progress:
        outcome = plan_request(request, ahead=ahead, progress=progress)
    result = outcome.result
    if request.refresh is None and result.loaded.unchecked:  # a plan compares secret references, never their values
        click.echo(result.loaded.unchecked_note(), err=True)
    doc = result.document
    if request.out is not None:
        save_plan(request.workspace, result, request.out)
        click.echo(f"Saved the plan to {request.out}; apply exactly it with `reconciler apply {request.out}`.", err=True)
    secrets = result.loaded.desired.secret_values()
    output = redacted(view(request.format, color=request.color).plan(doc), secrets)
    warn_short_secrets(secrets)
    if request.split_dir is not None:
        _write_parts(request.split_dir, doc, secrets)
    if memo is not None:
        remember(memo, result, output)
    code = _print(request, output, doc.has_changes)
    warned = len(doc.warnings) + sum(len(c.warnings) for c in doc.changes)
    if request.fail_on_warning and warned:
        raise ReconcilerError(
            f"the plan has {warned} warning{'s' if warned != 1 else ''} (--fail-on-warning)",
            hint="the warnings are listed with the plan",
        )
    if outcome.partner_faults:
        raise ReconcilerError(
            f"the provider rejected the client credentials of partner(s) {', '.join(outcome.partner_faults)}: their "
            "installations were not re-planned",
            hint="rotate the partner's client secret; users need not sign in again",
        )
    return code


def _print(request: PlanRequest, output: str, has_changes: bool) -> int:
    """`output` on stdout; the exit code of a plan with (or without) changes."""
    click.echo(output, nl=False, color=request.color)
    return EXIT_CHANGES if request.detailed_exitcode and has_changes else EXIT_OK


def _write_parts(split_dir: Path, doc: Any, secrets: frozenset[str] | set[str]) -> None:
    """The Markdown comment in numbered parts (earlier parts replaced), all checked before any is written."""
    from reconciler.render.markdown import render_markdown_parts

    replace_parts(split_dir, "plan", [redacted(part, secrets) for part in render_markdown_parts(doc)])


@cli.command()
@click.argument("plan_file", type=click.Path(dir_okay=False, exists=True, path_type=Path), metavar="PLANFILE")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True)
@click.pass_obj
def show(opts: GlobalOptions, plan_file: Path, fmt: str) -> int:
    """Render a saved plan (after checking its signature) in any format.

    \b
    Examples:
      reconciler show plan.bin --format markdown
    """
    from reconciler.app.planning import show_plan

    output = view(fmt, color=opts.use_color()).plan(show_plan(opts.workspace(), plan_file))
    click.echo(output, nl=False, color=opts.use_color())
    return EXIT_OK


