"""The command-line shell: parse flags, call the application layer, render, map errors to exit codes.

One module per command family: `group` (the `reconciler` group, global options, exit codes, errors), `options`
(shared options), `output` (backstop, progress, parts), `checks` (validate, schema, refresh), `plan` (plan,
show), `run` (apply, authorize), `statecmds` (state ..., force-unlock), `statuscmd` (status), `preflightcmd` (preflight), `tokencmd` (token), `sandbox`. Results go
to stdout, status and errors to stderr. Owns: assembling the commands into one group. Must not: hold planning,
loading or state logic, or import it at start-up (`reconciler --help` loads click and the command modules only).
"""

from __future__ import annotations

import gc

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
from reconciler.cli.group import cli

__all__ = ["cli", "main"]


def main() -> None:
    try:
        cli(prog_name="reconciler")
    finally:
        # The process ends here. With the cyclic GC on, the interpreter would first pass over every object still
        # alive (a million after reading a 10,000-installation state) looking for cycles; with it off, cycles are
        # still collected, after the modules are torn down, when little is left.
        gc.disable()
