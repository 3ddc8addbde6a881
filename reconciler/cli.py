"""The command-line shell: parse flags, call the layers, render, map errors to exit codes.

Owns: click commands and options, where output goes (results to stdout, status and errors to stderr), exit
codes (0 ok / no changes, 1 error, 2 changes with --detailed-exitcode). Must not: hold planning, loading or
state logic. Expected errors print as one line each; anything else is reported as a bug, without its message
(which could carry a value), and with a traceback only under RECONCILER_DEBUG=1.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from reconciler.errors import ReconcilerError, UsageError, one_line

EXIT_OK, EXIT_ERROR, EXIT_CHANGES, EXIT_PENDING = 0, 1, 2, 3


@dataclass(frozen=True)
class Options:
    """Global options, fixed once parsed."""

    config_dir: Path
    color: bool | None
    environment: str | None = None
    cache: bool = True
    http_timeout: float = 30.0

    def workspace(self):  # type: ignore[no-untyped-def]
        from reconciler.workflow import Workspace

        return Workspace(self.config_dir, os.environ, self.environment, _now, cache=self.cache, http_timeout=self.http_timeout)

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
        if isinstance(ctx.obj, Options):
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


class _GlobalGroup(click.Group):
    """A subcommand group whose commands (and itself) all take the global options."""

    def command(self, *args: Any, **kwargs: Any) -> Any:
        decorator = super().command(*args, **kwargs)
        return lambda func: decorator(global_options(func))


class ReconcilerGroup(_GlobalGroup):
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
    ctx.obj = Options(
        config_dir=Path(config_dir), color=color, environment=environment or None, cache=not no_cache,
        http_timeout=http_timeout,
    )


def _patterns(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """Address globs from the command line: each one of the characters addresses and globs are made of (a newline
    or a tab could forge lines of output), else a one-line usage error."""
    from reconciler.names import check_address_pattern

    return tuple(check_address_pattern(value) for value in values)


def _address(kind: str | None):  # type: ignore[no-untyped-def]
    """A callback for an exact ADDRESS argument (of `kind` when given): the configuration's name rules apply."""

    def check(ctx: click.Context, param: click.Parameter, value: str) -> str:
        from reconciler.names import check_address

        check_address(value, kind=kind)
        return value

    return check


