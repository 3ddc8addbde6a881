"""The command-line shell: parse flags, call the application layer, render, map errors to exit codes.

One module per command family: `group` (the `reconciler` group, global options, exit codes, errors), `options`
(shared options), `output` (backstop, progress, parts), `checks` (validate, schema, refresh), `plan` (plan,
show), `run` (apply, authorize), `statecmds` (state ..., force-unlock), `statuscmd` (status), `preflightcmd` (preflight), `tokencmd` (token), `sandbox`. Results go
to stdout, status and errors to stderr. Owns: assembling the commands into one group. Must not: hold planning,
loading or state logic, or import it at start-up (`reconciler --help` loads click and the command modules only).
"""

from __future__ import annotations

import gc
import os
import sys

from reconciler.cli import (  # noqa: F401 - each registers its commands
    checks,
    importcmd,
    plan,
    preflightcmd,
    run,
    sandbox,
    serve,
    statecmds,
    statuscmd,
    tokencmd,
)
from reconciler.cli.group import cli, teardown_skipped

__all__ = ["cli", "main"]


def main() -> None:
    try:
        cli(prog_name="reconciler")
    except SystemExit as exc:
        if teardown_skipped() and (exc.code is None or isinstance(exc.code, int)):
            _end_now(exc.code or 0)
        raise
    finally:
        # The process ends here. With the cyclic GC on, the interpreter would first pass over every object still
        # alive (a million after reading a 10,000-installation state) looking for cycles; with it off, cycles are
        # still collected, after the modules are torn down, when little is left.
        gc.disable()


def _end_now(code: int) -> None:
    """End the process without tearing the interpreter down (a command that wrote all it had and left nothing
    open, e.g. `status` at 10,000 installations: freeing a million objects one by one takes tens of ms). Output
    is flushed first; a flush that fails returns, and the process ends the usual way (which reports it)."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(code)
