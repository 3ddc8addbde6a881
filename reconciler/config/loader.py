"""Configuration loading: YAML files -> validated, secret-resolved `DesiredState`.

Owns: reading `reconciler.yaml` and its `include:` files, merging an environment overlay
(`environments/<name>.yaml`) over them, schema validation, the checks that need the catalog or several files at
once, `${env:}`/`${file:}` resolution, and locating every problem as file:line:column plus key path — in the file
that wrote the value, overlay or base. Files are parsed on the fast path; positions are found only for the files
that have a problem. Must not: write anything, touch state, or reach the network.
"""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import json
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError

from reconciler.catalog import Catalog, Connector, load_catalog
from reconciler.config.ahead import MISSING, ParsedAhead
from reconciler.config.cache import ParseCache
from reconciler.config.desired import (
    DesiredInstallation,
    DesiredPartner,
    DesiredState,
    same_origin,
    url_origin,
)
from reconciler.config.includes import (
    CONFIG_FILE,
    MAX_FILE_BYTES,
    FileTooLarge,
    TooManyMatches,
    glob_matches,
    include_patterns,
    read_config_bytes,
)
from reconciler.config.schema import (
    IncludedFile,
    InstallationSpec,
    LocalBackendSpec,
    PartnerSpec,
    PostgresBackendSpec,
    RootFile,
    TenantSpec,
)
from reconciler.errors import ConfigError, ConfigIssue, Location
from reconciler.names import NAME_PATTERN
from reconciler.references import REFERENCE, Problem, path_text_problem, reach, refusal, resolve
from reconciler.yamlio import YamlSyntaxError, compose, load_yaml_text, locate

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_ENVIRONMENT",
    "ENVIRONMENTS_DIR",
    "LoadedConfig",
    "Unchecked",
    "environment_names",
    "load_config",
    "load_root",
    "resolve_reference",
]

ENVIRONMENTS_DIR = "environments"
DEFAULT_ENVIRONMENT = "default"
ENVIRONMENT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_SECTIONS = ("partners", "tenants")
NO_REFERENCE = "references (${env:...}, ${file:...}) are resolved only in client_id and client_secret"
_TENANT_ID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|organizations|common|consumers"
    r"|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+"
)
# A client id is shown in plans and authorization links: Microsoft's app ids are GUIDs; another peer (a sandbox,
# a proxy) gets a conservative token shape — printable ASCII without spaces, quotes or backslashes, bounded.
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TOKEN_ID = re.compile(r"[!#-&(-\[\]-_a-~]{1,128}")
SECRET_EXPIRY_WARNING = dt.timedelta(days=14)
MAX_INCLUDE_DEPTH = 32  # files in one include chain (the root file first); deeper is refused, never a crash
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]"}

KeyPath = tuple[str | int, ...]


@dataclass
class SourceFile:
    """One configuration file as read: its path, how it is shown to the user, its text."""

    path: Path
    display: str
    text: str
    _tree: object = field(default=None, repr=False)
    _composed: bool = field(default=False, repr=False)
    # Set on a file an environment overlay was merged into: the overlay, and the key paths whose value it wrote
    # (or removed). A problem at or below one of those paths is located in the overlay.
    overlay: SourceFile | None = field(default=None, repr=False)
    overlaid: frozenset[KeyPath] = field(default=frozenset(), repr=False)

    def origin(self, path: KeyPath) -> SourceFile:
        """The file that wrote the value at `path`: the overlay when it set (or removed) it or a parent of it."""
        if self.overlay is not None and any(path[:n] in self.overlaid for n in range(1, len(path) + 1)):
            return self.overlay
        return self

    def missing_at(self, path: KeyPath, key: str) -> KeyPath:
        """Where to report that `key` is missing under `path`: on the overlay's `key: null` if it removed it."""
        return (*path, key) if self.origin((*path, key)) is not self.origin(path) else path

    def tree(self):  # type: ignore[no-untyped-def]
        """The file's node tree with positions, composed once, on the first problem reported in it."""
        if not self._composed:
            self._tree, self._composed = compose(self.text), True
        return self._tree


@dataclass
class Manifest:
    """Everything a load depended on, as plain data, so that a later run can tell nothing changed (see
    `reconciler.memo`): the files read, each include pattern with its matches, files whose absence mattered, and
    every reference with its value where plans show it (a secret's value is never kept)."""

    files: list[tuple[str, str]] = field(default_factory=list)  # absolute path, SHA-256 of its bytes
    globs: list[tuple[str, str, list[str]]] = field(default_factory=list)  # directory, pattern, sorted matches
    absent: list[str] = field(default_factory=list)
    references: list[tuple[str, bool, str | None]] = field(default_factory=list)  # reference, secret?, shown value
    sealed: list[str] = field(default_factory=list)  # state directories references may not read (see references)
    today: str | None = None  # the date warnings were computed for (a client secret's expiry)


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
        shown = ", ".join(str(u) for u in self.unchecked[:_NOTE_LIMIT])
        more = f", and {len(self.unchecked) - _NOTE_LIMIT} more" if len(self.unchecked) > _NOTE_LIMIT else ""
        count = len(self.unchecked)
        noun = "secret reference" if count == 1 else "secret references"
        return (
            f"note: {count} {noun} not checked (not set here): {shown}{more}; their syntax and what they may "
            "reach were checked; apply, refresh and authorize need their values"
        )


@dataclass(frozen=True)
class Unchecked:
    """A secret reference whose value is not available here (variable not set or empty, file missing), where it
    is first used, and how many fields use it."""

    reference: str
    location: Location
    uses: int = 1

    def __str__(self) -> str:
        return f"{self.reference} at {self.location}" + (f" (used {self.uses} times)" if self.uses > 1 else "")


_NOTE_LIMIT = 5  # unchecked references named in the note; the rest are counted


