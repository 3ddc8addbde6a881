"""`token`: a fresh access token of one installation on stdout, alone on one line — like `gh auth token`.

Owns: the command's options, the actor named in its audit entry (`cli:<user>@<host>`), and its output: the token
and a newline on stdout, anything else one line on stderr (exit 1). Must not: hold token logic (`app/tokens.py`),
or show the token anywhere but stdout.
"""

from __future__ import annotations

import click

from reconciler.cli.group import EXIT_OK, GlobalOptions, cli
from reconciler.cli.options import exact_address


def _window(ctx: click.Context, param: click.Parameter, value: str):  # type: ignore[no-untyped-def]
    """--window as a duration; a one-line usage error otherwise."""
    from reconciler.durations import DurationError, parse_duration
    from reconciler.errors import UsageError

    try:
        return parse_duration(value)
    except DurationError as exc:
        raise UsageError(f"--window: {exc}") from None


def _actor() -> str:
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"


@cli.command()
@click.argument("address", callback=exact_address("installation"))
@click.option("--window", default="2m", show_default=True, callback=_window, metavar="DURATION",
              help="Refresh first when the token expires within this (45s, 30m, 12h).")
@click.pass_obj
def token(opts: GlobalOptions, address: str, window) -> int:  # type: ignore[no-untyped-def]
    """Print a fresh access token of an installation (refreshed first when it expires soon).

    The token alone on one line of stdout; errors on stderr (exit 1). Every read is audited.

    \b
    Examples:
      reconciler token installation.acme.ado
      curl -H "Authorization: Bearer $(reconciler token installation.acme.ado)" ...
    """
    from reconciler.app.tokens import run_token

    fresh = run_token(opts.workspace(), address, window=window, actor=_actor())
    click.echo(fresh.access_token.get_secret_value())
    return EXIT_OK
