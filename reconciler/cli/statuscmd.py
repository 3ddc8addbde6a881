"""`status`: what is broken, what runs out when, and who must do what — for alerting and for a weekly review.

Owns: the command's options (filters, window, formats, split parts), where the report goes, and its exit code:
0 when every installation shown is healthy, 2 when any shown is not (pending included), 1 on error. Must not:
hold status logic (`app/status.py`, `status.py`) or rendering (`render/status.py`).
"""

from __future__ import annotations

import datetime as dt
import shutil
import sys
from contextlib import nullcontext
from pathlib import Path

import click

from reconciler.cli.group import EXIT_CHANGES, EXIT_OK, GlobalOptions, cli, skip_teardown
from reconciler.cli.options import LOCK_TIMEOUT, PARALLELISM, duration, patterns
from reconciler.statuswords import STATUS_WORDS

MAX_WINDOW = dt.timedelta(days=3650)
REFRESH_WINDOW_MINUTES = 15.0  # as `reconciler refresh`: tokens this close to expiry are rotated first


@cli.command()
@click.option("--refresh", is_flag=True, help="Refresh tokens that are due and check every installation at the "
              "provider (and the platform) first, recording what is found. Without it, no network call is made.")
@click.option("--tenant", "tenants", multiple=True, metavar="GLOB", callback=patterns,
              help="Only tenants matching this glob (repeatable).")
@click.option("--status", "words", multiple=True, type=click.Choice(STATUS_WORDS),
              help="Only installations with this status (repeatable).")
@click.option("--window", default="14d", show_default=True, callback=duration, metavar="DURATION",
              help="`expiring`: a person will be needed within this (a client secret's declared expiry, a refresh "
              "token near its lifetime).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown", "html"]), default="text",
              show_default=True, help="text for a terminal, json for automation (docs/status-json.md), markdown for "
              "a pull request or issue comment, html for a page to publish (one self-contained file).")
@click.option("--split-dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="With --format markdown, also write the comment in numbered parts that each fit a GitHub comment: "
              "DIR/status-1.md, status-2.md, ... (earlier status-N.md files in DIR are replaced).")
@PARALLELISM
@LOCK_TIMEOUT
@click.pass_obj
def status(opts: GlobalOptions, refresh: bool, tenants: tuple[str, ...], words: tuple[str, ...], window: dt.timedelta,
           fmt: str, split_dir: Path | None, parallelism: int, lock_timeout: float) -> int:
    """Show every installation's status: healthy, expiring, needs-reauthorization, pending or error — why, what
    runs out when, when it was last checked, and what to do next.

    Exit status: 0 when every installation shown is healthy, 2 when any is not (pending included), 1 on error.
    Filters narrow what is shown, and so what the exit status says.

    \b
    Examples:
      reconciler status
      reconciler status --refresh --status needs-reauthorization --format json | jq -r '.installations[].address'
      reconciler status --tenant 'eu-*' --window 30d
      reconciler status --format markdown --split-dir status-parts > status.md
      reconciler status --format html > status.html
    """
    from reconciler.errors import UsageError

    if split_dir is not None and fmt != "markdown":
        raise UsageError("--split-dir writes Markdown parts", hint="add --format markdown")
    if window <= dt.timedelta() or window > MAX_WINDOW:
        raise UsageError("--window must be a positive duration of at most 3650d, such as 14d")
    from reconciler.app.source import paused_gc

    # Offline, the cyclic GC is paused from here on, imports included (see `paused_gc`); a refresh's network work
    # runs with it.
    with nullcontext() if refresh else paused_gc():
        from reconciler.addresses import Globs
        from reconciler.app.status import read_report
        from reconciler.cli.options import refresh_settings
        from reconciler.cli.output import progress_bar

        with progress_bar("Checking" if refresh else None) as progress:
            report = read_report(
                opts.workspace(),
                window=window,
                tenants=Globs.of(tenants) if tenants else None,
                words=set(words),
                refresh=refresh_settings(parallelism, REFRESH_WINDOW_MINUTES) if refresh else None,
                progress=progress,
                lock_timeout=lock_timeout,
            )
    with paused_gc():
        from reconciler.render.status import status_document

        document = status_document(report)
        text = _render(document, fmt, opts.use_color())
    click.echo(text, nl=False, color=opts.use_color())
    if split_dir is not None:
        _write_parts(split_dir, document)
    if not refresh:  # offline: nothing was opened that is still open, nothing is left to write
        skip_teardown()
    return EXIT_OK if document["shown"] == document["summary"]["healthy"] else EXIT_CHANGES


def _render(document: dict, fmt: str, color: bool) -> str:  # type: ignore[type-arg]
    from reconciler.render import status as render

    if fmt == "json":
        return render.render_status_json(document)
    if fmt == "markdown":
        return "\n".join(render.render_status_markdown_parts(document, limit=sys.maxsize))
    if fmt == "html":
        from reconciler.render.status_html import render_status_html

        return render_status_html(document)
    terminal = sys.stdout.isatty()
    return render.render_status_text(document, terminal=terminal, color=color,
                                     width=shutil.get_terminal_size((160, 24)).columns)


def _write_parts(split_dir: Path, document: dict) -> None:  # type: ignore[type-arg]
    from reconciler.cli.output import replace_parts
    from reconciler.render.status import render_status_markdown_parts

    replace_parts(split_dir, "status", render_status_markdown_parts(document))