def load_config(
    config_dir: Path,
    *,
    environ: Mapping[str, str],
    today: dt.date | None = None,
    catalog: Catalog | None = None,
    environment: str | None = None,
    cache: ParseCache | None = None,
    ahead: ParsedAhead | None = None,
    unchecked_secrets: bool = False,
) -> LoadedConfig:
    """Load and validate the configuration in `config_dir`; raise `ConfigError` listing every problem.

    With `unchecked_secrets` (for commands that never use a secret's value: validate, plan), a client secret
    whose value is not available here — its variable is not set or is empty, its file does not exist — is listed
    in `LoadedConfig.unchecked` instead of being an error, and left unresolved (`client_secret` None) in the
    desired state; its syntax and what it may reach are checked as always.

    With `environment`, `environments/<environment>.yaml` is merged over the files before validation: mappings
    merge by key, lists and other values are replaced, a null removes the key. An unknown name is an error;
    `default` without such a file is the base configuration. With `cache`, unchanged files are not parsed again;
    with `ahead` (see `parse_includes_ahead`), files a worker has parsed already are not parsed here.
    """
    loader = _Loader(Path(config_dir), environ, catalog or load_catalog(), today, environment, cache, ahead)
    loader.unchecked_secrets = unchecked_secrets
    return loader.run()


def load_root(config_dir: Path, *, environment: str | None = None) -> RootFile:
    """Only the root file (with the environment overlay merged in), validated: for commands that need the backend
    settings, not the secrets. Overlay entries for partners and tenants of included files are not applied."""
    loader = _Loader(Path(config_dir), {}, load_catalog(), None, environment)
    root_path = loader.config_dir / CONFIG_FILE
    if not root_path.is_file():
        raise ConfigError([ConfigIssue(Location(display_path(root_path)), "", f"no {CONFIG_FILE} here")])
    overlay_path = loader._overlay_path()
    raw = loader._read(root_path, RootFile)
    overlay = loader._read(overlay_path, None) if overlay_path is not None else None
    loader._fail_if_issues()
    assert raw is not None
    documents = [raw]
    if overlay is not None:
        documents = loader._apply_overlay(documents, *overlay, complete=False)
    root = loader._validate(*documents[0], RootFile)
    loader._fail_if_issues()
    assert isinstance(root, RootFile)
    return root


def resolve_reference(
    value: str, *, config_dir: Path, environ: Mapping[str, str], where: Path, key: KeyPath = ()
) -> str:
    """The value of one `${env:NAME}`/`${file:PATH}` reference (a DSN, or a secret a saved plan names), written at
    `key` in the file `where` (a problem is reported there, with its line when `key` is found in it)."""
    loader = _Loader(Path(config_dir), environ, load_catalog(), None)
    try:
        text = read_config_bytes(where).decode("utf-8-sig") if key else ""
    except (OSError, FileTooLarge, UnicodeDecodeError):
        text = ""
    src = SourceFile(where, display_path(where), text)
    resolved = loader._value(src, key, value, secret=True, dsn=key == ("backend", "dsn"))
    loader._fail_if_issues()
    assert resolved is not None
    return resolved


def environment_names(config_dir: Path) -> list[str]:
    """The environments a configuration defines: the names of `environments/*.yaml`, sorted."""
    directory = Path(config_dir) / ENVIRONMENTS_DIR
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.yaml") if p.is_file() and ENVIRONMENT_NAME.fullmatch(p.stem))


def display_path(path: Path) -> str:
    """A path as the user should see it: relative to the working directory when below it."""
    absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.relative_to(_cwd()))
    except ValueError:
        return str(path)


def _abbreviated(chain: Sequence[str], head: int = 3, tail: int = 2) -> str:
    """An include chain as `a -> b -> c -> ... -> y -> z` (the middle left out when it is long)."""
    shown = list(chain) if len(chain) <= head + tail + 1 else [*chain[:head], "...", *chain[-tail:]]
    return " -> ".join(shown)


def _cwd() -> Path:
    return Path(os.path.abspath(os.getcwd()))