def _selection_options(func):  # type: ignore[no-untyped-def]
    """--target / --exclude for commands whose positional ADDRESS globs select too (the two are joined)."""
    options = [
        click.option("--target", multiple=True, metavar="ADDRESS", callback=_patterns,
                     help="Only these addresses (globs; repeatable; same as ADDRESS arguments)."),
        click.option("--exclude", multiple=True, metavar="ADDRESS", callback=_patterns,
                     help="Leave these addresses out (globs)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _address_options(func):  # type: ignore[no-untyped-def]
    """--target / --exclude / --replace / --allow-delete, shared by plan and apply."""
    options = [
        click.option("--target", multiple=True, metavar="ADDRESS", callback=_patterns,
                     help="Only these addresses (globs; repeatable)."),
        click.option("--exclude", multiple=True, metavar="ADDRESS", callback=_patterns,
                     help="Leave these addresses out (globs)."),
        click.option("--replace", multiple=True, metavar="ADDRESS", callback=_patterns,
                     help="Force a re-authorization (globs)."),
        click.option(
            "--allow-delete", multiple=True, metavar="ADDRESS", callback=_patterns,
            help="Allow deleting these protected installations.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _refresh_options(func):  # type: ignore[no-untyped-def]
    """--parallelism / --window / --lock-timeout for commands that refresh tokens."""
    options = [
        click.option("--parallelism", type=click.IntRange(1, 256), default=10, show_default=True,
                     help="Installations checked at once."),
        click.option("--window", type=click.FloatRange(min=0), default=15, show_default=True,
                     help="Refresh tokens expiring within this many minutes."),
        click.option("--lock-timeout", type=click.FloatRange(min=0), default=0, show_default=True,
                     help="Seconds to wait for the state lock."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _refresh_settings(parallelism: int, window: float):  # type: ignore[no-untyped-def]
    from reconciler.refresh import RefreshSettings

    return RefreshSettings(window=dt.timedelta(minutes=window), parallelism=parallelism)


@contextlib.contextmanager
def _progress(label: str):  # type: ignore[no-untyped-def]
    """A rich progress bar on a terminal (stderr); nothing on a pipe."""
    if not sys.stderr.isatty():
        yield lambda done, total: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _plan_options(target, exclude, replace, allow_delete):  # type: ignore[no-untyped-def]
    from reconciler.addresses import Globs, Selection
    from reconciler.workflow import Options as PlanOptions

    return PlanOptions(Selection.of(target, exclude), Globs.of(replace), Globs.of(allow_delete))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _redacted(text: str, secrets: frozenset[str] | set[str]) -> str:
    """`text`, checked by the backstop: plans are built from references and `(sensitive)` markers only, so no
    secret value is ever there by construction. Should a distinctive one (`DISTINCTIVE_SECRET` characters or more)
    turn up anyway, nothing is printed (fail closed): editing the text would corrupt a JSON document and show the
    reader which value equals the secret. Shorter values ('true', '1', an organization's name) are not searched
    for — they cannot be told apart from plan text, and replacing them would reveal them; `_warn_short_secrets`
    says so instead."""
    from reconciler.auth.errors import DISTINCTIVE_SECRET

    if any(len(secret) >= DISTINCTIVE_SECRET and secret in text for secret in secrets):
        raise ReconcilerError(
            "refusing to print the plan: it would show the value of a client secret",
            hint="no value shown in plans (names, parameters, URLs) may equal a secret: rotate the secret",
        )
    return text


def _warn_short_secrets(secrets: frozenset[str] | set[str]) -> None:
    """A secret too short to be distinctive is one the output backstop cannot look for (stderr, no value)."""
    from reconciler.auth.errors import DISTINCTIVE_SECRET

    if any(len(secret) < DISTINCTIVE_SECRET for secret in secrets):
        click.echo(
            f"warning: a client secret is shorter than {DISTINCTIVE_SECRET} characters; real client secrets are "
            "longer (check the reference)",
            err=True,
        )


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

    loaded = load_config(
        opts.config_dir,
        environ=os.environ,
        today=_now().date(),
        environment=opts.environment,
        cache=opts.workspace().parse_cache(),
        unchecked_secrets=True,
    )
    from reconciler.workflow import check_backend

    check_backend(opts.workspace(), loaded.root)
    for warning in loaded.warnings:
        click.echo(f"warning: {warning}", err=True)
    if loaded.unchecked:
        click.echo(loaded.unchecked_note(), err=True)
    desired = loaded.desired
    tenants = len({i.declared.tenant for i in desired.installations.values()})
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
@click.option(
    "--split-dir",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="With --format markdown, also write the comment in numbered parts that each fit a GitHub comment: "
    "DIR/plan-1.md, plan-2.md, ... (earlier plan-N.md files in DIR are replaced).",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Also save the plan, for `apply FILE`.")
@click.option("--refresh", "refresh", is_flag=True, help="Refresh expiring tokens and check each at the provider first.")
@_refresh_options
@_address_options
@click.pass_obj
def plan(opts: Options, fmt: str, detailed_exitcode: bool, split_dir: Path | None, out: Path | None, refresh: bool,
         parallelism: int, window: float, lock_timeout: float, target: tuple[str, ...], exclude: tuple[str, ...],
         replace: tuple[str, ...], allow_delete: tuple[str, ...]) -> int:
    """Show what apply would change. Offline and read-only, unless --refresh (which stores rotated tokens).

    \b
    Examples:
      reconciler plan
      reconciler plan --format json | jq '.summary'
      reconciler plan --format markdown --detailed-exitcode > comment.md
      reconciler plan --format markdown --split-dir comment-parts > comment.md
      reconciler plan --out plan.bin && reconciler apply plan.bin
      reconciler plan --target 'installation.acme.*'
    """
    if split_dir is not None and fmt != "markdown":
        raise UsageError("--split-dir writes Markdown parts", hint="add --format markdown")
    memo = None
    if opts.cache and not refresh and out is None and split_dir is None:
        from reconciler.memo import PlanMemo

        memo = PlanMemo(
            config_dir=opts.config_dir,
            environment=opts.environment,
            environ=os.environ,
            options=(target, exclude, replace, allow_delete),
            output_format=fmt,
            color=opts.use_color(),
        )
        hit = memo.lookup(_now())
        if hit is not None:
            output = _redacted(hit.output, hit.secret_values)
            _warn_short_secrets(hit.secret_values)
            click.echo(output, nl=False, color=opts.use_color())
            return EXIT_CHANGES if detailed_exitcode and hit.has_changes else EXIT_OK

    ahead = None
    if not refresh:  # included files are parsed on a second core while this process imports the rest
        from reconciler.config.ahead import parse_includes_ahead
        from reconciler.config.cache import parse_cache

        ahead = parse_includes_ahead(opts.config_dir, parse_cache(os.environ) if opts.cache else None, os.environ)
    try:
        return _plan(opts, memo, ahead, fmt, detailed_exitcode, split_dir, out, refresh, parallelism, window,
                     lock_timeout, _plan_options(target, exclude, replace, allow_delete))
    finally:
        if ahead is not None:
            ahead.close()


def _plan(opts: Options, memo: Any, ahead: Any, fmt: str, detailed_exitcode: bool, split_dir: Path | None,
          out: Path | None, refresh: bool, parallelism: int, window: float, lock_timeout: float, options: Any) -> int:
    from reconciler.render import render_json, render_markdown, render_text
    from reconciler.render.markdown import render_markdown_parts
    from reconciler.workflow import plan_config, save_plan

    workspace = opts.workspace()
    partner_faults: list[str] = []
    if refresh:
        from reconciler.workflow import run_refresh

        with _progress("Refreshing") as progress:
            refreshed = run_refresh(
                workspace,
                options=options,
                settings=_refresh_settings(parallelism, window),
                progress=progress,
                lock_timeout=lock_timeout,
                record=False,
            )
        assert refreshed.plan is not None
        result = refreshed.plan
        partner_faults = sorted({f.partner for f in refreshed.findings if f.outcome == "partner" and f.partner})
    else:
        result = plan_config(workspace, options, ahead=ahead)
        if result.loaded.unchecked:  # a plan compares secret references, never their values
            click.echo(result.loaded.unchecked_note(), err=True)
    doc = result.document
    if out is not None:
        save_plan(workspace, result, out)
        click.echo(f"Saved the plan to {out}; apply exactly it with `reconciler apply {out}`.", err=True)
    if fmt == "json":
        output = render_json(doc)
    elif fmt == "markdown":
        output = render_markdown(doc)
    else:
        output = render_text(doc, color=opts.use_color())

    secrets = result.loaded.desired.secret_values()
    output = _redacted(output, secrets)
    _warn_short_secrets(secrets)
    if split_dir is not None:
        parts = [_redacted(part, secrets) for part in render_markdown_parts(doc)]  # all checked before any is written
        split_dir.mkdir(parents=True, exist_ok=True)
        for stale in split_dir.glob("plan-*.md"):
            if stale.stem.removeprefix("plan-").isdigit():
                stale.unlink()
        for number, part in enumerate(parts, start=1):
            _write_part(split_dir / f"plan-{number}.md", part)
            click.echo(str(split_dir / f"plan-{number}.md"), err=True)
    if memo is not None:
        digests = result.backend.read_digests()
        if digests is not None:
            memo.store(
                manifest=result.loaded.manifest,
                state=digests,
                valid_until=result.valid_until,
                output=output,
                has_changes=doc.has_changes,
            )
    click.echo(output, nl=False, color=opts.use_color())
    if partner_faults:
        raise ReconcilerError(
            f"the provider rejected the client credentials of partner(s) {', '.join(partner_faults)}: their "
            "installations were not re-planned",
            hint="rotate the partner's client secret; users need not sign in again",
        )
    return EXIT_CHANGES if detailed_exitcode and doc.has_changes else EXIT_OK


def _write_part(path: Path, text: str) -> None:
    """One part of a split plan, never written through a link at its name (a checkout may plant one)."""
    from reconciler.statefiles import open_regular

    try:
        with os.fdopen(open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), "w", encoding="utf-8") as out:
            out.write(text)
    except OSError as exc:
        raise ReconcilerError(f"{path}: cannot write the plan part: {exc.strerror or exc}") from None


@cli.command()
@_refresh_options
@click.option("--target", multiple=True, metavar="ADDRESS", callback=_patterns,
              help="Only these addresses (globs; repeatable).")
@click.option("--exclude", multiple=True, metavar="ADDRESS", callback=_patterns, help="Leave these addresses out (globs).")
@click.pass_obj
def refresh(opts: Options, parallelism: int, window: float, lock_timeout: float, target: tuple[str, ...],
            exclude: tuple[str, ...]) -> int:
    """Refresh tokens that expire soon, check every installation at the provider, and record what was found.

    Only state changes: rotated tokens are stored, and installations whose token was revoked or whose refresh
    token was rejected are marked, so that `plan` (even offline) asks to re-authorize them. A rejected partner
    secret is an error on the partner, never a re-authorization of its installations.

    \b
    Examples:
      reconciler refresh
      reconciler refresh --parallelism 32 --target 'installation.acme.*'
    """
    from reconciler.addresses import Selection
    from reconciler.workflow import Options as PlanOptions
    from reconciler.workflow import run_refresh

    with _progress("Refreshing") as progress:
        outcome = run_refresh(
            opts.workspace(),
            options=PlanOptions(Selection.of(target, exclude)),
            settings=_refresh_settings(parallelism, window),
            progress=progress,
            lock_timeout=lock_timeout,
            record=True,
        )
    counts: dict[str, int] = {}
    for finding in outcome.findings:
        counts[finding.outcome] = counts.get(finding.outcome, 0) + 1
        if finding.outcome not in ("ok", "refreshed"):
            click.echo(f"{finding.address}: {one_line(finding.drift.words if finding.drift else finding.message)}", err=True)
    labels = {"ok": "fine", "refreshed": "refreshed", "revoked": "revoked", "rejected": "refresh rejected",
              "partner": "partner fault", "transient": "could not be checked", "skipped": "skipped"}
    summary = ", ".join(f"{counts[k]} {label}" for k, label in labels.items() if counts.get(k))
    click.echo(f"Refresh complete: {summary or 'nothing to refresh'}.")
    partners = sorted({f.partner for f in outcome.findings if f.outcome == "partner" and f.partner})
    if partners:
        raise ReconcilerError(
            f"the provider rejected the client credentials of partner(s) {', '.join(partners)}",
            hint="rotate the partner's client secret; users need not sign in again",
        )
    if counts.get("transient"):
        raise ReconcilerError(
            f"{_count(counts['transient'], 'installation')} could not be refreshed or checked (see above); nothing "
            "was changed for them",
            hint="run `reconciler refresh` again later",
        )
    return EXIT_OK


@cli.command()
@click.option("--include-file", is_flag=True,
              help="The schema of an included file (partners and tenants; no `version`) instead of reconciler.yaml.")
def schema(include_file: bool) -> int:
    """Print the JSON Schema of reconciler.yaml (or, with --include-file, of an included file), for editors and
    CI linters. Scopes are the catalog's; secrets must be ${env:NAME} or ${file:PATH} references.

    \b
    Examples:
      reconciler schema > reconciler.schema.json
      reconciler schema --include-file > tenant.schema.json
      # then, first line of reconciler.yaml (or of tenants/acme.yaml):
      # yaml-language-server: $schema=./reconciler.schema.json
    """
    from reconciler.config.schema import IncludedFile, RootFile

    model = IncludedFile if include_file else RootFile
    document = {"$schema": "https://json-schema.org/draft/2020-12/schema", **model.model_json_schema()}
    click.echo(json.dumps(_with_catalog_and_references(document), indent=2))
    return EXIT_OK


SECRET_FIELDS = (("PartnerSpec", "client_secret"), ("CredentialsSpec", "client_secret"), ("PostgresBackendSpec", "dsn"))
REFERENCE_PATTERN = r"^\$\{(env|file):[^}]+\}$"


def _with_catalog_and_references(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with what the model alone does not say: scopes come from the catalog (an enum of every
    connector's scopes) and secret fields take a reference only (the loader refuses literals)."""
    from reconciler.catalog import load_catalog

    catalog = load_catalog()
    scopes = sorted({scope for connector in catalog.connectors.values() for scope in connector.scopes})
    defs = document.get("$defs", {})
    for model, field in (("InstallationSpec", "scopes"), ("PartnerSpec", "scopes")):
        for schema in _string_schemas(defs.get(model, {}).get("properties", {}).get(field, {})):
            schema["enum"] = scopes
    for model, field in SECRET_FIELDS:
        for schema in _string_schemas(defs.get(model, {}).get("properties", {}).get(field, {})):
            schema["pattern"] = REFERENCE_PATTERN
    return document


def _string_schemas(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The string schemas inside `schema`: itself, its array items, and its anyOf branches (for `X | None`)."""
    if schema.get("type") == "string":
        return [schema]
    if schema.get("type") == "array":
        return _string_schemas(schema.get("items", {}))
    return [found for branch in schema.get("anyOf", []) for found in _string_schemas(branch)]


class _EchoHooks:
    """Executor progress on stderr; authorization links (results a user acts on) on stdout."""

    def step(self, address: str, message: str) -> None:
        click.echo(f"{address}: {one_line(message)}", err=True)

    def link(self, address: str, url: str) -> None:
        click.echo(f"{address}: authorization pending — open this link to sign in:\n  {url}")

    def warning(self, address: str, message: str) -> None:
        click.echo(f"warning: {address}: {one_line(message)}", err=True)


def _announce(label: str, url: str) -> None:
    click.echo(f"\nAuthorize {label} — open this URL in a browser:\n  {url}\n", err=True)


def _consent(mode: str, timeout: float, *, chosen: bool = True):  # type: ignore[no-untyped-def]
    """The consent step of `mode`; `chosen` False (the default mode) lets browser mode fall back to paste for a
    redirect URI that is not a loopback address."""
    from reconciler.auth.consent import BrowserConsent, PasteConsent

    if mode == "defer":
        return None

    def read_answer(prompt: str) -> str:
        return click.prompt(prompt, err=True, default="", show_default=False)

    paste = PasteConsent(_announce, read_answer)
    if mode == "paste":
        return paste
    fallback = None if chosen else paste
    return BrowserConsent(_announce, lambda m: click.echo(f"note: {m}", err=True), fallback, timeout=timeout)


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


AUTH_MODE = click.option(
    "--auth-mode",
    type=click.Choice(["browser", "paste", "defer"]),
    default=None,
    help="How users authorize: browser (loopback redirect), paste (the redirected URL), defer (record links; "
    "exit 3). Default: browser on a terminal, else defer.",
)
AUTH_TIMEOUT = click.option(
    "--auth-timeout", type=click.FloatRange(min=1), default=300, show_default=True, help="Seconds to wait for a browser."
)
REQUIRE_SCOPES = click.option("--require-scopes", is_flag=True, help="A grant narrower than requested is an error.")
LOCK_TIMEOUT = click.option(
    "--lock-timeout", type=click.FloatRange(min=0), default=0, show_default=True, help="Seconds to wait for the state lock."
)


@cli.command()
@click.argument("plan_file", required=False, type=click.Path(dir_okay=False, path_type=Path), metavar="[PLANFILE]")
@click.option("--auto-approve", is_flag=True, help="Apply without asking for confirmation.")
@AUTH_MODE
@AUTH_TIMEOUT
@click.option("--leave-missed-pending", is_flag=True,
              help="A browser sign-in that times out or is abandoned is left pending (exit 3) and the others go on; "
              "on a terminal you are asked instead.")
@REQUIRE_SCOPES
@LOCK_TIMEOUT
@_address_options
@click.pass_obj
def apply(opts: Options, plan_file: Path | None, auto_approve: bool, auth_mode: str | None, auth_timeout: float,
          leave_missed_pending: bool, require_scopes: bool, lock_timeout: float, target: tuple[str, ...],
          exclude: tuple[str, ...], replace: tuple[str, ...], allow_delete: tuple[str, ...]) -> int:
    """Plan, confirm, then make it so: run the due authorizations and record tokens (sealed) and granted scopes.

    State is written after every completed step; an error stops the run and keeps everything done before it.
    Exit 0 when done, 3 when authorizations are still pending, 1 on error.

    \b
    Examples:
      reconciler apply
      reconciler apply --auto-approve --auth-mode defer     # in CI: post the links, exit 3
      reconciler apply plan.bin --auto-approve --auth-mode defer   # exactly a saved, reviewed plan
      BROWSER="reconciler sandbox approve %s" reconciler apply --auto-approve   # sandbox demo
    """
    from reconciler.render import render_text
    from reconciler.workflow import run_apply

    mode = auth_mode or ("browser" if _interactive() else "defer")
    if plan_file is not None and (target or exclude or replace or allow_delete):
        raise UsageError("a saved plan is applied as it was made", hint="give --target & co. to `plan --out`")
    if not auto_approve and not sys.stdin.isatty():
        raise UsageError("apply needs confirmation, and there is no terminal to ask", hint="pass --auto-approve")

    def confirm(document) -> bool:  # type: ignore[no-untyped-def]
        click.echo(render_text(document, color=opts.use_color()), nl=False, color=opts.use_color())
        if not document.has_changes:
            return False
        if auto_approve:
            return True
        return click.confirm("\nApply these changes?", default=False, err=True)

    def on_missed(address: str, error: ReconcilerError) -> bool:
        """Leave a missed sign-in pending: with --leave-missed-pending, or when the user says so on a terminal."""
        click.echo(f"{address}: {one_line(error.message)}", err=True)
        if leave_missed_pending:
            return True
        if not sys.stdin.isatty():
            return False
        return click.confirm("Continue with the others and leave it pending?", default=False, err=True)

    outcome = run_apply(
        opts.workspace(),
        options=_plan_options(target, exclude, replace, allow_delete),
        plan_file=plan_file,
        consent=_consent(mode, auth_timeout, chosen=auth_mode is not None),
        hooks=_EchoHooks(),
        confirm=confirm,
        on_missed=on_missed,
        require_scopes=require_scopes,
        lock_timeout=lock_timeout,
        on_key_created=lambda path: click.echo(
            f"note: created the state key {path} (mode 0600, git-ignored); back it up, or set RECONCILER_STATE_KEY",
            err=True,
        ),
    )
    return _finish(outcome)


@cli.command()
@click.argument("addresses", nargs=-1, callback=_patterns)
@click.option("--reissue", is_flag=True, help="Replace the pending authorization with a new link.")
@click.option(
    "--auth-mode",
    type=click.Choice(["browser", "paste"]),
    default=None,
    help="How users authorize: browser (loopback redirect) or paste (the redirected URL). Default: browser on a "
    "terminal, else paste.",
)
@AUTH_TIMEOUT
@REQUIRE_SCOPES
@LOCK_TIMEOUT
@_selection_options
@click.pass_obj
def authorize(opts: Options, addresses: tuple[str, ...], reissue: bool, auth_mode: str | None, auth_timeout: float,
              require_scopes: bool, lock_timeout: float, target: tuple[str, ...], exclude: tuple[str, ...]) -> int:
    """Complete pending (deferred) authorizations — all, or the given addresses (globs allowed).

    \b
    Examples:
      reconciler authorize
      reconciler authorize 'installation.acme.*' --auth-mode paste
      reconciler authorize --target 'installation.acme.*' --exclude installation.acme.legacy
      reconciler authorize installation.acme.ado-main --reissue
    """
    from reconciler.workflow import run_authorize

    mode = auth_mode or ("browser" if _interactive() else "paste")
    outcome = run_authorize(
        opts.workspace(),
        [*addresses, *target],
        excludes=exclude,
        consent=None if reissue else _consent(mode, auth_timeout, chosen=auth_mode is not None),
        hooks=_EchoHooks(),
        reissue=reissue,
        require_scopes=require_scopes,
        lock_timeout=lock_timeout,
    )
    if outcome.result is None:
        click.echo("No pending authorizations.")
        return EXIT_OK
    return _finish(outcome, "Authorization")


def _finish(outcome, what: str = "Apply") -> int:  # type: ignore[no-untyped-def]
    """The closing summary of `what` ("Apply", "Authorization"): counts, then the exit code (3: still pending)."""
    result = outcome.result
    if result is None:
        return EXIT_OK
    pending = [address for address, _ in result.pending]
    parts = [f"{len(result.completed)} completed"]
    if pending:
        parts.append(f"{len(pending)} pending authorization{'s' if len(pending) != 1 else ''}")
    if result.warnings:
        parts.append(f"{len(result.warnings)} warning{'s' if len(result.warnings) != 1 else ''}")
    if result.error is not None:
        click.echo(f"{what} stopped: {', '.join(parts)}; everything completed is saved in state.", err=True)
        raise result.error
    click.echo(f"{what} complete: {', '.join(parts)}.")
    if pending:
        click.echo("Complete pending ones with `reconciler authorize` (or open the links above).")
        return EXIT_PENDING
    return EXIT_OK


@cli.group(cls=_GlobalGroup)
@global_options
def state() -> None:
    """Inspect recorded state (never token material)."""


@state.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of {address, kind, status, ...} (never tokens).")
@click.pass_obj
def state_list(opts: Options, as_json: bool) -> int:
    """List the addresses recorded in state, with their status, its reason and when it was established.

    \b
    Examples:
      reconciler state list
      reconciler state list --json | jq -r '.[] | select(.status == "needs-reauthorization") | .address'
    """
    from reconciler.workflow import read_statuses

    doc, statuses = read_statuses(opts.workspace())
    addresses = list(doc.resources) if doc else []
    if as_json:
        entries = [_list_entry(address, doc.resources[address], statuses.get(address)) for address in addresses]  # type: ignore[union-attr]
        click.echo(json.dumps(entries, indent=2))
        return EXIT_OK
    for address in addresses:
        status = statuses.get(address)
        click.echo(f"{address}\t{_status_line(status)}" if status else f"{address}\trecorded")
    return EXIT_OK


def _list_entry(address: str, record: Any, status: Any) -> dict[str, Any]:
    """One `state list --json` entry: names, the derived status and times — records hold no token material."""
    from reconciler.state.model import InstallationRecord

    entry: dict[str, Any] = {"address": address, "kind": record.kind, "status": status.word if status else "recorded"}
    if isinstance(record, InstallationRecord):
        entry |= {"pending": record.pending is not None, "protected": record.protected, "drift": record.drift.words if record.drift else None}
        times = record.model_dump(mode="json", include={"authorized_at"})
        if status is not None:
            entry["reason"] = status.reason
            times |= {"checked_at": _iso(status.checked_at), "expires_at": _iso(status.expires_at)}
        entry |= {key: value for key, value in times.items() if value is not None}
    return entry


def _iso(moment: dt.datetime | None) -> str | None:
    """A time as the JSON state shows it (UTC written `Z`)."""
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def _status_line(status) -> str:  # type: ignore[no-untyped-def]
    """`word<TAB>reason (checked <when>)`: a status says why, and when it was last established."""
    checked = status.checked_at.isoformat(timespec="seconds") if status.checked_at else "never"
    return f"{status.word}\t{one_line(status.reason)} (checked {checked})"


@state.command("show")
@click.argument("address", callback=_address(None))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text for a terminal, json for automation.")
@click.option("--json", "as_json", is_flag=True, hidden=True, help="Same as --format json.")
@click.pass_obj
def state_show(opts: Options, address: str, fmt: str, as_json: bool) -> int:
    """Show one recorded address: status, requested and granted scopes, client id, times.

    \b
    Examples:
      reconciler state show installation.acme.ado-main
      reconciler state show installation.acme.ado-main --format json | jq .granted_scopes
    """
    from reconciler.workflow import read_statuses

    doc, statuses = read_statuses(opts.workspace())
    record = doc.resources.get(address) if doc else None
    if record is None:
        raise UsageError(f"{address} is not in state", hint="`reconciler state list` shows what is")
    data = record.model_dump(mode="json", exclude_none=True)
    if address in statuses:  # the derived status replaces the recorded one; the expiry is the stored token's
        status = statuses[address]
        data["status"], data["reason"] = status.word, status.reason
        data["checked_at"] = _iso(status.checked_at)
        data["expires_at"] = _iso(status.expires_at)
        data = {k: v for k, v in data.items() if v is not None}
    if as_json or fmt == "json":
        click.echo(json.dumps({"address": address, **data}, indent=2))
        return EXIT_OK
    click.echo(f"# {address}")
    width = max(len(k) for k in data)
    for key, value in data.items():
        shown = ", ".join(value) if isinstance(value, list) else json.dumps(value) if isinstance(value, dict) else value
        click.echo(f"{key.ljust(width)}  {one_line(str(shown))}")  # recorded values forge no lines
    return EXIT_OK


@state.command("rm")
@click.argument("addresses", nargs=-1, callback=_patterns)
@LOCK_TIMEOUT
@_selection_options
@click.option("--allow-delete", multiple=True, metavar="ADDRESS", callback=_patterns,
              help="Allow forgetting these protected installations (globs).")
@click.pass_obj
def state_rm(opts: Options, addresses: tuple[str, ...], lock_timeout: float, target: tuple[str, ...],
             exclude: tuple[str, ...], allow_delete: tuple[str, ...]) -> int:
    """Forget addresses (globs) without revoking their tokens at the provider. A protected installation needs
    --allow-delete too.

    \b
    Examples:
      reconciler state rm installation.acme.old-board
      reconciler state rm --target 'installation.acme.*' --exclude installation.acme.ado-main
      reconciler state rm installation.acme.ado-main --allow-delete installation.acme.ado-main
    """
    from reconciler.workflow import state_rm as remove

    if not addresses and not target:
        raise UsageError("state rm needs the addresses to forget", hint="give ADDRESS arguments or --target ADDRESS")
    removed = remove(opts.workspace(), [*addresses, *target], lock_timeout=lock_timeout, excludes=exclude,
                     allow_delete=allow_delete)
    for address in removed:
        click.echo(f"Removed {address}")
    return EXIT_OK


@state.command("mv")
@click.argument("old", callback=_address("installation"))
@click.argument("new", callback=_address("installation"))
@LOCK_TIMEOUT
@click.pass_obj
def state_mv(opts: Options, old: str, new: str, lock_timeout: float) -> int:
    """Rename an installation in state without re-authorizing it (its tokens move with it).

    \b
    Examples:
      reconciler state mv installation.acme.ado installation.acme.ado-main
    """
    from reconciler.workflow import state_mv as move

    move(opts.workspace(), old, new, lock_timeout=lock_timeout)
    click.echo(f"Moved {old} to {new}")
    return EXIT_OK


@state.command("pull")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@LOCK_TIMEOUT
@click.pass_obj
def state_pull(opts: Options, directory: Path, lock_timeout: float) -> int:
    """Copy the configured backend's state, with its sealed credentials, into a local directory.

    \b
    Examples:
      reconciler state pull backup/
    """
    from reconciler.workflow import state_pull as pull

    copy = pull(opts.workspace(), directory, lock_timeout=lock_timeout)
    doc = copy.doc
    click.echo(f"Pulled lineage {doc.lineage} serial {doc.serial} ({len(doc.resources)} resources) into {directory}")
    for note in copy.notes():
        click.echo(note)
    return EXIT_OK


@state.command("push")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@LOCK_TIMEOUT
@click.pass_obj
def state_push(opts: Options, directory: Path, lock_timeout: float) -> int:
    """Copy local state (from `state pull`, or a local backend's directory) into the configured backend.

    Lineage and serial are kept; a backend holding another lineage, a newer serial, or the same serial with other
    contents is never overwritten. A credential record is copied only when it is a later generation than the
    backend's: newer ones there (tokens rotated after the copy was taken) are kept, and the output says which.

    \b
    Examples:
      reconciler state push state/     # move local state to the PostgreSQL backend named in reconciler.yaml
    """
    from reconciler.workflow import state_push as push

    copy = push(opts.workspace(), directory, lock_timeout=lock_timeout)
    doc = copy.doc
    click.echo(f"Pushed lineage {doc.lineage} serial {doc.serial} ({len(doc.resources)} resources)")
    for note in copy.notes():
        click.echo(note)
    return EXIT_OK


@state.command("rekey")
@click.option("--new-key-env", metavar="VAR",
              help="Name of the variable holding the new key: base64 of 32 bytes (openssl rand -base64 32).")
@click.option("--new-passphrase-env", metavar="VAR",
              help="Name of the variable holding a passphrase to derive the new key from (scrypt).")
@LOCK_TIMEOUT
@click.pass_obj
def state_rekey(opts: Options, new_key_env: str | None, new_passphrase_env: str | None, lock_timeout: float) -> int:
    """Re-seal every stored credential under a new state key (key rotation).

    The current key is found as for every command (RECONCILER_STATE_KEY, RECONCILER_STATE_PASSPHRASE, or the
    key file state/<env>.key). The new one comes from the variable that --new-key-env or --new-passphrase-env
    names (a value never goes on the command line); without either, local state keyed by its key file gets a
    fresh key file. Under the state lock, record by record: interrupted, run the same command again to finish
    (other commands refuse the state until then). Afterwards only the new key opens the credentials; a retired
    key file is kept as <env>.key.old until you remove it.

    \b
    Examples:
      reconciler state rekey                                   # local state: a fresh state/default.key
      export RECONCILER_NEW_STATE_KEY="$(openssl rand -base64 32)"
      reconciler state rekey --new-key-env RECONCILER_NEW_STATE_KEY
    """
    from reconciler.rekey import NewKey, rekey_state

    rotation = rekey_state(opts.workspace(), NewKey(new_key_env, new_passphrase_env), lock_timeout=lock_timeout)
    for line in _rotation_report(rotation, NewKey(new_key_env, new_passphrase_env)):
        click.echo(line)
    return EXIT_OK


def _rotation_report(rotation: Any, new: Any) -> list[str]:
    """What `state rekey` did and what to do next: key ids, variable names and paths, never a key."""
    from reconciler.config.loader import display_path

    if not rotation.changed:
        records = _count(len(rotation.already), "record")
        lines = [f"Nothing to re-key: every credential is sealed with key id {rotation.new_kid} ({records})."]
        if rotation.waiting_for is not None:
            lines.append(f"{display_path(rotation.waiting_for)} holds the key an earlier rotation retired: delete it "
                         "once no copy of the state (a pulled copy, a backup) needs it, to rotate again.")
        return lines
    resumed = f" ({len(rotation.already)} already were: an interrupted rotation finished)" if rotation.already else ""
    lines = [f"Re-sealed {_count(len(rotation.resealed), 'credential record')} under key id {rotation.new_kid}{resumed}."]
    if rotation.dropped:
        more = " ..." if len(rotation.dropped) > 5 else ""
        lines.append(f"Dropped {_count(len(rotation.dropped), 'sealed blob')} that no command could open (left by an "
                     f"interrupted step): {', '.join(rotation.dropped[:5])}{more}")
    lines.append(f"Rotation complete: only the new key (id {rotation.new_kid}) opens the credentials now.")
    if rotation.key_file is not None:
        lines.append(f"{display_path(rotation.key_file)} now holds the new key: back it up.")
    elif new.key_env:
        lines.append(f"From now on set RECONCILER_STATE_KEY to the value of {new.key_env}.")
    elif new.passphrase_env:
        lines.append(f"From now on set RECONCILER_STATE_PASSPHRASE to the value of {new.passphrase_env}"
                     " (and unset RECONCILER_STATE_KEY).")
    if rotation.retired_key_file is not None:
        lines.append(f"The old key is kept in {display_path(rotation.retired_key_file)}: delete it once no copy of "
                     "the state (a pulled copy, a backup) needs it.")
    elif rotation.old_kid is not None and rotation.old_source is not None:
        lines.append(f"The old key (id {rotation.old_kid}, from {rotation.old_source}) is no longer needed here: "
                     "retire it from your secret store once no copy of the state needs it.")
    lines.append("Plans saved before the rotation are signed with the old key: make them again.")
    return lines


@cli.command("force-unlock")
@click.argument("lock_id")
@click.option("--force", is_flag=True, help="End a holder whose session is still alive without asking.")
@click.pass_obj
def force_unlock(opts: Options, lock_id: str, force: bool) -> int:
    """Release the state lock LOCK_ID whose holder is stuck (the id is in the "locked" message).

    On PostgreSQL a holder whose session is still alive is ended only after a confirmation (or with --force);
    without a terminal and without --force that is refused. A live local holder is always refused.

    \b
    Examples:
      reconciler force-unlock 6f1c2a9e-...
      reconciler force-unlock 6f1c2a9e-... --force     # in a script: end a live holder's session
    """
    from reconciler.workflow import force_unlock as release

    def confirm_live(holder: str) -> bool:
        if force:
            return True
        if not sys.stdin.isatty():
            return False  # the backend refuses, with the hint to pass --force
        click.echo(f"The state is {one_line(holder)}, and its session is still alive: it may be mid-write.", err=True)
        return click.confirm("Do you really want to force-unlock?", default=False, err=True)

    click.echo(f"Released the lock {release(opts.workspace(), lock_id, confirm_live=confirm_live)}")
    return EXIT_OK


@cli.command()
@click.argument("plan_file", type=click.Path(dir_okay=False, exists=True, path_type=Path), metavar="PLANFILE")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True)
@click.pass_obj
def show(opts: Options, plan_file: Path, fmt: str) -> int:
    """Render a saved plan (after checking its signature) in any format.

    \b
    Examples:
      reconciler show plan.bin --format markdown
    """
    from reconciler.render import render_json, render_markdown, render_text
    from reconciler.workflow import show_plan

    doc = show_plan(opts.workspace(), plan_file)
    renderers = {"json": render_json, "markdown": render_markdown}
    output = renderers[fmt](doc) if fmt in renderers else render_text(doc, color=opts.use_color())
    click.echo(output, nl=False, color=opts.use_color())
    return EXIT_OK


@cli.group()
def sandbox() -> None:
    """The built-in sandbox provider: Azure DevOps OAuth and Entra ID on 127.0.0.1, for demos and tests."""


@sandbox.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (keep it loopback).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port (0: any free port).")
@click.option("--seed", type=click.Path(exists=True, dir_okay=False), help="YAML of apps and organizations to register.")
def sandbox_serve(host: str, port: int, seed: str | None) -> int:
    """Serve the sandbox provider until interrupted (see docs/sandbox.md).

    \b
    Examples:
      reconciler sandbox serve --seed examples/quickstart/sandbox.yaml
    """
    from reconciler.sandbox import SandboxServer, load_seed
    from reconciler.sandbox.server import SeedError

    if host not in {"127.0.0.1", "localhost", "::1"}:
        raise UsageError(f"the sandbox serves loopback only, not {host}", hint="it hands out test tokens to anyone")
    try:
        server = SandboxServer(host, port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    if seed:
        try:
            load_seed(server.provider, Path(seed))
        except SeedError as exc:
            server.httpd.server_close()
            raise UsageError(str(exc)) from None
    click.echo(f"Sandbox provider listening on {server.url} (Ctrl-C to stop)", err=True)
    try:
        server.serve_forever()
    finally:
        server.httpd.server_close()
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


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def main() -> None:
    cli(prog_name="reconciler")
