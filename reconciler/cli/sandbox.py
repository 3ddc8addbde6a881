"""`sandbox serve` and `sandbox approve`: the built-in sandbox provider and its scripted user.

Owns: those commands' options and messages. Must not: hold provider logic (reconciler.sandbox does).
"""

from __future__ import annotations

from pathlib import Path

import click

from reconciler.cli.group import EXIT_OK, cli
from reconciler.errors import UsageError


@cli.group()
def sandbox() -> None:
    """The built-in sandbox: Azure DevOps OAuth, Entra ID and the Cyclr API on 127.0.0.1, for demos and tests."""


@sandbox.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (keep it loopback).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port (0: any free port).")
@click.option("--seed", type=click.Path(exists=True, dir_okay=False), help="YAML of apps, organizations and Cyclr accounts to set up.")
def sandbox_serve(host: str, port: int, seed: str | None) -> int:
    """Serve the sandbox provider until interrupted (see docs/sandbox.md).

    \b
    Examples:
      reconciler sandbox serve --seed examples/quickstart/sandbox.yaml
    """
    from reconciler.sandbox import SandboxServer, load_seed
    from reconciler.sandbox.seed import SeedError

    if host not in {"127.0.0.1", "localhost", "::1"}:
        raise UsageError(f"the sandbox serves loopback only, not {host}", hint="it hands out test tokens to anyone")
    try:
        server = SandboxServer(host, port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    if seed:
        try:
            load_seed(server.provider, Path(seed), server.cyclr)
        except SeedError as exc:
            server.stop()
            raise UsageError(str(exc)) from None
    click.echo(f"Sandbox provider listening on {server.url} (Ctrl-C to stop)", err=True)
    try:
        server.serve_forever()
    finally:
        server.stop()
    return EXIT_OK


@sandbox.command("approve")
@click.argument("url")
@click.option("--deny", is_flag=True, help="Click Deny instead of Approve.")
@click.option("--no-follow", is_flag=True, help="Print the callback URL instead of opening it.")
def sandbox_approve(url: str, deny: bool, no_follow: bool) -> int:
    """Answer a sandbox consent page like a user would (usable as BROWSER="reconciler sandbox approve %s").

    \b
    Examples:
      BROWSER="reconciler sandbox approve %s" reconciler apply --auto-approve
      reconciler sandbox approve "$URL" --no-follow    # prints the URL to paste
    """
    from reconciler.sandbox.agent import ConsentAgentError, answer_consent

    try:
        landing = answer_consent(url, approve=not deny, follow=not no_follow)
    except (ConsentAgentError, OSError) as exc:
        raise UsageError(f"sandbox approve: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - httpx errors: a plain line, not a traceback
        raise UsageError(f"sandbox approve: {type(exc).__name__}") from None
    if no_follow:
        click.echo(landing)
    return EXIT_OK