def key_path_text(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def did_you_mean(unknown: str, known: Sequence[str]) -> str | None:
    import difflib

    matches = difflib.get_close_matches(unknown, list(known), n=1, cutoff=0.6)
    return f"did you mean '{matches[0]}'?" if matches else None


class _Loader:
    def __init__(
        self,
        config_dir: Path,
        environ: Mapping[str, str],
        catalog: Catalog,
        today: dt.date | None,
        environment: str | None = None,
        cache: ParseCache | None = None,
        ahead: ParsedAhead | None = None,
    ):
        self.cache = cache
        self.ahead = ahead
        self.config_dir = config_dir
        self.environ = environ
        self.catalog = catalog
        self.today = today
        self.environment = environment
        self.issues: list[ConfigIssue] = []
        self.warnings: list[ConfigIssue] = []
        self.seen: set[Path] = set()
        self.files: list[tuple[SourceFile, IncludedFile]] = []
        self._resolved: dict[str, str | None] = {}
        self._secret_references: set[str] = set()
        self._clean_scopes: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}
        self.manifest = Manifest(today=today.isoformat() if today else None)
        self._secret_values: set[str] = set()
        self._plain_values: list[tuple[SourceFile, KeyPath, str]] = []
        self.reach = reach(config_dir, environ)  # widened to the state directories once the root file is read
        self._dsn_reference: str | None = None
        self._overridden: dict[str, bool] = {}  # partner -> its endpoints are not the connector's defaults
        self._client_ids: list[tuple[SourceFile, KeyPath, str, str, str, bool]] = []  # checked once all are read
        self.unchecked_secrets = False  # see `load_config`
        self._unchecked: dict[str, tuple[SourceFile, KeyPath, int]] = {}  # secret reference -> first use, uses

    # -- reporting ---------------------------------------------------------------------------------------------

    def _issue(
        self,
        src: SourceFile,
        path: KeyPath,
        message: str,
        hint: str | None = None,
        *,
        at_key: bool = False,
        warning: bool = False,
    ) -> None:
        issue = ConfigIssue(self._location(src, path, at_key=at_key), key_path_text(path), message, hint)
        (self.warnings if warning else self.issues).append(issue)

    def _location(self, src: SourceFile, path: KeyPath, *, at_key: bool = False) -> Location:
        """Where `path` is written: in the file that wrote it (base or overlay), with its line when found."""
        src = src.origin(path)
        position = locate(src.tree(), path, at_key=at_key) if src.text else None
        line, column = position or (None, None)
        return Location(src.display, line, column)

    def _fail_if_issues(self) -> None:
        if self.issues:
            raise ConfigError(self.issues)

    # -- reading -----------------------------------------------------------------------------------------------

    def run(self) -> LoadedConfig:
        root_path = self.config_dir / CONFIG_FILE
        if not self.config_dir.is_dir():
            what = "is a file, not a directory" if self.config_dir.exists() else "no such directory"
            raise ConfigError([ConfigIssue(Location(display_path(self.config_dir)), "", what, "pass -C DIR")])
        if not root_path.is_file():
            raise ConfigError(
                [
                    ConfigIssue(
                        Location(display_path(root_path)),
                        "",
                        f"no {CONFIG_FILE} in {display_path(self.config_dir)}",
                        "run in the configuration directory or pass -C DIR",
                    )
                ]
            )
        overlay_path = self._overlay_path()
        self.seen.add(root_path.resolve())
        raw = self._read(root_path, RootFile)
        self._fail_if_issues()
        assert raw is not None
        documents = [raw]
        self._include(raw[0], include_patterns(raw[1]), (root_path.resolve(),), documents)
        overlay = self._read(overlay_path, None) if overlay_path is not None else None
        self._fail_if_issues()  # the files as read: merging or validating broken ones would only add noise
        if overlay is not None:
            documents = self._apply_overlay(documents, *overlay)
            self._fail_if_issues()
        for index, (src, data) in enumerate(documents):
            doc = self._validate(src, data, RootFile if index == 0 else IncludedFile)
            if doc is not None:
                self.files.append((src, doc))
        self._fail_if_issues()
        root = self.files[0][1]
        assert isinstance(root, RootFile)
        self.manifest.sealed = self._state_directories(root)
        self.reach = reach(self.config_dir, self.environ, self.manifest.sealed)
        if isinstance(root.backend, PostgresBackendSpec):
            self._check_dsn(self.files[0][0], root.backend.dsn)
        partners, tenants = self._merge()
        self._fail_if_issues()
        desired_partners = self._partners(partners, root)
        installations = self._installations(tenants, desired_partners, partners)
        self._check_client_ids(self._check_secrets_stay_secret())
        self._fail_if_issues()
        desired = DesiredState(
            partners={p.address: p for p in desired_partners.values()},
            installations=installations,
            environment=self.environment or DEFAULT_ENVIRONMENT,
            protected_tenants=frozenset(name for name, (_, tenant) in tenants.items() if tenant.protect),
        )
        files = [s.display for s, _ in self.files] + ([overlay[0].display] if overlay is not None else [])
        self.manifest.references = [
            (reference, reference in self._secret_references, None if reference in self._secret_references else value)
            for reference, value in self._resolved.items()
        ]
        if self.cache is not None:
            self.cache.commit()
        return LoadedConfig(desired, self.warnings, files, root, self.manifest, self._unchecked_references())

    def _read(self, path: Path, model: type[IncludedFile] | None) -> tuple[SourceFile, dict[str, Any]] | None:
        """A file's text parsed into plain data (a mapping); `model` None is an overlay, which may be empty."""
        display = display_path(path)
        empty = SourceFile(path, display, "")
        try:
            raw = read_config_bytes(path)
        except FileTooLarge as exc:
            self._issue(empty, (), f"file is {exc.size} bytes; the limit is {MAX_FILE_BYTES}")
            return None
        except OSError as exc:
            self._issue(empty, (), f"cannot read file: {exc.strerror or exc}")
            return None
        self.manifest.files.append((os.path.abspath(path), hashlib.sha256(raw).hexdigest()))
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
            self.issues.append(ConfigIssue(Location(display, line, column), "", "file is not valid UTF-8"))
            return None
        src = SourceFile(path, display, text)
        try:
            ahead: Any = self.ahead.get(path, raw) if self.ahead is not None else MISSING  # data or MISSING
            if ahead is not MISSING:
                data, fresh = ahead
                if fresh and self.cache is not None:  # parsed there: cached here, once the whole load succeeds
                    self.cache.remember(raw, data)
            else:
                data = self.cache.load(raw, lambda: load_yaml_text(text)) if self.cache else load_yaml_text(text)
        except YamlSyntaxError as exc:
            self.issues.append(ConfigIssue(Location(display, exc.line, exc.column), "", exc.message, exc.hint))
            return None
        if data is None and model is None:
            return src, {}  # an environment that differs in nothing (but its state)
        if data is None:
            expected = "version: 1 and partners/tenants" if model is RootFile else "partners: or tenants:"
            self._issue(src, (), f"file is empty; expected {expected}")
            return None
        if not isinstance(data, dict):
            self.issues.append(
                ConfigIssue(Location(display, 1, 1), "", f"expected a mapping at the top level, got {_kind(data)}")
            )
            return None
        return src, data

    def _validate(self, src: SourceFile, data: dict[str, Any], model: type[IncludedFile]) -> IncludedFile | None:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                self._validation_issue(src, model, error)
            return None

    def _validation_issue(self, src: SourceFile, model: type[BaseModel], error: Any) -> None:
        loc: KeyPath = tuple(error["loc"])
        if loc[:1] == ("backend",) and loc[1:2] in (("local",), ("postgres",)):
            loc = loc[:1] + loc[2:]  # the tag pydantic adds for the backend type is not a key in the file
        at_key = False
        kind = error["type"]
        if loc and loc[-1] == "[key]":
            loc, at_key = loc[:-1], True
        if at_key:
            name = loc[-1] if loc else "?"
            message = f"invalid name '{name}': use letters, digits, '-' and '_' (at most 63, not starting with '-')"
            self._issue(src, loc, message, at_key=True)
        elif kind == "extra_forbidden":
            allowed = _fields_at(model, loc[:-1])
            hint = did_you_mean(str(loc[-1]), allowed) if allowed else None
            if hint is None and allowed:
                hint = "expected one of: " + ", ".join(allowed)
            self._issue(src, loc, f"unknown key '{loc[-1]}'", hint, at_key=True)
        elif kind == "missing":
            self._issue(src, src.missing_at(loc[:-1], str(loc[-1])), f"missing required key '{loc[-1]}'")
        elif kind == "value_error":
            self._issue(src, loc, str(error.get("ctx", {}).get("error", error["msg"])))
        elif kind == "too_short":
            self._issue(src, loc, "must list at least 1 item")
        elif kind == "string_pattern_mismatch" and loc[-1:] == ("service_domain",):
            self._issue(src, loc, "expected a host name such as app-h.cyclr.com (no https://, no path)")
        elif kind == "string_pattern_mismatch" and NAME_PATTERN in str(error.get("ctx", {}).get("pattern", "")):
            self._issue(src, loc, "invalid name: use letters, digits, '-' and '_'")
        else:
            message = error["msg"].replace("valid tuple", "list").replace("valid dictionary", "mapping")
            message = re.sub(r" or instance of \w+", "", message)
            message = message[0].lower() + message[1:]
            hint = None
            if kind.endswith("_type"):
                value = error.get("input")
                message += f", got {_kind(value)}"
                if kind == "string_type" and isinstance(value, (int, float, bool)):
                    hint = "quote the value to make it a string"
            self._issue(src, loc, message, hint)

    def _include(
        self,
        src: SourceFile,
        patterns: Sequence[tuple[int, str]],
        stack: tuple[Path, ...],
        documents: list[tuple[SourceFile, dict[str, Any]]],
    ) -> None:
        for index, pattern in patterns:
            if len(stack) > MAX_INCLUDE_DEPTH:
                chain = _abbreviated([display_path(p) for p in stack])
                message = f"includes nested more than {MAX_INCLUDE_DEPTH} files deep: {chain}"
                self._issue(src, ("include", index), message, "include the files from fewer levels")
                return
            problem = path_text_problem(pattern)
            if problem is not None:
                self._issue(src, ("include", index), f"include pattern {problem}", None)
                continue
            try:
                matches = glob_matches(src.path.parent, pattern)
            except TooManyMatches as exc:
                message = f"include pattern '{pattern}' matches more than {exc.limit:,} files"
                self._issue(src, ("include", index), message, "narrow the pattern (a directory symlink is not followed)")
                continue
            self.manifest.globs.append((os.path.abspath(src.path.parent), pattern, [os.path.abspath(m) for m in matches]))
            wildcard = glob.has_magic(pattern)
            if not matches:
                self._issue(
                    src,
                    ("include", index),
                    f"include pattern '{pattern}' matches no file",
                    "fix or remove the pattern (a renamed file must never plan a mass delete)",
                )
                continue
            for match in matches:
                resolved = match.resolve()
                if wildcard and (resolved in stack or resolved in self.seen):
                    continue  # a glob that also matches the including file (or one loaded already)
                if resolved in stack:
                    chain = " -> ".join(display_path(p) for p in (*stack, resolved))
                    self._issue(src, ("include", index), f"include cycle: {chain}")
                    continue
                if resolved in self.seen:
                    continue
                self.seen.add(resolved)
                loaded = self._read(match, IncludedFile)
                if loaded is not None:
                    documents.append(loaded)
                    self._include(loaded[0], include_patterns(loaded[1]), (*stack, resolved), documents)

    # -- environments ------------------------------------------------------------------------------------------

    def _overlay_path(self) -> Path | None:
        """The overlay file of the environment asked for (None: the base configuration alone)."""
        name = self.environment
        if name is None:
            return None
        directory = self.config_dir / ENVIRONMENTS_DIR
        where = Location(display_path(directory))
        if not ENVIRONMENT_NAME.fullmatch(name):
            message = f"invalid environment name {json.dumps(name)}"
            hint = "use lowercase letters, digits, '-' and '_' (at most 63, starting with a letter or digit)"
            raise ConfigError([ConfigIssue(where, "", message, hint)])
        path = directory / f"{name}.yaml"
        if path.is_file():
            return path
        if name == DEFAULT_ENVIRONMENT:
            self.manifest.absent.append(os.path.abspath(path))
            return None
        known = environment_names(self.config_dir)
        if (directory / f"{name}.yml").is_file():
            hint = f"rename {ENVIRONMENTS_DIR}/{name}.yml to {name}.yaml"
        elif known:
            suggestion = did_you_mean(name, known)
            hint = (f"{suggestion} " if suggestion else "") + "environments defined: " + ", ".join(known)
        else:
            hint = f"no environment is defined; add {ENVIRONMENTS_DIR}/{name}.yaml to define one"
        message = f"unknown environment '{name}': there is no {ENVIRONMENTS_DIR}/{name}.yaml"
        raise ConfigError([ConfigIssue(where, "", message, hint)])

    def _apply_overlay(
        self,
        documents: list[tuple[SourceFile, dict[str, Any]]],
        overlay: SourceFile,
        data: dict[str, Any],
        *,
        complete: bool = True,
    ) -> list[tuple[SourceFile, dict[str, Any]]]:
        """The documents with the overlay merged in: each partner and tenant into the file that declares it, new
        ones and everything else into the root file. `complete` False: `documents` is only the root file, and
        entries it does not declare are left out."""
        parts: list[dict[str, Any]] = [{} for _ in documents]
        for key, value in data.items():
            if key == "include":
                hint = f"list the file in the include: of {CONFIG_FILE}, or move its content into the overlay"
                self._issue(overlay, (key,), "an environment overlay cannot include files", hint, at_key=True)
            elif key in _SECTIONS and value is None:  # `tenants: null`: none at all, wherever declared
                holders = [part for part, (_, doc) in zip(parts, documents, strict=True) if key in doc] or parts[:1]
                for part in holders:
                    part[key] = None
            elif key in _SECTIONS and isinstance(value, dict):
                for name, entry in value.items():
                    holder = next(
                        (i for i, (_, doc) in enumerate(documents) if isinstance(doc.get(key), dict) and name in doc[key]),
                        0 if complete else None,
                    )
                    if holder is not None:
                        parts[holder].setdefault(key, {})[name] = entry
            else:
                parts[0][key] = value
        merged = []
        for (src, doc), part in zip(documents, parts, strict=True):
            written: set[KeyPath] = set()
            missing: list[KeyPath] = []
            merged.append((src, _overlaid(doc, part, (), written, missing)))
            src.overlay, src.overlaid = overlay, frozenset(written)
            for path in missing if complete else ():
                self._issue(
                    overlay,
                    path,
                    f"null removes {key_path_text(path)}, which the base configuration does not set",
                    "check the name; the line has no effect",
                    at_key=True,
                    warning=True,
                )
        return merged

    def _merge(
        self,
    ) -> tuple[dict[str, tuple[SourceFile, PartnerSpec]], dict[str, tuple[SourceFile, TenantSpec]]]:
        partners: dict[str, tuple[SourceFile, PartnerSpec]] = {}
        tenants: dict[str, tuple[SourceFile, TenantSpec]] = {}
        for src, doc in self.files:
            for section, target, items in (("partners", partners, doc.partners), ("tenants", tenants, doc.tenants)):
                for name, spec in items.items():
                    if name in target:
                        first = target[name][0].display
                        noun = section[:-1]
                        self._issue(src, (section, name), f"{noun} '{name}' is already declared in {first}", at_key=True)
                    else:
                        target[name] = (src, spec)  # type: ignore[assignment]
        return partners, tenants

    # -- secrets -----------------------------------------------------------------------------------------------

    def _state_directories(self, root: RootFile) -> list[str]:
        """The local state directories of this configuration, relative to it: this environment's and those the
        other environments' overlays name (read here, so that no reference of any environment reads them)."""
        found = [root.backend.path] if isinstance(root.backend, LocalBackendSpec) else []
        for name in environment_names(self.config_dir):
            path = self.config_dir / ENVIRONMENTS_DIR / f"{name}.yaml"
            try:
                raw = read_config_bytes(path)
                data = load_yaml_text(raw.decode("utf-8-sig"))
            except (OSError, FileTooLarge, UnicodeDecodeError, YamlSyntaxError):
                continue  # that environment's own load reports it
            self.manifest.files.append((os.path.abspath(path), hashlib.sha256(raw).hexdigest()))
            backend = data.get("backend") if isinstance(data, dict) else None
            if isinstance(backend, dict) and isinstance(backend.get("path"), str) and backend["path"]:
                found.append(backend["path"])
        return sorted(set(found))

    def _check_dsn(self, src: SourceFile, dsn: str) -> None:
        """A DSN is a reference (a literal is refused) that reaches nothing a reference may not; no other field
        may read it (a client secret reading it would send the database password to a provider)."""
        match = REFERENCE.match(dsn)
        if match is None:
            self._value(src, ("backend", "dsn"), dsn, secret=True)  # refused: a literal
            return
        problem = refusal(*match.groups(), config_dir=self.config_dir, within=self.reach, dsn=True)
        if problem is not None:
            self._issue(src, ("backend", "dsn"), problem.message, problem.hint)
        self._dsn_reference = dsn

    def _value(self, src: SourceFile, path: KeyPath, value: str, *, secret: bool, dsn: bool = False) -> str | None:
        """A literal or `${env:}`/`${file:}` value, resolved. Secrets must be references; no reference reaches what
        `reconciler.references` seals, and none but `backend.dsn` reads the DSN's reference."""
        match = REFERENCE.match(value)
        if match is None:
            if secret:
                env_name = re.sub(r"[^A-Z0-9]+", "_", key_path_text(path[-3:]).upper()).strip("_")
                self._issue(
                    src,
                    path,
                    "a literal secret is refused: these files live in git",
                    f"use ${{env:{env_name}}} or ${{file:secrets/{path[-1] if path else 'secret'}}} instead",
                )
                return None
            if "${" in value:
                self._issue(src, path, "malformed reference", "write ${env:NAME} or ${file:PATH}")
                return None
            return value
        if not dsn and value == self._dsn_reference:
            self._issue(src, path, f"{value} is the backend's DSN; it would be sent or shown", "use a reference of its own")
            return None
        if value in self._resolved:
            resolved = self._resolved[value]
            if value in self._unchecked and secret:
                first_src, first_path, uses = self._unchecked[value]
                self._unchecked[value] = (first_src, first_path, uses + 1)
            elif resolved is None:
                self._issue(src, path, f"cannot resolve {value}")
        else:
            kind, argument = match.groups()
            outcome = resolve(kind, argument, config_dir=self.config_dir, environ=self.environ, within=self.reach, dsn=dsn)
            if isinstance(outcome, Problem):
                if outcome.unavailable and secret and self.unchecked_secrets and not dsn:
                    self._unchecked[value] = (src, path, 1)
                elif outcome.unavailable and path[-1:] == ("client_id",):  # needed: plans and links show it
                    hint = "; ".join(filter(None, [outcome.hint, "a client id is no secret: it may be written in the file"]))
                    self._issue(src, path, outcome.message, hint)
                else:
                    self._issue(src, path, outcome.message, outcome.hint)
                resolved = None
            else:
                resolved = outcome
            self._resolved[value] = resolved
        if secret:
            self._secret_references.add(value)
        if resolved is not None:
            if secret:
                self._secret_values.add(resolved)
            else:
                self._plain_values.append((src, path, resolved))
        return resolved

    def _unchecked_references(self) -> list[Unchecked]:
        """The secret references not checked, in order of first use; those the note names are located to the
        line (finding a line re-reads the file with positions: thousands would cost a reviewer's plan seconds)."""
        out = []
        for index, (reference, (src, path, uses)) in enumerate(self._unchecked.items()):
            where = self._location(src, path) if index < _NOTE_LIMIT else Location(src.origin(path).display)
            out.append(Unchecked(reference, where, uses))
        return out

    def _check_client_ids(self, reported: set[KeyPath]) -> None:
        """Each client id has the shape of one for its auth (a GUID at Microsoft's endpoints, a token-like id at
        overridden ones); else an error that names the key and the reference, never the value. A path `reported`
        already (e.g. it reads the secret) gets no second error."""
        for src, path, written, value, auth, overridden in self._client_ids:
            if path not in reported and not (_TOKEN_ID if overridden else _GUID).fullmatch(value):
                self._bad_client_id(src, path, written, auth, overridden)

    def _bad_client_id(self, src: SourceFile, path: KeyPath, written: str, auth: str, overridden: bool) -> None:
        origin = f" ({written} resolves to something else)" if REFERENCE.match(written) else ""
        if overridden:
            expected = "up to 128 printable characters without spaces, quotes or backslashes"
        else:
            expected = f"a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx), the app id of {auth}"
        self._issue(src, path, f"{path[-1]} is not a client id: expected {expected}{origin}", "check the app registration")

    def _check_secrets_stay_secret(self) -> set[KeyPath]:
        """A value that is a secret somewhere must not also fill a field that plans show (returns where it does)."""
        reported: set[KeyPath] = set()
        for src, path, value in self._plain_values:
            if value in self._secret_values:
                reported.add(path)
                self._issue(
                    src,
                    path,
                    f"{path[-1]} resolves to the same value as a client_secret; it would be shown in plans",
                    "point it at the client id, not the secret",
                )
        return reported

    # -- partners ----------------------------------------------------------------------------------------------

    def _partners(
        self, partners: dict[str, tuple[SourceFile, PartnerSpec]], root: RootFile
    ) -> dict[str, DesiredPartner]:
        out: dict[str, DesiredPartner] = {}
        for name, (src, spec) in partners.items():
            partner = self._partner(src, name, spec, root)
            if partner is not None:
                out[name] = partner
        return out

    def _partner(self, src: SourceFile, name: str, spec: PartnerSpec, root: RootFile) -> DesiredPartner | None:
        path: KeyPath = ("partners", name)
        connector_name = spec.connector or name
        connector = self.catalog.get(connector_name)
        if connector is None:
            where = (*path, "connector") if spec.connector else path
            hint = did_you_mean(connector_name, list(self.catalog.connectors)) or (
                "known connectors: " + ", ".join(sorted(self.catalog.connectors))
            )
            message = f"unknown connector '{connector_name}'"
            if not spec.connector:
                message += " (the partner key names the connector unless `connector:` is set)"
            self._issue(src, where, message, hint, at_key=not spec.connector)
            return None
        flavour = connector.auth.get(spec.auth)
        if flavour is None:
            known = ", ".join(sorted(connector.auth))
            self._issue(src, (*path, "auth"), f"unknown auth '{spec.auth}' for {connector.name}; expected one of: {known}")
            return None
        ok = True
        if "tenant_id" in flavour.requires and not spec.tenant_id:
            message = f"auth {spec.auth} needs tenant_id (the Entra tenant GUID, or 'organizations')"
            self._issue(src, src.missing_at(path, "tenant_id"), message)
            ok = False
        if spec.tenant_id and "tenant_id" not in flavour.requires:
            self._issue(src, (*path, "tenant_id"), f"tenant_id does not apply to auth {spec.auth}")
            ok = False
        elif spec.tenant_id and not _TENANT_ID.fullmatch(spec.tenant_id):
            self._issue(
                src,
                (*path, "tenant_id"),
                "invalid tenant_id" + (f": {NO_REFERENCE}" if "${" in spec.tenant_id else ""),
                "a tenant GUID, a domain such as contoso.onmicrosoft.com, or organizations, common, consumers",
            )
            ok = False
        if (spec.client_id is None) != (spec.client_secret is None):
            missing = "client_secret" if spec.client_secret is None else "client_id"
            self._issue(
                src,
                src.missing_at(path, missing),
                f"client_id and client_secret go together: {missing} is missing",
                "set both, or omit both so that each installation brings credentials",
            )
            ok = False
        client_id = self._value(src, (*path, "client_id"), spec.client_id, secret=False) if spec.client_id else None
        secret = self._value(src, (*path, "client_secret"), spec.client_secret, secret=True) if spec.client_secret else None
        endpoints = self._endpoints(src, path, spec, flavour.authorize_url, flavour.token_url, flavour.api_url)
        self._overridden[name] = endpoints is not None and endpoints[3]
        if client_id is not None and spec.client_id is not None:
            self._client_ids.append((src, (*path, "client_id"), spec.client_id, client_id, spec.auth, self._overridden[name]))
        redirect = self._redirect(src, path, spec, root, flavour.redirect_allows_loopback, endpoints is not None and endpoints[3])
        if spec.scopes is not None:
            for index, scope in enumerate(spec.scopes):
                if scope not in connector.scopes:
                    self._unknown_scope(src, (*path, "scopes", index), scope, connector)
                    ok = False
        if spec.client_secret_expires and self.today:
            left = spec.client_secret_expires - self.today
            if left < dt.timedelta(0):
                message = f"client secret expired on {spec.client_secret_expires}"
                self._issue(src, (*path, "client_secret_expires"), message, "rotate it", warning=True)
            elif left <= SECRET_EXPIRY_WARNING:
                message = f"client secret expires in {left.days} days ({spec.client_secret_expires})"
                self._issue(src, (*path, "client_secret_expires"), message, "rotate it", warning=True)
        if not ok or endpoints is None or redirect is None:
            return None
        unchecked = spec.client_secret in self._unchecked  # not available here, and not needed: no value
        if spec.client_id is not None and (client_id is None or (secret is None and not unchecked)):
            return None
        authorize_url, token_url, api_url, _, revoke_url = endpoints
        return DesiredPartner(
            name=name,
            connector=connector.name,
            auth=spec.auth,
            tenant_id=spec.tenant_id,
            client_id=client_id,
            client_secret_ref=spec.client_secret,
            redirect_uri=redirect,
            authorize_url=authorize_url,
            token_url=token_url,
            api_url=api_url,
            scopes=tuple(sorted(set(spec.scopes))) if spec.scopes is not None else None,
            client_secret=SecretStr(secret) if secret is not None else None,
            revoke_url=revoke_url,
        )

    def _endpoints(
        self, src: SourceFile, path: KeyPath, spec: PartnerSpec, authorize: str, token: str, api: str
    ) -> tuple[str, str, str, bool, str | None] | None:
        """The effective endpoints, whether any default the flows use was overridden, and the revocation endpoint
        (None: none declared). A revocation endpoint must share the token endpoint's origin: a token and the client
        secret are only ever sent to the origin that issued the token."""
        tenant = spec.tenant_id or ""
        defaults = {
            "authorize_url": authorize.replace("{tenant_id}", tenant),
            "token_url": token.replace("{tenant_id}", tenant),
            "api_url": api.replace("{tenant_id}", tenant),
        }
        overrides = spec.endpoints.model_dump(exclude_none=True) if spec.endpoints else {}
        ok = True
        for key, url in overrides.items():
            problem = NO_REFERENCE if "${" in url else _url_problem(url, allow_http_loopback=True)
            if problem:
                self._issue(src, (*path, "endpoints", key), problem)
                ok = False
        if not ok:
            return None
        revoke_url = overrides.pop("revoke_url", None)
        merged = {**defaults, **overrides}
        if revoke_url is not None and not same_origin(revoke_url, merged["token_url"]):
            token_origin = url_origin(merged["token_url"])
            self._issue(
                src,
                (*path, "endpoints", "revoke_url"),
                f"revoke_url is on {url_origin(revoke_url)}, not on the token endpoint's origin {token_origin}",
                "a token is only ever sent to the origin that issued it: put the revocation endpoint beside token_url",
            )
            return None
        return merged["authorize_url"], merged["token_url"], merged["api_url"].rstrip("/"), bool(overrides), revoke_url

    def _redirect(
        self, src: SourceFile, path: KeyPath, spec: PartnerSpec, root: RootFile, loopback_ok: bool, overridden: bool
    ) -> str | None:
        if spec.redirect_uri is None:
            if root.platform is None:
                self._issue(
                    src,
                    path,
                    "no redirect_uri, and no platform.service_domain to derive it from",
                    "set platform.service_domain (callback https://<service_domain>/connector/callback) or redirect_uri",
                )
                return None
            return f"https://{root.platform.service_domain}/connector/callback"
        uri = spec.redirect_uri
        allow_http = loopback_ok or overridden
        problem = NO_REFERENCE if "${" in uri else _url_problem(uri, allow_http_loopback=allow_http)
        if problem:
            hint = None
            if not allow_http and uri.startswith("http://"):
                hint = "the provider matches an HTTPS callback exactly; http://127.0.0.1 works only with endpoints overridden"
            self._issue(src, (*path, "redirect_uri"), problem, hint)
            return None
        return uri

    def _unknown_scope(self, src: SourceFile, path: KeyPath, scope: str, connector: Connector) -> None:
        suggestion = connector.suggest_scope(scope)
        hint = f"did you mean '{suggestion}'?" if suggestion else "run `reconciler schema` or see the connector catalog"
        self._issue(src, path, f"unknown scope '{scope}' for {connector.name}", hint)

    # -- installations -----------------------------------------------------------------------------------------

    def _installations(
        self,
        tenants: dict[str, tuple[SourceFile, TenantSpec]],
        desired_partners: dict[str, DesiredPartner],
        declared_partners: Mapping[str, tuple[SourceFile, PartnerSpec]],
    ) -> dict[str, DesiredInstallation]:
        out: dict[str, DesiredInstallation] = {}
        defaults = self._default_partners(declared_partners)
        for tenant_name, (src, tenant) in tenants.items():
            for name, spec in tenant.installations.items():
                path: KeyPath = ("tenants", tenant_name, "installations", name)
                partner_name = self._partner_of(src, path, spec, defaults, declared_partners)
                if partner_name is None or partner_name not in desired_partners:
                    continue  # the reason was reported (here or on the partner)
                partner = desired_partners[partner_name]
                installation = self._installation(src, path, tenant_name, name, spec, partner, tenant.protect)
                if installation is not None:
                    out[installation.address] = installation
        return out

    def _default_partners(self, declared: Mapping[str, tuple[SourceFile, PartnerSpec]]) -> dict[str, str | None]:
        """Per connector, the partner of installations that name none: the one that says `default: true`, else
        the one declared first (`declared` is in declaration order: the root file's partners, then the overlay's
        new ones, then each included file's in include order). Adding a partner therefore never moves an existing
        installation. Two defaults for one connector are an error (None: no default to use)."""
        by_connector: dict[str, list[str]] = {}
        for name, (_, spec) in declared.items():
            by_connector.setdefault(spec.connector or name, []).append(name)
        out: dict[str, str | None] = {}
        for connector, names in by_connector.items():
            marked = [name for name in names if declared[name][1].default]
            if len(marked) > 1:
                src = declared[marked[1]][0]
                message = f"partners '{marked[0]}' and '{marked[1]}' both say default: true for connector '{connector}'"
                self._issue(src, ("partners", marked[1], "default"), message, "keep default: true on one of them")
                out[connector] = None
            else:
                out[connector] = marked[0] if marked else names[0]
        return out

    def _partner_of(
        self,
        src: SourceFile,
        path: KeyPath,
        spec: InstallationSpec,
        defaults: Mapping[str, str | None],
        declared: Mapping[str, object],
    ) -> str | None:
        if spec.partner is not None:
            if spec.partner not in declared:
                hint = did_you_mean(spec.partner, list(declared))
                self._issue(src, (*path, "partner"), f"unknown partner '{spec.partner}'", hint)
                return None
            return spec.partner
        if spec.connector is None:
            self._issue(src, src.missing_at(path, "connector"), "missing required key 'connector' (or name a `partner:`)")
            return None
        if spec.connector in defaults:
            return defaults[spec.connector]  # None: two defaults, reported on the partners
        if self.catalog.get(spec.connector) is None:
            hint = did_you_mean(spec.connector, list(self.catalog.connectors))
            self._issue(src, (*path, "connector"), f"unknown connector '{spec.connector}'", hint)
        else:
            self._issue(
                src,
                (*path, "connector"),
                f"connector '{spec.connector}' has no partner entry",
                f"add partners.{spec.connector} (auth, and client credentials or none)",
            )
        return None

    def _installation(
        self,
        src: SourceFile,
        path: KeyPath,
        tenant: str,
        name: str,
        spec: InstallationSpec,
        partner: DesiredPartner,
        tenant_protected: bool = False,
    ) -> DesiredInstallation | None:
        connector = self.catalog.connectors[partner.connector]
        before = len(self.issues)
        if tenant_protected and "protect" in spec.model_fields_set and not spec.protect:
            message = f"protect: false has no effect: tenant '{tenant}' protects all its installations"
            self._issue(src, (*path, "protect"), message, "remove it, or the tenant's protect: true", warning=True)
        if spec.connector is not None and spec.connector != partner.connector:
            self._issue(
                src,
                (*path, "connector"),
                f"connector '{spec.connector}' does not match partner '{partner.name}' ({partner.connector})",
            )
        self._parameters(src, path, spec.parameters, connector)
        scopes = self._scopes(src, path, spec.scopes, connector, partner)
        if spec.credentials is not None:
            cred_path = (*path, "credentials")
            client_id = self._value(src, (*cred_path, "client_id"), spec.credentials.client_id, secret=False)
            if client_id is not None:
                overridden = self._overridden.get(partner.name, False)
                written = spec.credentials.client_id
                self._client_ids.append((src, (*cred_path, "client_id"), written, client_id, partner.auth, overridden))
            written_secret = spec.credentials.client_secret
            secret_value = self._value(src, (*cred_path, "client_secret"), written_secret, secret=True)
            secret = SecretStr(secret_value) if secret_value is not None else None  # None: not checked here
            secret_ref: str | None = spec.credentials.client_secret
            source = "installation"
        elif partner.has_credentials:
            client_id, secret, secret_ref = partner.client_id, partner.client_secret, partner.client_secret_ref
            source = "partner"
        else:
            self._issue(
                src,
                src.missing_at(path, "credentials"),
                f"no client credentials: partner '{partner.name}' leaves client_id/client_secret blank",
                'add credentials: {client_id: ..., client_secret: "${env:...}"} to this installation',
            )
            return None
        if len(self.issues) > before or client_id is None or secret_ref is None:
            return None
        return DesiredInstallation(
            tenant=tenant,
            name=name,
            connector=partner.connector,
            partner=partner.name,
            auth=partner.auth,
            parameters=dict(sorted(spec.parameters.items())),
            scopes=scopes,
            client_id=client_id,
            client_secret_ref=secret_ref,
            credentials_source=source,
            redirect_uri=partner.redirect_uri,
            token_url=partner.token_url,
            api_url=partner.api_url,
            protected=spec.protect or tenant_protected,
            client_secret=secret,
            revoke_url=partner.revoke_url,
        )

    def _parameters(self, src: SourceFile, path: KeyPath, parameters: Mapping[str, str], connector: Connector) -> None:
        for key, value in parameters.items():
            param = connector.parameters.get(key)
            if param is None:
                hint = did_you_mean(key, list(connector.parameters)) or "expected: " + ", ".join(connector.parameters)
                self._issue(src, (*path, "parameters", key), f"unknown parameter '{key}'", hint, at_key=True)
            elif param.pattern and not _compiled(param.pattern).fullmatch(value):
                shown = json.dumps(value) if len(value) <= 80 else json.dumps(value[:80]) + "..."
                self._issue(src, (*path, "parameters", key), f"invalid {key} {shown} ({param.description})")
            elif "${" in value:
                self._issue(src, (*path, "parameters", key), NO_REFERENCE)
        for key, param in connector.parameters.items():
            if param.required and key not in parameters:
                where = src.missing_at((*path, "parameters"), key) if parameters else src.missing_at(path, "parameters")
                self._issue(src, where, f"missing parameter '{key}' ({param.display_name})")

    def _scopes(
        self, src: SourceFile, path: KeyPath, scopes: Sequence[str], connector: Connector, partner: DesiredPartner
    ) -> tuple[str, ...]:
        """The declared scopes, sorted and without repeats, after checking them against the catalog and the
        partner's registration. Thousands of installations list one of a few scope lists: a list that passed
        without any remark is not checked again."""
        key = (partner.name, tuple(scopes))
        known = self._clean_scopes.get(key)
        if known is not None:
            return known
        remarks = len(self.issues) + len(self.warnings)
        checked = self._check_scopes(src, path, scopes, connector, partner)
        if len(self.issues) + len(self.warnings) == remarks:
            self._clean_scopes[key] = checked
        return checked

    def _check_scopes(
        self, src: SourceFile, path: KeyPath, scopes: Sequence[str], connector: Connector, partner: DesiredPartner
    ) -> tuple[str, ...]:
        registered = connector.closure(partner.scopes) if partner.scopes is not None else None
        seen: set[str] = set()
        for index, scope in enumerate(scopes):
            where = (*path, "scopes", index)
            if scope in seen:
                self._issue(src, where, f"scope '{scope}' is listed twice", warning=True)
                continue
            seen.add(scope)
            if scope not in connector.scopes:
                self._unknown_scope(src, where, scope, connector)
            elif registered is not None and scope not in registered:
                self._issue(
                    src,
                    where,
                    f"scope '{scope}' is not registered with partner '{partner.name}'",
                    f"registered: {', '.join(partner.scopes or ())}; the provider would refuse it (InvalidScope)",
                )
        missing = [s for s in connector.recommended_scopes if s not in connector.closure(frozenset(seen))]
        if missing and not any(s not in connector.scopes for s in seen):
            names = ", ".join(f"{s} ({connector.scopes[s].name})" for s in missing)
            self._issue(src, (*path, "scopes"), f"without {names} most methods of {connector.display_name} fail", warning=True)
        return tuple(sorted(seen))


