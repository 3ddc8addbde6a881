"""Configuration loading: YAML files -> validated, secret-resolved `DesiredState`, in one thin orchestration.

Owns: the order of a load — the documents (`documents`: root file, includes), the environment overlay
(`overlay`), schema validation (`translate`), the backend DSN and every field's references (`values`), then the
platform, service, partner, placement and installation rules (`platform`, `service`, `partners`, `placements`,
`installations`) — stopping after a stage with errors, and the
public entry points (`load_config`, `load_root`, `resolve_reference`). Every problem is reported as
file:line:column plus key path in the file that wrote the value (see `located`). Must not: write anything, touch
state, reach the network, or hold a rule itself (each lives in the module named above).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.catalog import Catalog
from reconciler.catalog.files import load_catalog
from reconciler.config.desired import DesiredState
from reconciler.config.documents import PLAIN, Document, Manifest, Parser, Reader, declared, validated_files
from reconciler.config.includes import CONFIG_FILE, FileTooLarge, include_patterns, read_config_bytes
from reconciler.config.installations import desired_installations
from reconciler.config.located import KeyPath, Report, SourceFile, display_path
from reconciler.config.overlay import (
    DEFAULT_ENVIRONMENT,
    ENVIRONMENTS_DIR,
    apply_overlay,
    environment_names,
    overlay_path,
    state_directories,
)
from reconciler.config.partners import Checks, default_partners, desired_partners, migrations
from reconciler.config.placements import check_partner_keys
from reconciler.config.platform import callback_origin, cyclr_settings, declared_accounts, is_cyclr
from reconciler.config.root import load_root
from reconciler.config.schema import (
    IncludedFile,
    PartnerSpec,
    PostgresBackendSpec,
    RootFile,
    TenantSpec,
)
from reconciler.config.service import service_callback, service_settings
from reconciler.config.values import NOTE_LIMIT, Unchecked, Values
from reconciler.errors import ConfigError, ConfigIssue, Location
from reconciler.references import reach

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_ENVIRONMENT",
    "ENVIRONMENTS_DIR",
    "LoadedConfig",
    "Unchecked",
    "display_path",
    "environment_names",
    "load_config",
    "load_root",
    "resolve_reference",
]


@dataclass
class LoadedConfig:
    """The result of loading: the desired state, non-fatal warnings, the files that were read (the environment
    overlay last), and the root file with the overlay merged in (its `backend` is the environment's)."""

    desired: DesiredState
    warnings: list[ConfigIssue]
    files: list[str]
    root: RootFile
    manifest: Manifest = field(default_factory=Manifest)
    unchecked: list[Unchecked] = field(default_factory=list)

    def unchecked_note(self) -> str | None:
        """One line naming the secret references whose values were not checked, or None when all were."""
        if not self.unchecked:
            return None
        shown = ", ".join(str(u) for u in self.unchecked[:NOTE_LIMIT])
        more = f", and {len(self.unchecked) - NOTE_LIMIT} more" if len(self.unchecked) > NOTE_LIMIT else ""
        count = len(self.unchecked)
        noun = "secret reference" if count == 1 else "secret references"
        return (
            f"note: {count} {noun} not checked (not set here): {shown}{more}; their syntax and what they may "
            "reach were checked; apply, refresh and authorize need their values"
        )


def load_config(
    config_dir: Path,
    *,
    environ: Mapping[str, str],
    today: dt.date | None = None,
    catalog: Catalog | None = None,
    environment: str | None = None,
    parser: Parser = PLAIN,
    unchecked_secrets: bool = False,
    extra: Sequence[Path] = (),
) -> LoadedConfig:
    """Load and validate the configuration in `config_dir`; raise `ConfigError` listing every problem. `extra`
    files are read as if the root file included them (after its own includes): `reconciler import` checks what it
    generated before the root file's `include:` names it.

    With `unchecked_secrets` (for commands that never use a secret's value: validate, plan), a client secret
    whose value is not available here — its variable is not set or is empty, its file does not exist — is listed
    in `LoadedConfig.unchecked` instead of being an error, and left unresolved (`client_secret` None) in the
    desired state; its syntax and what it may reach are checked as always.

    With `environment`, `environments/<environment>.yaml` is merged over the files before validation: mappings
    merge by key, lists and other values are replaced, a null removes the key. An unknown name is an error;
    `default` without such a file is the base configuration. `parser` turns each file's text into data (the speed
    machinery wraps the plain one: see `reconciler.app.source`).
    """
    config_dir, catalog = Path(config_dir), catalog or load_catalog()
    report = Report()
    manifest = Manifest(today=today.isoformat() if today else None)
    documents, overlay = _documents(Reader(report, manifest, parser), config_dir, environment, extra)
    files = validated_files(report, documents)
    report.fail_if_issues()
    root = files[0][1]
    assert isinstance(root, RootFile)
    manifest.sealed = state_directories(config_dir, root, manifest)
    within = reach(config_dir, environ, manifest.sealed)
    values = Values(report, config_dir, environ, within, unchecked_secrets=unchecked_secrets)
    if isinstance(root.backend, PostgresBackendSpec):
        values.check_dsn(files[0][0], root.backend.dsn)
    partners, tenants = declared(report, files)
    report.fail_if_issues()
    checks = Checks(report, values, catalog, today, is_cyclr(root), callback_origin(root), service_callback(root))
    desired = _desired(checks, files[0][0], root, partners, tenants, environment)
    shown = [src.display for src, _ in files] + ([overlay.display] if overlay is not None else [])
    manifest.references = values.manifest_references()
    parser.done()
    return LoadedConfig(desired, report.warnings, shown, root, manifest, values.unchecked_references())


def _documents(
    reader: Reader, config_dir: Path, environment: str | None, extra: Sequence[Path] = ()
) -> tuple[list[Document], SourceFile | None]:
    """The root file, its includes (depth first) and the environment overlay merged in, and the overlay read;
    stops with every problem of a stage (the files as read, then the merge)."""
    root_path = config_dir / CONFIG_FILE
    _require_root(config_dir, root_path)
    path = overlay_path(config_dir, environment, reader.manifest)
    reader.seen.add(root_path.resolve())
    raw = reader.read(root_path, RootFile)
    reader.report.fail_if_issues()
    assert raw is not None
    documents = [raw]
    reader.include(raw[0], include_patterns(raw[1]), (root_path.resolve(),), documents)
    for path in extra:
        if path.resolve() not in reader.seen:
            reader.seen.add(path.resolve())
            loaded = reader.read(path, IncludedFile)
            documents.extend([loaded] if loaded is not None else [])
    overlay = reader.read(path, None) if path is not None else None
    reader.report.fail_if_issues()  # the files as read: merging or validating broken ones would only add noise
    if overlay is None:
        return documents, None
    documents = apply_overlay(reader.report, documents, *overlay)
    reader.report.fail_if_issues()
    return documents, overlay[0]


def _require_root(config_dir: Path, root_path: Path) -> None:
    """Raise `ConfigError` unless `config_dir` is a directory with a root file."""
    if not config_dir.is_dir():
        what = "is a file, not a directory" if config_dir.exists() else "no such directory"
        raise ConfigError([ConfigIssue(Location(display_path(config_dir)), "", what, "pass -C DIR")])
    if not root_path.is_file():
        message = f"no {CONFIG_FILE} in {display_path(config_dir)}"
        hint = "run in the configuration directory or pass -C DIR"
        raise ConfigError([ConfigIssue(Location(display_path(root_path)), "", message, hint)])


def _desired(
    checks: Checks,
    root_src: SourceFile,
    root: RootFile,
    partners: dict[str, tuple[SourceFile, PartnerSpec]],
    tenants: dict[str, tuple[SourceFile, TenantSpec]],
    environment: str | None,
) -> DesiredState:
    """The desired state after the platform, partner and installation rules and the checks across fields."""
    platform = cyclr_settings(checks, root_src, root)
    service = service_settings(checks, root_src, root)
    accounts = declared_accounts(checks, tenants)
    desired_partners_, overridden = desired_partners(checks, partners)
    check_partner_keys(checks, partners)
    defaults = default_partners(checks.report, partners)
    moves = migrations(checks.report, partners)
    installations = desired_installations(checks, tenants, desired_partners_, partners, defaults, overridden, moves)
    checks.values.check()
    checks.report.fail_if_issues()
    return DesiredState(
        partners={p.address: p for p in desired_partners_.values()},
        installations=installations,
        environment=environment or DEFAULT_ENVIRONMENT,
        protected_tenants=frozenset(name for name, (_, tenant) in tenants.items() if tenant.protect),
        platform=platform,
        accounts=accounts,
        service=service,
    )


def resolve_reference(
    value: str, *, config_dir: Path, environ: Mapping[str, str], where: Path, key: KeyPath = ()
) -> str:
    """The value of one `${env:NAME}`/`${file:PATH}` reference (a DSN, or a secret a saved plan names), written at
    `key` in the file `where` (a problem is reported there, with its line when `key` is found in it)."""
    config_dir, report = Path(config_dir), Report()
    values = Values(report, config_dir, environ, reach(config_dir, environ), unchecked_secrets=False)
    try:
        text = read_config_bytes(where).decode("utf-8-sig") if key else ""
    except (OSError, FileTooLarge, UnicodeDecodeError):
        text = ""
    src = SourceFile(where, display_path(where), text)
    resolved = values.value(src, key, value, secret=True, dsn=key == ("backend", "dsn"))
    report.fail_if_issues()
    assert resolved is not None
    return resolved
