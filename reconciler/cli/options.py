"""Options shared by several commands, declared once: address globs, refresh settings, consent, the lock.

Owns: how an address or a glob is read from the command line (the configuration's name rules apply), and the
option sets commands share. Must not: import the layers below at start-up (their imports stay inside callbacks).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from reconciler.app.request import PlanScope
    from reconciler.refresh import RefreshSettings

__all__ = [
    "AUTH_TIMEOUT", "EXCLUDE_HELP", "LOCK_TIMEOUT", "REQUIRE_SCOPES", "address_options", "duration", "exact_address",
    "globs_option", "patterns", "plan_scope",
    "refresh_options", "refresh_settings", "selection_options", "stack",
]


def patterns(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """Address globs from the command line: each one of the characters addresses and globs are made of (a newline
    or a tab could forge lines of output), else a one-line usage error."""
    from reconciler.names import check_address_pattern

    return tuple(check_address_pattern(value) for value in values)


def exact_address(kind: str | None):  # type: ignore[no-untyped-def]
    """A callback for an exact ADDRESS argument (of `kind` when given): the configuration's name rules apply."""

    def check(ctx: click.Context, param: click.Parameter, value: str) -> str:
        from reconciler.names import check_address

        check_address(value, kind=kind)
        return value

    return check


def duration(ctx: click.Context, param: click.Parameter, value: str | None) -> dt.timedelta | None:
    """A callback for a DURATION option (`45s`, `30m`, `12h`, `7d`): a one-line usage error for anything else."""
    from reconciler.durations import DurationError, parse_duration
    from reconciler.errors import UsageError

    if value is None:
        return None
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise UsageError(f"{param.opts[0] if param.opts else param.name}: {exc}") from None


def stack(func, options):  # type: ignore[no-untyped-def]
    """`func` with `options` applied, the first one listed first in --help."""
    for option in reversed(options):
        func = option(func)
    return func


def globs_option(name: str, help: str):  # type: ignore[no-untyped-def]
    """A repeatable option taking address globs (`name`: --target, --exclude, ...)."""
    return click.option(name, multiple=True, metavar="ADDRESS", callback=patterns, help=help)


EXCLUDE_HELP = "Leave these addresses out (globs)."


def selection_options(func):  # type: ignore[no-untyped-def]
    """--target / --exclude for commands whose positional ADDRESS globs select too (the two are joined)."""
    return stack(func, [
        globs_option("--target", "Only these addresses (globs; repeatable; same as ADDRESS arguments)."),
        globs_option("--exclude", EXCLUDE_HELP),
    ])


def address_options(func):  # type: ignore[no-untyped-def]
    """--target / --exclude / --replace / --allow-delete, shared by plan and apply."""
    return stack(func, [
        globs_option("--target", "Only these addresses (globs; repeatable)."),
        globs_option("--exclude", EXCLUDE_HELP),
        globs_option("--replace", "Force a re-authorization (globs)."),
        globs_option("--allow-delete", "Allow deleting these protected installations."),
    ])


PARALLELISM = click.option("--parallelism", type=click.IntRange(1, 256), default=10, show_default=True,
                           help="Installations checked at once.")
WINDOW = click.option("--window", type=click.FloatRange(min=0), default=15, show_default=True,
                      help="Refresh tokens expiring within this many minutes.")
REFRESH_CATALOG = click.option("--refresh-catalog", is_flag=True,
                               help="Fetch the platform's connector list even if the copy kept for an hour is fresh.")


def refresh_options(func):  # type: ignore[no-untyped-def]
    """--parallelism / --window / --lock-timeout for commands that refresh tokens."""
    options = [
        PARALLELISM,
        WINDOW,
        click.option("--lock-timeout", type=click.FloatRange(min=0), default=0, show_default=True,
                     help="Seconds to wait for the state lock."),
    ]
    return stack(func, options)


def refresh_settings(parallelism: int, window: float) -> RefreshSettings:
    from reconciler.refresh import RefreshSettings

    return RefreshSettings(window=dt.timedelta(minutes=window), parallelism=parallelism)



def plan_scope(target: tuple[str, ...], exclude: tuple[str, ...], replace: tuple[str, ...] = (),
               allow_delete: tuple[str, ...] = ()) -> PlanScope:
    """What to plan, from --target / --exclude / --replace / --allow-delete."""
    from reconciler.addresses import Globs, Selection
    from reconciler.app.request import PlanScope

    return PlanScope(Selection.of(target, exclude), Globs.of(replace), Globs.of(allow_delete))


AUTH_TIMEOUT = click.option(
    "--auth-timeout", type=click.FloatRange(min=1), default=300, show_default=True, help="Seconds to wait for a browser."
)
REQUIRE_SCOPES = click.option("--require-scopes", is_flag=True, help="A grant narrower than requested is an error.")
LOCK_TIMEOUT = click.option(
    "--lock-timeout", type=click.FloatRange(min=0), default=0, show_default=True, help="Seconds to wait for the state lock."
)


