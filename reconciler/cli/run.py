"""`apply` and `authorize`: carrying out a plan, completing pending authorizations; progress, links, prompts.

Owns: the consent step chosen on the command line, the confirmation prompt, the executor's progress on stderr
and links on stdout, and the closing summary and exit code (3: still pending). Must not: hold planning or
execution logic.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import click

from reconciler.cli.group import EXIT_ERROR, EXIT_OK, EXIT_PENDING, GlobalOptions, cli
from reconciler.cli.options import (
    AUTH_TIMEOUT,
    LOCK_TIMEOUT,
    PARALLELISM,
    REFRESH_CATALOG,
    REQUIRE_SCOPES,
    WINDOW,
    address_options,
    patterns,
    plan_scope,
    refresh_settings,
    selection_options,
)
from reconciler.cli.views import view
from reconciler.errors import ReconcilerError, UsageError, one_line


class _EchoHooks:
    """Executor progress on stderr; authorization links (results a user acts on) on stdout."""
    def step(self, address: str, message: str) -> None:
        click.echo(f"{address}: {one_line(message)}", err=True)

    def link(self, address: str, url: str) -> None:
        """Listed by tenant when the run ends (`_links`)."""

    def warning(self, address: str, message: str) -> None:
        click.echo(f"warning: {address}: {one_line(message)}", err=True)


def _announce(label: str, url: str) -> None:
    click.echo(f"\nAuthorize {label} — open this URL in a browser:\n  {url}\n", err=True)


def _consent(mode: str, timeout: float, *, chosen: bool = True):  # type: ignore[no-untyped-def]
    """The consent step of `mode`; `chosen` False (the default mode) lets browser mode fall back to paste for a
    redirect URI that is not a loopback address."""
    from reconciler.auth.consent import BrowserConsent, PasteConsent

    if mode == "defer":
        return None

    def read_answer(prompt: str) -> str:
        return click.prompt(prompt, err=True, default="", show_default=False)

    paste = PasteConsent(_announce, read_answer)
    if mode == "paste":
        return paste
    fallback = None if chosen else paste
    return BrowserConsent(_announce, lambda m: click.echo(f"note: {m}", err=True), fallback, timeout=timeout)


def _sign_in(mode: str, timeout: float):  # type: ignore[no-untyped-def]
    """How a person signs in through the platform (`auth_via: platform`) in `mode`: None defers every sign-in."""
    from reconciler.auth.signin import BrowserSignIn, PasteSignIn

    def report(message: str) -> None:
        click.echo(f"note: {one_line(message)}", err=True)

    if mode == "defer":
        return None
    if mode == "paste":
        return PasteSignIn(lambda label, url: click.echo(f"\nSign in {label} — open this link in a browser (it works "
                                                         f"once, for 5 minutes):\n  {url}\n", err=True), report)
    return BrowserSignIn(report, timeout=timeout)


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


AUTH_MODE = click.option(
    "--auth-mode",
    type=click.Choice(["browser", "paste", "defer"]),
    default=None,
    help="How users authorize: browser (loopback redirect), paste (the redirected URL), defer (record links; "
    "exit 3). Default: browser on a terminal, else defer.",
)

@cli.command()
@click.argument("plan_file", required=False, type=click.Path(dir_okay=False, path_type=Path), metavar="[PLANFILE]")
@click.option("--auto-approve", is_flag=True, help="Apply without asking for confirmation.")
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: the plan and progress on stderr, and one JSON document of what was done on stdout "
              "(completed, pending with each one's link, warnings, error).")
@AUTH_MODE
@AUTH_TIMEOUT
@click.option("--leave-missed-pending", is_flag=True,
              help="A browser sign-in that times out or is abandoned is left pending (exit 3) and the others go on; "
              "on a terminal you are asked instead.")
@REQUIRE_SCOPES
@LOCK_TIMEOUT
@click.option("--refresh", is_flag=True, help="Refresh and check every installation first (as `plan --refresh`), "
              "then plan and apply in one run.")
@PARALLELISM
@WINDOW
@REFRESH_CATALOG
@address_options
@click.pass_obj
def apply(opts: GlobalOptions, plan_file: Path | None, auto_approve: bool, output: str, auth_mode: str | None, auth_timeout: float,
          leave_missed_pending: bool, require_scopes: bool, lock_timeout: float, refresh: bool, parallelism: int,
          window: float, refresh_catalog: bool, target: tuple[str, ...], exclude: tuple[str, ...],
          replace: tuple[str, ...], allow_delete: tuple[str, ...]) -> int:
    """Plan, confirm, then make it so: run the due authorizations and record tokens (sealed) and granted scopes.

    State is written after every completed step; an error stops the run and keeps everything done before it.
    Exit 0 when done, 3 when authorizations are still pending, 1 on error.

    \b
    Examples:
      reconciler apply
      reconciler apply --auto-approve --auth-mode defer     # in CI: post the links, exit 3
      reconciler apply plan.bin --auto-approve --auth-mode defer   # exactly a saved, reviewed plan
      BROWSER="reconciler sandbox approve %s" reconciler apply --auto-approve   # sandbox demo
    """
    from reconciler.app.run import run_apply

    mode = auth_mode or ("browser" if _interactive() else "defer")
    if plan_file is not None and (target or exclude or replace or allow_delete or refresh):
        raise UsageError("a saved plan is applied as it was made", hint="give --target & co. to `plan --out`")
    if not auto_approve and not sys.stdin.isatty():
        raise UsageError("apply needs confirmation, and there is no terminal to ask", hint="pass --auto-approve")

    def confirm(document) -> bool:  # type: ignore[no-untyped-def]
        text = view("text", color=opts.use_color()).plan(document)
        click.echo(text, nl=False, color=opts.use_color(), err=output == "json")
        if not document.has_changes:
            return False
        if auto_approve:
            return True
        return click.confirm("\nApply these changes?", default=False, err=True)

    def on_missed(address: str, error: ReconcilerError) -> bool:
        """Leave a missed sign-in pending: with --leave-missed-pending, or when the user says so on a terminal."""
        click.echo(f"{address}: {one_line(error.message)}", err=True)
        if leave_missed_pending:
            return True
        if not sys.stdin.isatty():
            return False
        return click.confirm("Continue with the others and leave it pending?", default=False, err=True)

    outcome = run_apply(
        dataclasses.replace(opts.workspace(), refresh_catalog=refresh_catalog),
        refresh=refresh_settings(parallelism, window) if refresh else None,
        scope=plan_scope(target, exclude, replace, allow_delete),
        plan_file=plan_file,
        consent=_consent(mode, auth_timeout, chosen=auth_mode is not None),
        sign_in=_sign_in(mode, auth_timeout),
        hooks=_EchoHooks(),
        confirm=confirm,
        on_missed=on_missed,
        require_scopes=require_scopes,
        lock_timeout=lock_timeout,
        on_key_created=lambda path: click.echo(
            f"note: created the state key {path} (mode 0600, git-ignored); back it up, or set RECONCILER_STATE_KEY",
            err=True,
        ),
    )
    return _finish_json(outcome) if output == "json" else _finish(outcome)


@cli.command()
@click.argument("addresses", nargs=-1, callback=patterns)
@click.option("--reissue", is_flag=True, help="Replace the pending authorization with a new link.")
@click.option("--links", is_flag=True, help="Print each pending authorization's link of the service (`service:`), "
              "by tenant, for its tenant's admin to open; nothing is completed here.")
@click.option(
    "--auth-mode",
    type=click.Choice(["browser", "paste"]),
    default=None,
    help="How users authorize: browser (loopback redirect) or paste (the redirected URL). Default: browser on a "
    "terminal, else paste.",
)
@AUTH_TIMEOUT
@REQUIRE_SCOPES
@LOCK_TIMEOUT
@selection_options
@click.pass_obj
def authorize(opts: GlobalOptions, addresses: tuple[str, ...], reissue: bool, links: bool, auth_mode: str | None, auth_timeout: float,
              require_scopes: bool, lock_timeout: float, target: tuple[str, ...], exclude: tuple[str, ...]) -> int:
    """Complete pending (deferred) authorizations — all, or the given addresses (globs allowed).

    \b
    Examples:
      reconciler authorize
      reconciler authorize 'installation.acme.*' --auth-mode paste
      reconciler authorize --target 'installation.acme.*' --exclude installation.acme.legacy
      reconciler authorize installation.acme.ado-main --reissue
      reconciler authorize --links                 # the service's sign-in links, to send to tenants
    """
    from reconciler.app.run import run_authorize

    if links and reissue:
        raise UsageError("--links and --reissue do not go together", hint="reissue first, then print the links")
    mode = auth_mode or ("browser" if _interactive() else "paste")
    outcome = run_authorize(
        opts.workspace(),
        [*addresses, *target],
        excludes=exclude,
        consent=None if reissue or links else _consent(mode, auth_timeout, chosen=auth_mode is not None),
        sign_in=None if reissue or links else _sign_in(mode, auth_timeout),
        hooks=_EchoHooks(),
        reissue=reissue,
        links=links,
        require_scopes=require_scopes,
        lock_timeout=lock_timeout,
    )
    if outcome.result is None:
        click.echo("No pending authorizations.")
        return EXIT_OK
    if links:
        _links(outcome.result.pending)
        count = len(outcome.result.pending)
        click.echo(f"{count} sign-in link{'s' if count != 1 else ''}." if count else "No pending authorization has a link.")
        return EXIT_OK
    return _finish(outcome, "Authorization")


def _finish_json(outcome) -> int:  # type: ignore[no-untyped-def]
    """`apply --format json`: one document of what was done; the exit code as for text (3: still pending)."""
    import json

    from reconciler.addresses import tenant_of
    from reconciler.state.model import InstallationRecord

    result = outcome.result
    if result is None:
        click.echo(json.dumps({"completed": [], "pending": [], "warnings": [], "error": None}, indent=2))
        return EXIT_OK
    records = result.state.resources if result.state is not None else {}

    def link(address: str, url: str) -> str | None:
        record = records.get(address)
        pending = record.pending if isinstance(record, InstallationRecord) else None
        return url or (pending.link or pending.authorize_url if pending is not None else None)

    document = {
        "completed": list(result.completed),
        "pending": [{"address": a, "tenant": tenant_of(a), "link": link(a, url)} for a, url in result.pending],
        "warnings": [{"address": a, "message": one_line(m)} for a, m in result.warnings],
        "error": {"message": result.error.message, "hint": result.error.hint} if result.error is not None else None,
    }
    click.echo(json.dumps(document, indent=2))
    if result.error is not None:
        return EXIT_ERROR
    return EXIT_PENDING if result.pending else EXIT_OK


def _links(pending: list[tuple[str, str]]) -> None:
    """The links issued by this run, by tenant: each tenant's admin opens theirs to sign in."""
    from reconciler.addresses import tenant_of

    by_tenant: dict[str, list[tuple[str, str]]] = {}
    for address, url in pending:
        if url:
            by_tenant.setdefault(tenant_of(address), []).append((address, url))
    if not by_tenant:
        return
    click.echo("Sign-in links, by tenant (each is for that tenant's admin):")
    for tenant, links in by_tenant.items():
        click.echo(f"  {tenant or '(no tenant)'}:")
        for address, url in links:
            click.echo(f"    {address}: authorization pending — open this link to sign in:\n      {url}")


def _finish(outcome, what: str = "Apply") -> int:  # type: ignore[no-untyped-def]
    """The closing summary of `what` ("Apply", "Authorization"): counts, then the exit code (3: still pending)."""
    result = outcome.result
    if result is None:
        return EXIT_OK
    pending = [address for address, _ in result.pending]
    parts = [f"{len(result.completed)} completed"]
    if pending:
        parts.append(f"{len(pending)} pending authorization{'s' if len(pending) != 1 else ''}")
    if result.warnings:
        parts.append(f"{len(result.warnings)} warning{'s' if len(result.warnings) != 1 else ''}")
    if result.error is not None:
        _links(result.pending)
        click.echo(f"{what} stopped: {', '.join(parts)}; everything completed is saved in state.", err=True)
        raise result.error
    _links(result.pending)
    click.echo(f"{what} complete: {', '.join(parts)}.")
    if pending:
        click.echo("Complete pending ones with `reconciler authorize` (or open the links above).")
        return EXIT_PENDING
    return EXIT_OK


