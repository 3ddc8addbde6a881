"""What the commands write besides their result: progress bars, the secret backstop, plan parts on disk.

Owns: the redaction backstop every printed plan passes, the warning about short secrets, the progress bar (a
terminal only), and writing a split plan's parts. Must not: hold planning, loading or state logic.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import click

from reconciler.errors import ReconcilerError

__all__ = ["progress_bar", "redacted", "replace_parts", "warn_short_secrets", "write_part"]


@contextlib.contextmanager
def progress_bar(label: str | None):  # type: ignore[no-untyped-def]
    """A rich progress bar on a terminal (stderr); nothing on a pipe, or without a `label`."""
    if label is None or not sys.stderr.isatty():
        yield lambda done, total: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def redacted(text: str, secrets: frozenset[str] | set[str]) -> str:
    """`text`, checked by the backstop: plans are built from references and `(sensitive)` markers only, so no
    secret value is ever there by construction. Should a distinctive one (`DISTINCTIVE_SECRET` characters or more)
    turn up anyway, nothing is printed (fail closed): editing the text would corrupt a JSON document and show the
    reader which value equals the secret. Shorter values ('true', '1', an organization's name) are not searched
    for — they cannot be told apart from plan text, and replacing them would reveal them; `warn_short_secrets`
    says so instead."""
    from reconciler.auth.errors import DISTINCTIVE_SECRET

    if any(len(secret) >= DISTINCTIVE_SECRET and secret in text for secret in secrets):
        raise ReconcilerError(
            "refusing to print the plan: it would show the value of a client secret",
            hint="no value shown in plans (names, parameters, URLs) may equal a secret: rotate the secret",
        )
    return text


def warn_short_secrets(secrets: frozenset[str] | set[str]) -> None:
    """A secret too short to be distinctive is one the output backstop cannot look for (stderr, no value)."""
    from reconciler.auth.errors import DISTINCTIVE_SECRET

    if any(len(secret) < DISTINCTIVE_SECRET for secret in secrets):
        click.echo(
            f"warning: a client secret is shorter than {DISTINCTIVE_SECRET} characters; real client secrets are "
            "longer (check the reference)",
            err=True,
        )



def replace_parts(directory: Path, stem: str, parts: list[str]) -> None:
    """Write `parts` as DIR/<stem>-1.md, -2.md, ... (earlier <stem>-N.md files replaced), naming each on stderr."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(f"{stem}-*.md"):
        if stale.stem.removeprefix(f"{stem}-").isdigit():
            stale.unlink()
    for number, part in enumerate(parts, start=1):
        write_part(directory / f"{stem}-{number}.md", part)
        click.echo(str(directory / f"{stem}-{number}.md"), err=True)


def write_part(path: Path, text: str) -> None:
    """One part of a split plan, never written through a link at its name (a checkout may plant one)."""
    from reconciler.statefiles import open_regular

    try:
        with os.fdopen(open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), "w", encoding="utf-8") as out:
            out.write(text)
    except OSError as exc:
        raise ReconcilerError(f"{path}: cannot write the plan part: {exc.strerror or exc}") from None


