"""`serve`: the authorization service in the foreground.

Owns: the command's options. Must not: hold service logic (reconciler.service), or write to stderr outside the
service's JSON log lines (once the configuration has loaded).
"""

from __future__ import annotations

import logging
import os
import sys
import threading

import click

from reconciler.cli.group import EXIT_OK, GlobalOptions, cli
from reconciler.errors import UsageError


def _listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen {value}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


@cli.command("serve")
@click.option("--listen", default="127.0.0.1:8080", show_default=True, metavar="HOST:PORT",
              help="Where to listen; the team's TLS proxy forwards service.public_url here.")
@click.option("--lock-timeout", type=click.FloatRange(min=0.0), default=60.0, show_default=True, metavar="SECONDS",
              help="How long a completion waits for the state lock (an apply may hold it).")
@click.option("--refresh-interval", type=click.FloatRange(min=1.0), default=60.0, show_default=True, metavar="SECONDS",
              help="How often tokens are refreshed ahead of expiry (and idle ones kept alive) in the background.")
@click.pass_obj
def serve(opts: GlobalOptions, listen: str, lock_timeout: float, refresh_interval: float) -> int:
    """Serve sign-in links, the token API and operations endpoints until SIGTERM.

    Tenants open the links `apply --auth-mode defer` printed; the service completes their sign-ins into the
    configured state. Logs are JSON lines on stderr.

    \b
    Examples:
      reconciler serve --listen 127.0.0.1:8080
      reconciler --env production serve --listen 0.0.0.0:8080
    """
    from reconciler.auth.transport import Http
    from reconciler.service.context import ServiceContext
    from reconciler.service.runtime import RefreshSettings
    from reconciler.service.server import run_service

    host, port = _listen(listen)
    ws = opts.workspace()
    with Http(timeout=ws.http_timeout) as http:
        ctx = ServiceContext.open(ws, http=http, lock_timeout=lock_timeout)
        ctx.key  # a wrong or missing state key fails before the service listens  # noqa: B018
        run_service(ctx, host, port, RefreshSettings(interval=refresh_interval))
    # Stopped (SIGTERM, Ctrl-C) and drained: a sign-in still waiting past the grace period is cut off as a crash
    # would cut it (every step is recorded whole or not at all); its thread must not hold the exit up.
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_OK)
    return EXIT_OK
