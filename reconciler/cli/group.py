"""The command group and its global options, and how every error ends: one line on stderr and an exit code.

Owns: `reconciler` itself (-C, --env, --color, --no-cache, --http-timeout, accepted before or after the
subcommand), the exit codes (0 ok / no changes, 1 error, 2 changes with --detailed-exitcode, 3 pending), and the
mapping of errors to them. Expected errors print as one line each; anything else is reported as a bug, without
its message (which could carry a value), and with a traceback only under RECONCILER_DEBUG=1.
Must not: hold planning, loading or state logic, or import them at start-up (`reconciler --help` stays fast).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from reconciler import __version__
from reconciler.errors import ReconcilerError

__all__ = ["EXIT_CHANGES", "EXIT_ERROR", "EXIT_OK", "EXIT_PENDING", "GlobalGroup", "GlobalOptions", "cli", "count", "now",
           "skip_teardown", "teardown_skipped"]

EXIT_OK, EXIT_ERROR, EXIT_CHANGES, EXIT_PENDING = 0, 1, 2, 3
_TEARDOWN = {"skip": False}


@dataclass(frozen=True)
class GlobalOptions:
    """The global options (-C, --env, --color, --no-cache, --http-timeout), fixed once parsed."""

    config_dir: Path
    color: bool | None
    environment: str | None = None
    cache: bool = True
    http_timeout: float = 30.0

    def workspace(self):  # type: ignore[no-untyped-def]
        from reconciler.app.workspace import Workspace

        return Workspace(self.config_dir, os.environ, self.environment, now, cache=self.cache, http_timeout=self.http_timeout)

    def use_color(self) -> bool:
        if self.color is not None:
            return self.color
        return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def _set_global(field: str, convert: Any = None):  # type: ignore[no-untyped-def]
    """A callback for a global option given after the subcommand name: when given, it replaces the value given
    before it (the one after the subcommand wins) in the context object the command receives."""

    def store(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is None or value is False or value == ():
            return  # not given after the subcommand: the value before it (or its default) stays
        value = convert(value) if convert is not None else value
        if isinstance(ctx.obj, GlobalOptions):
            ctx.obj = dataclasses.replace(ctx.obj, **{field: value})

    return store


def global_options(func):  # type: ignore[no-untyped-def]
    """-C / --env / --color / --no-cache / --http-timeout accepted after the subcommand name too, as users type
    them (`reconciler plan --env prod`); listed in the subcommand's --help. Given on both sides, the one after
    the subcommand wins. No environment variables here: those are read once, by the group."""
    options = [
        click.option("-C", "--chdir", "g_config_dir", metavar="DIR", expose_value=False,
                     callback=_set_global("config_dir", Path), help="Configuration directory (global option)."),
        click.option("--env", "g_environment", metavar="NAME", expose_value=False,
                     callback=_set_global("environment"), help="Environment (global option)."),
        click.option("--color/--no-color", "g_color", default=None, expose_value=False,
                     callback=_set_global("color"), help="Colour output (global option)."),
        click.option("--no-cache", "g_no_cache", is_flag=True, default=False, expose_value=False,
                     callback=_set_global("cache", lambda flag: not flag), help="Do not use the parse cache (global option)."),
        click.option("--http-timeout", "g_http_timeout", type=click.FloatRange(min=0.1), default=None,
                     expose_value=False, metavar="SECONDS", callback=_set_global("http_timeout"),
                     help="Seconds per provider request (global option)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


class GlobalGroup(click.Group):
    """A subcommand group whose commands (and itself) all take the global options."""

    def command(self, *args: Any, **kwargs: Any) -> Any:
        decorator = super().command(*args, **kwargs)
        return lambda func: decorator(global_options(func))


class ReconcilerGroup(GlobalGroup):
    """Maps every error to one line on stderr and an exit code; usage errors exit 1 (2 means "changes")."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
            sys.stdout.flush()  # surface a failed write (a full disk) here, not at interpreter exit
        except click.ClickException as exc:
            exc.show()
            sys.exit(EXIT_ERROR)
        except (click.Abort, KeyboardInterrupt):
            click.echo("Aborted.", err=True)
            sys.exit(EXIT_ERROR)
        except ReconcilerError as exc:
            for line in exc.lines():
                click.echo(line, err=True)
            sys.exit(exc.exit_code)
        except BrokenPipeError:  # `reconciler plan | head`: the reader left; nothing to report
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_ERROR)
        except OSError as exc:  # e.g. output to a full disk
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # drop what cannot be written
            click.echo(f"error: {exc.strerror or type(exc).__name__}" + (f": {exc.filename}" if exc.filename else ""), err=True)
            sys.exit(EXIT_ERROR)
        except Exception as exc:  # noqa: BLE001 - the last line of defence: a bug, reported as one
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            where = f"{Path(frame.filename).name}:{frame.lineno}"
            click.echo(f"internal error: {type(exc).__name__} at {where} — this is a bug in reconciler.", err=True)
            if os.environ.get("RECONCILER_DEBUG") == "1":
                traceback.print_exc()
            else:
                click.echo("  set RECONCILER_DEBUG=1 for the traceback", err=True)
            sys.exit(EXIT_ERROR)
        sys.exit(result if isinstance(result, int) else EXIT_OK)


@click.group(cls=ReconcilerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-C",
    "--chdir",
    "config_dir",
    default=".",
    metavar="DIR",
    help="Configuration directory (holds reconciler.yaml). Default: the current directory.",
)
@click.option(
    "--env",
    "environment",
    envvar="RECONCILER_ENV",
    metavar="NAME",
    help="Environment: environments/NAME.yaml merged over the configuration, with its own state "
    "(also RECONCILER_ENV).",
)
@click.option("--color/--no-color", default=None, help="Colour output (default: only on a terminal).")
@click.option(
    "--no-cache",
    is_flag=True,
    envvar="RECONCILER_NO_CACHE",
    help="Parse every file again instead of using the parse cache (RECONCILER_CACHE_DIR, default ~/.cache/reconciler).",
)
@click.option(
    "--http-timeout",
    type=click.FloatRange(min=0.1),
    default=30,
    show_default=True,
    envvar="RECONCILER_HTTP_TIMEOUT",
    metavar="SECONDS",
    help="Seconds to wait on each request to a provider before it counts as timed out (and is retried) "
    "(also RECONCILER_HTTP_TIMEOUT).",
)
@click.version_option(__version__, prog_name="reconciler")
@click.pass_context
def cli(
    ctx: click.Context, config_dir: str, environment: str | None, color: bool | None, no_cache: bool, http_timeout: float
) -> None:
    """Declare connector installations in YAML; plan and apply them like Terraform.

    \b
    Examples:
      reconciler validate
      reconciler plan
      reconciler --env prod plan --format markdown > plan.md
    """
    ctx.obj = GlobalOptions(
        config_dir=Path(config_dir), color=color, environment=environment or None, cache=not no_cache,
        http_timeout=http_timeout,
    )


def skip_teardown() -> None:
    """The command has nothing left to do at exit (no file or connection open, nothing to write, no thread): the
    process may end without the interpreter's teardown once its output is flushed (see `reconciler.cli.main`)."""
    _TEARDOWN["skip"] = True


def teardown_skipped() -> bool:
    return _TEARDOWN["skip"]


def now() -> dt.datetime:
    """The clock every command reads (tests fix it here)."""
    return dt.datetime.now(dt.UTC)


def count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