_PATTERNS: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    compiled = _PATTERNS.get(pattern)
    if compiled is None:
        compiled = _PATTERNS[pattern] = re.compile(pattern)
    return compiled


def _overlaid(
    base: Mapping[str, Any], over: Mapping[str, Any], path: KeyPath, written: set[KeyPath], missing: list[KeyPath]
) -> dict[str, Any]:
    """`over` merged over `base`: mappings by key (recursively), anything else replaced, a null value removes its
    key. Adds to `written` every path whose value `over` set or removed, to `missing` each null with nothing to
    remove."""
    merged = dict(base)
    for key, value in over.items():
        where = (*path, key)
        if value is None:
            if key in merged:
                del merged[key]
                written.add(where)
            else:
                missing.append(where)
        elif isinstance(value, dict):
            into = merged.get(key)
            if not isinstance(into, dict):
                into = {}
                written.add(where)
            merged[key] = _overlaid(into, value, where, written, missing)
        else:
            merged[key] = value
            written.add(where)
    return merged


_URL_UNSAFE = re.compile(r"[\x00-\x20\x7f-\x9f]")  # never raw in a URL; a client would send them or choke


def _url_problem(url: str, *, allow_http_loopback: bool) -> str | None:
    from urllib.parse import urlsplit

    if _URL_UNSAFE.search(url):
        return "invalid URL: it contains a space or a control character (percent-encode it)"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port
    except ValueError:
        return f"invalid URL '{url}'"
    if parts.scheme not in {"https", "http"} or not host:
        return f"invalid URL '{url}': expected https://host/..."
    if parts.username or parts.password:
        return "a URL may not carry a user name or password"
    if parts.fragment or url.endswith("#"):
        return "an OAuth endpoint or redirect URI may not contain a fragment (#)"  # RFC 6749 3.1, 3.1.2
    if parts.scheme == "http":
        loopback = parts.netloc.rsplit("@", 1)[-1].split(":")[0] in _LOOPBACK_HOSTS or host in {"127.0.0.1", "localhost", "::1"}
        if not (allow_http_loopback and loopback):
            if allow_http_loopback:
                return f"'{url}' must use https (http is allowed only for 127.0.0.1 or localhost)"
            return f"'{url}' must use https"
    return None


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
        dt.date: "a date",
        dt.datetime: "a timestamp",
    }.get(type(value), type(value).__name__)


def _fields_at(model: type[BaseModel], loc: KeyPath) -> list[str]:
    """The keys allowed at `loc` inside `model` (for did-you-mean on unknown keys)."""
    annotation: Any = model
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            info = annotation.model_fields.get(str(part))
            if info is None:
                return []
            annotation = info.annotation
        elif typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
        elif typing.get_origin(annotation) is tuple:
            annotation = typing.get_args(annotation)[0]
        else:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = options[0] if len(options) == 1 else annotation
            if len(options) != 1:
                return annotation
        else:
            return annotation
