"""The command-line shell: parse flags, call the layers, render, map errors to exit codes.

Owns: click commands and options, where output goes (results to stdout, status and errors to stderr), exit
codes (0 ok / no changes, 1 error, 2 changes with --detailed-exitcode). Must not: hold planning, loading or
state logic. Expected errors print as one line each; anything else is reported as a bug, without its message
(which could carry a value), and with a traceback only under RECONCILER_DEBUG=1.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from reconciler import __version__
from reconciler.errors import ReconcilerError

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


@dataclass(frozen=True)
class Options:
    """Global options, fixed once parsed."""

    config_dir: Path
    color: bool | None

    def use_color(self) -> bool:
        if self.color is not None:
            return self.color
        return sys.stdout.isatty() and "NO_COLOR" not in os.environ


class ReconcilerGroup(click.Group):
    """Maps every error to one line on stderr and an exit code; usage errors exit 1 (2 means "changes")."""

    def main(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
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
@click.option("--color/--no-color", default=None, help="Colour output (default: only on a terminal).")
@click.version_option(__version__, prog_name="reconciler")
@click.pass_context
def cli(ctx: click.Context, config_dir: str, color: bool | None) -> None:
    """Declare connector installations in YAML; plan and apply them like Terraform.

    \b
    Examples:
      reconciler validate
      reconciler plan
      reconciler -C envs/prod plan --format markdown > plan.md
    """
    ctx.obj = Options(config_dir=Path(config_dir), color=color)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@cli.command()
@click.pass_obj
def validate(opts: Options) -> int:
    """Check the configuration: schema, catalog, secret references. Writes nothing.

    \b
    Examples:
      reconciler validate
      reconciler -C examples/quickstart validate
    """
    from reconciler.config import load_config

    loaded = load_config(opts.config_dir, environ=os.environ, today=_now().date())
    for warning in loaded.warnings:
        click.echo(f"warning: {warning}", err=True)
    desired = loaded.desired
    tenants = len({i.tenant for i in desired.installations.values()})
    click.echo(
        f"The configuration is valid: {_count(len(desired.partners), 'partner')}, {_count(tenants, 'tenant')}, "
        f"{_count(len(desired.installations), 'installation')} in {_count(len(loaded.files), 'file')}."
    )
    return EXIT_OK


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
@click.pass_obj
def plan(opts: Options, fmt: str, detailed_exitcode: bool) -> int:
    """Show what apply would change. Reads state, writes nothing, needs no network.

    \b
    Examples:
      reconciler plan
      reconciler plan --format json | jq '.summary'
      reconciler plan --format markdown --detailed-exitcode > comment.md
    """
    from reconciler.render import render_json, render_markdown, render_text
    from reconciler.workflow import plan_config

    doc = plan_config(opts.config_dir, environ=os.environ, now=_now()).document
    if fmt == "json":
        output = render_json(doc)
    elif fmt == "markdown":
        output = render_markdown(doc)
    else:
        output = render_text(doc, color=opts.use_color())
    click.echo(output, nl=False, color=opts.use_color())
    return EXIT_CHANGES if detailed_exitcode and doc.has_changes else EXIT_OK


@cli.command()
def schema() -> int:
    """Print the JSON Schema of reconciler.yaml, for editors and CI linters.

    \b
    Examples:
      reconciler schema > reconciler.schema.json
      # then, first line of reconciler.yaml:
      # yaml-language-server: $schema=./reconciler.schema.json
    """
    from reconciler.config.schema import RootFile

    document = {"$schema": "https://json-schema.org/draft/2020-12/schema", **RootFile.model_json_schema()}
    click.echo(json.dumps(document, indent=2))
    return EXIT_OK


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def main() -> None:
    cli(prog_name="reconciler")
