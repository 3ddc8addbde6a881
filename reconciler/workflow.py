"""Workflows shared by the CLI and tests: load the configuration, open the state backend, plan, apply.

Owns: composing the layers for one command. Must not: print, prompt, read the clock or the environment
itself (both are passed in), or know about click.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import gc
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from reconciler.addresses import EVERYTHING, NO_GLOBS, Globs, Selection
from reconciler.catalog import load_catalog
from reconciler.config import LoadedConfig, load_config
from reconciler.config.ahead import ParsedAhead, parse_includes_ahead
from reconciler.config.loader import CONFIG_FILE, display_path, load_root, resolve_reference
from reconciler.config.schema import LocalBackendSpec, RootFile
from reconciler.errors import ReconcilerError, UsageError
from reconciler.plan import Plan
from reconciler.planner import make_plan
from reconciler.render.document import PlanDocument, to_document
from reconciler.state import LocalBackend, StateBackend, StateDocument
from reconciler.state.model import InstallationRecord
from reconciler.status import Status, TokenFacts, installation_status
from reconciler.tokens.model import SealedRecord
from reconciler.tokens.store import CredentialStore, copy_record

if TYPE_CHECKING:  # the apply and OAuth layers (httpx, authlib) load only for commands that use them
    from reconciler.apply import ApplyHooks, ApplyResult
    from reconciler.auth.consent import ConsentStep
    from reconciler.planfile import SavedPlan
    from reconciler.refresh import Finding, RefreshSettings

__all__ = ["Options", "PlanResult", "Workspace", "open_backend", "plan_config"]

DEFAULT_ENVIRONMENT = "default"


@dataclass(frozen=True)
class Workspace:
    """Where a command works: the configuration directory, the environment variables it may read, the
    environment (None: the base configuration), and the clock."""

    config_dir: Path
    environ: Mapping[str, str]
    environment: str | None = None
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    cache: bool = False  # the parse cache (on for the CLI unless --no-cache; off by default for library calls)
    http_timeout: float = 30.0  # seconds for each request to a provider (connect, read, write)

    def parse_cache(self):  # type: ignore[no-untyped-def]
        from reconciler.config.cache import parse_cache

        return parse_cache(self.environ) if self.cache else None

    @property
    def environment_name(self) -> str:
        return self.environment or DEFAULT_ENVIRONMENT


@dataclass(frozen=True)
class Options:
    """What to plan: address globs to target, exclude, force re-authorization of, and allow deleting."""

    selection: Selection = EVERYTHING
    replace: Globs = NO_GLOBS
    allow_delete: Globs = NO_GLOBS


@dataclass(frozen=True)
class PlanResult:
    loaded: LoadedConfig
    backend: StateBackend
    plan: Plan
    document: PlanDocument
    valid_until: dt.datetime | None = None  # when the clock alone changes this plan (a pending link expires)


def open_backend(ws: Workspace, root: RootFile) -> StateBackend:
    """The state backend the configuration names, for the workspace's environment."""
    spec = root.backend
    if isinstance(spec, LocalBackendSpec):
        directory = ws.config_dir / spec.path
        return LocalBackend(directory, ws.environment_name, display_dir=display_path(directory))
    from reconciler.state.postgres import PostgresBackend

    root_file = ws.config_dir / CONFIG_FILE
    dsn = resolve_reference(
        spec.dsn, config_dir=ws.config_dir, environ=ws.environ, where=root_file, key=("backend", "dsn")
    )
    return PostgresBackend(dsn, ws.environment_name, source=f"{display_path(root_file)}: backend.dsn")


def check_backend(ws: Workspace, root: RootFile) -> None:
    """Offline: a PostgreSQL DSN that is available must parse (`validate` runs where the DSN's variable may not be
    set, and says nothing about it then)."""
    if isinstance(root.backend, LocalBackendSpec):
        return
    from reconciler.state.postgres import PostgresBackend

    root_file = ws.config_dir / CONFIG_FILE
    try:
        dsn = resolve_reference(
            root.backend.dsn, config_dir=ws.config_dir, environ=ws.environ, where=root_file, key=("backend", "dsn")
        )
    except ReconcilerError:
        return
    PostgresBackend(dsn, ws.environment_name, source=f"{display_path(root_file)}: backend.dsn")


def key_directory(ws: Workspace, root: RootFile) -> Path | None:
    """Where a generated state key may live: beside local state only (a shared backend needs an explicit key)."""
    return ws.config_dir / root.backend.path if isinstance(root.backend, LocalBackendSpec) else None


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _bulk(phase: Callable[_P, _R]) -> Callable[_P, _R]:
    """Loading and planning allocate about a million objects and free none of them in cycles: the cyclic garbage
    collector would only rescan the growing heap, again and again (a third of a 10,000-installation plan), so it
    is paused for the phase."""

    @functools.wraps(phase)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return phase(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()

    return run


@_bulk
def _load(
    ws: Workspace,
    meanwhile: Callable[[], object] | None = None,
    ahead: ParsedAhead | None = None,
    unchecked_secrets: bool = False,
) -> LoadedConfig:
    """The configuration; where it pays, included files are parsed on a second core (by `ahead` when the caller
    started it, else by a worker started here) while `meanwhile()` runs. The worker is closed on return.
    `unchecked_secrets`: for a command that never uses a secret's value (see `load_config`)."""
    cache = ws.parse_cache()
    if ahead is None:
        ahead = parse_includes_ahead(ws.config_dir, cache, ws.environ)
    try:
        if ahead is not None and meanwhile is not None:
            meanwhile()
        return load_config(
            ws.config_dir,
            environ=ws.environ,
            today=ws.clock().date(),
            environment=ws.environment,
            cache=cache,
            ahead=ahead,
            unchecked_secrets=unchecked_secrets,
        )
    finally:
        if ahead is not None:
            ahead.close()


@_bulk
def _plan(
    ws: Workspace,
    loaded: LoadedConfig,
    backend: StateBackend,
    options: Options,
    recorded: StateDocument | None,
    now: dt.datetime | None = None,
) -> Plan:
    return make_plan(
        loaded.desired,
        recorded,
        now=now or ws.clock(),
        catalog=load_catalog(),
        state_location=backend.describe(),
        selection=options.selection,
        allow_delete=options.allow_delete,
        replace=options.replace,
    )


@_bulk
def plan_config(ws: Workspace, options: Options = Options(), ahead: ParsedAhead | None = None) -> PlanResult:
    """Load, read state, plan: everything `reconciler plan` shows, as data (`ahead`: see `_load`). A plan shows and
    compares secret references, never their values: a secret not available here is only noted
    (`loaded.unchecked`)."""
    early: list[tuple[object, StateBackend, StateDocument | None]] = []

    def read_state() -> None:  # while a worker parses: the state named by the root file (and overlay) alone
        try:
            root = load_root(ws.config_dir, environment=ws.environment)
            backend = open_backend(ws, root)
            early.append((root.backend, backend, backend.read()))
        except (ReconcilerError, OSError):
            pass  # read again below, so that problems come in their usual order: the configuration's first

    loaded = _load(ws, meanwhile=read_state, ahead=ahead, unchecked_secrets=True)
    if early and early[0][0] == loaded.root.backend:
        _, backend, recorded = early[0]
    else:
        backend = open_backend(ws, loaded.root)
        recorded = backend.read()
    now = ws.clock()
    plan = _plan(ws, loaded, backend, options, recorded, now)
    document = to_document(plan, warnings=[str(w) for w in loaded.warnings])
    return PlanResult(loaded, backend, plan, document, _valid_until(recorded, now))


def _valid_until(recorded: StateDocument | None, now: dt.datetime) -> dt.datetime | None:
    """The first instant after `now` at which a plan of `recorded` changes by the clock alone: a pending
    authorization's link expires (the planner's only use of the clock)."""
    if recorded is None:
        return None
    expiries = [
        record.pending.expires_at
        for record in recorded.resources.values()
        if isinstance(record, InstallationRecord) and record.pending is not None and record.pending.expires_at > now
    ]
    return min(expiries, default=None)


def save_plan(ws: Workspace, result: PlanResult, path: Path) -> None:
    """Write `result` as a saved plan (signed with the state key, created for new local state)."""
    from reconciler.planfile import PlanFileError, write_plan_file

    if not path.parent.is_dir():
        raise PlanFileError(f"{path}: cannot write the plan file: No such file or directory")
    key = state_key(ws, result.loaded.root, result.backend, on_key_created=lambda source: None)
    write_plan_file(path, result.plan, result.document, result.loaded.desired, key)


def show_plan(ws: Workspace, path: Path) -> PlanDocument:
    """The document of a saved plan, after checking its signature (no secret is read: it only renders)."""
    return _read_saved(ws, path, load_root(ws.config_dir, environment=ws.environment), secrets=False).document


def _read_saved(ws: Workspace, path: Path, root: RootFile, *, secrets: bool = True) -> SavedPlan:
    """A saved plan, its signature checked; with `secrets` False its desired state carries empty secret values
    (for rendering only, never for applying)."""
    from reconciler.planfile import read_plan_file

    backend = open_backend(ws, root)
    key = state_key(ws, root, backend, on_key_created=lambda source: None, create=False)

    def resolve(ref: str) -> str:
        return resolve_reference(ref, config_dir=ws.config_dir, environ=ws.environ, where=path) if secrets else ""

    return read_plan_file(path, key=key, environment=ws.environment_name, resolve_secret=resolve)


# -- keys and credentials ----------------------------------------------------------------------------------------


def state_key(  # type: ignore[no-untyped-def]
    ws: Workspace, root: RootFile, backend: StateBackend, *, on_key_created: Callable[[str], None], create: bool = True
):
    """The state key, checked against what is already sealed (see `open_key`)."""
    return open_key(backend, key_directory(ws, root), ws.environ, ws.environment_name, on_key_created, create=create)


def open_key(  # type: ignore[no-untyped-def]
    backend: StateBackend,
    key_dir: Path | None,
    environ: Mapping[str, str],
    environment: str,
    on_key_created: Callable[[str], None],
    *,
    create: bool = True,
):
    """The state key, checked against the credentials already sealed in `backend`.

    A key that is not the one the existing credentials were sealed with is refused before anything is written,
    and no key is generated for a state that already holds sealed credentials (its key file is lost)."""
    from reconciler.crypto import KeyFiles, KeyMismatchError, StateKeyError, load_state_key

    if key_dir is not None and KeyFiles(key_dir, environment).new.exists():
        raise KeyMismatchError(
            f"{backend.describe()}: a key rotation is unfinished ({KeyFiles(key_dir, environment).new} holds its "
            "new key)",
            hint="finish it: reconciler state rekey; nothing was changed",
        )
    store = backend.credential_store()
    sealed = _sealed_key_ids(store)
    if len(sealed) > 1:
        raise KeyMismatchError(
            f"{backend.describe()}: credentials are sealed with two keys (key ids {sealed[0]} and {sealed[1]}): "
            "a key rotation is unfinished",
            hint="finish it: run `reconciler state rekey` again with the same new-key option and the old key as "
            "the current one; nothing was changed",
        )
    sealed_kid = sealed[0] if sealed else None
    key = load_state_key(
        environ,
        key_file=(key_dir or Path(".")) / f"{environment}.key",
        salt_file=(key_dir or Path(".")) / f"{environment}.kdf.json",
        create=create and sealed_kid is None,
        allow_key_file=key_dir is not None,
    )
    if key is None and not create and sealed_kid is None:
        return None
    if key is None and environ.get("RECONCILER_STATE_PASSPHRASE"):
        raise StateKeyError(
            f"{backend.describe()}: credentials are sealed with key id {sealed_kid}, not with a passphrase "
            "(there is no passphrase salt beside the state)",
            hint="use the key the state was written with; nothing was changed",
        )
    if key is None:
        raise StateKeyError(
            f"{backend.describe()} holds sealed credentials, but there is no state key",
            hint=f"set RECONCILER_STATE_KEY or RECONCILER_STATE_PASSPHRASE, or restore {key_dir}/{environment}.key",
        )
    if sealed_kid is not None and sealed_kid != key.key_id:
        raise KeyMismatchError(
            f"{backend.describe()}: credentials are sealed with key id {sealed_kid}, but the current state key "
            f"(from {key.source}) is {key.key_id}",
            hint="use the key the state was sealed with (after `reconciler state rekey`: the new one); nothing "
            "was changed",
        )
    if key.created and key_dir is not None:
        _git_ignore_keys(key_dir)
        on_key_created(key.source)
    return key


def _sealed_key_id(store) -> str | None:  # type: ignore[no-untyped-def]
    """The id of the key the credentials are sealed with (None: none are sealed)."""
    sealed = _sealed_key_ids(store)
    return sealed[0] if sealed else None


def _sealed_key_ids(store) -> list[str]:  # type: ignore[no-untyped-def]
    """The distinct key ids of the first and the last credential record, in the store's order: two when a key
    rotation (which re-seals records in that order) was interrupted midway. Two reads, whatever the state's size."""
    addresses = store.addresses()
    found: list[str] = []
    for address in dict.fromkeys(addresses[:1] + addresses[-1:]):
        record = store.get(address)
        blob = (record.tokens or record.pending or record.staged) if record else None
        if blob and str(blob.get("kid")) not in found:
            found.append(str(blob.get("kid")))
    return found


def _git_ignore_keys(directory: Path) -> None:
    """`*.key` and `*.key.*` in the state directory's .gitignore (never written through a link planted there)."""
    import os

    from reconciler.statefiles import open_regular, read_regular

    ignore = directory / ".gitignore"
    raw = read_regular(ignore)
    lines = raw.decode(errors="replace").splitlines() if raw is not None else ["# state keys never go into git"]
    missing = [pattern for pattern in ("*.key", "*.key.*") if pattern not in lines]  # *.key.*: a rotation's keys
    if missing:
        with os.fdopen(open_regular(ignore, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), "w") as handle:
            handle.write("\n".join([*lines, *missing]) + "\n")


def services_for(  # type: ignore[no-untyped-def]
    ws: Workspace,
    root: RootFile,
    backend: StateBackend,
    *,
    http,
    consent,
    on_key_created,
):
    """The executor's side effects (the key is checked, or created, on first use)."""
    from reconciler.apply import Services
    from reconciler.tokens.vault import Vault

    def vault_for(lineage: str) -> Vault:
        key = state_key(ws, root, backend, on_key_created=on_key_created)
        return Vault(backend.credential_store(), key, lineage=lineage, environment=ws.environment_name)

    return Services(
        backend=backend, vault_for=vault_for, http=http.client(), consent=consent, now=ws.clock, catalog=load_catalog()
    )


@dataclass
class RunOutcome:
    """What an apply or authorize run achieved (None: nothing was attempted)."""

    result: ApplyResult | None


def read_state(ws: Workspace) -> StateDocument | None:
    """The recorded state of the workspace (needs no secrets, except a shared backend's DSN)."""
    return open_backend(ws, load_root(ws.config_dir, environment=ws.environment)).read()


def read_statuses(ws: Workspace) -> tuple[StateDocument | None, dict[str, Status]]:
    """The recorded state with each installation's status, derived from what state recorded and the expiry of its
    stored tokens (a refresh stores rotated tokens in the credential record only, never in the document). Without
    a state key the expiry the last apply recorded stands in. Nothing is written; no secret leaves the vault."""
    from reconciler.tokens.vault import Vault

    root = load_root(ws.config_dir, environment=ws.environment)
    backend = open_backend(ws, root)
    doc = backend.read()
    if doc is None:
        return None, {}
    from reconciler.crypto import KeyMismatchError

    vault, mismatch = None, None
    try:
        key = state_key(ws, root, backend, on_key_created=lambda source: None, create=False)
    except KeyMismatchError as exc:  # a key, but not the one: the tokens cannot be read, and the status says so
        key, mismatch = None, exc
    except ReconcilerError:
        key = None
    if key is not None:
        vault = Vault(backend.credential_store(), key, lineage=doc.lineage, environment=ws.environment_name)
    now = ws.clock()
    return doc, {
        address: installation_status(record, _token_facts(vault, address, record, mismatch), now=now)
        for address, record in doc.resources.items()
        if isinstance(record, InstallationRecord)
    }


def _token_facts(  # type: ignore[no-untyped-def]
    vault, address: str, record: InstallationRecord, mismatch: ReconcilerError | None = None
) -> TokenFacts | None:
    """The expiry and refreshability of the stored tokens (None: no vault to open them with; an error when the key
    at hand is not theirs: `mismatch`)."""
    if record.status != "authorized":
        return None
    if mismatch is not None:
        return TokenFacts(error=f"stored tokens cannot be read: {mismatch.message}")
    if vault is None:
        return None
    from reconciler.tokens.custodian import TokenCustodian

    try:
        held = TokenCustodian(vault).held(address, record.client_id)
    except ReconcilerError as exc:
        return TokenFacts(error=f"stored tokens cannot be read: {exc.message}")
    if held is None:
        return TokenFacts(present=False)
    return TokenFacts(expires_at=held.tokens.expires_at, refreshable=held.tokens.refresh_token is not None)


def run_apply(
    ws: Workspace,
    *,
    options: Options,
    consent: ConsentStep | None,
    hooks: ApplyHooks,
    confirm: Callable[[PlanDocument], bool],
    require_scopes: bool,
    lock_timeout: float,
    on_key_created: Callable[[str], None],
    plan_file: Path | None = None,
    on_missed: Callable[[str, ReconcilerError], bool] | None = None,
) -> RunOutcome:
    """Lock, plan (or read the saved plan), confirm (the callback shows the plan), and carry it out. `on_missed`
    decides whether a sign-in that timed out is left pending while the others go on (see `Services`)."""
    from reconciler.apply import ApplyResult, apply_plan

    if plan_file is not None:
        root = load_root(ws.config_dir, environment=ws.environment)
        saved = _read_saved(ws, plan_file, root)
        backend, desired, plan, document = open_backend(ws, root), saved.desired, saved.plan, saved.document
    else:
        loaded = _load(ws)
        root, desired, backend = loaded.root, loaded.desired, open_backend(ws, loaded.root)
    with backend.lock("apply", timeout=lock_timeout):
        if _sealed_key_id(backend.credential_store()) is not None:  # a wrong key fails before the plan is confirmed
            state_key(ws, root, backend, on_key_created=on_key_created, create=False)
        if plan_file is not None:
            _check_fresh(plan_file, plan, backend)
        else:
            plan = _plan(ws, loaded, backend, options, backend.read())
            document = to_document(plan, warnings=[str(w) for w in loaded.warnings])
        if not confirm(document):
            if document.has_changes:
                raise ReconcilerError("apply cancelled; nothing was changed")
            return RunOutcome(ApplyResult(state=None, pending=[(c.address, "") for c in plan.changes if c.pending]))
        from reconciler.auth.transport import Http

        with Http(timeout=ws.http_timeout) as http:
            services = services_for(ws, root, backend, http=http, consent=consent, on_key_created=on_key_created)
            services = dataclasses.replace(services, on_missed=on_missed)
            return RunOutcome(apply_plan(plan, desired, services, hooks, require_scopes=require_scopes))


def _check_fresh(path: Path, plan: Plan, backend: StateBackend) -> None:
    """A saved plan applies only to the state it was made against — including "no state at all"."""
    from reconciler.planfile import PlanFileError

    current = backend.read()
    if plan.state.lineage is None and current is not None:
        raise PlanFileError(
            f"{path}: the plan was made when there was no state, but {backend.describe()} now exists "
            f"(serial {current.serial})",
            hint="plan again; nothing was changed",
        )
    if plan.state.lineage is not None and (
        current is None or current.lineage != plan.state.lineage or current.serial != plan.state.serial
    ):
        now_at = f"lineage {current.lineage} serial {current.serial}" if current else "no state"
        raise PlanFileError(
            f"{path}: the state moved since the plan was made (planned against serial {plan.state.serial}, "
            f"now {now_at})",
            hint="plan again; nothing was changed",
        )


def run_authorize(
    ws: Workspace,
    patterns: list[str],
    *,
    consent: ConsentStep | None,
    hooks: ApplyHooks,
    reissue: bool,
    require_scopes: bool,
    lock_timeout: float,
    excludes: Collection[str] = (),
) -> RunOutcome:
    """Complete (or reissue) pending authorizations matching `patterns` (all pending ones when empty), minus those
    matching `excludes`."""
    from reconciler.authorize import authorize_pending
    loaded = _load(ws)
    backend = open_backend(ws, loaded.root)
    if backend.read() is None:  # before the lock, which would create the state directory
        if patterns:
            raise UsageError(f"no pending authorization matches {', '.join(patterns)}")
        return RunOutcome(None)
    with backend.lock("authorize", timeout=lock_timeout):
        doc = backend.read()
        pending = [
            a for a, r in (doc.resources.items() if doc else ()) if isinstance(r, InstallationRecord) and r.pending
        ]
        selected = Selection.of(patterns, excludes).pick(pending)
        unmatched = Globs.of(patterns).unmatched(pending)
        if unmatched:
            raise UsageError(f"no pending authorization matches {', '.join(unmatched)}")
        if not selected:
            return RunOutcome(None)
        from reconciler.auth.transport import Http

        with Http(timeout=ws.http_timeout) as http:
            services = services_for(ws, loaded.root, backend, http=http, consent=consent, on_key_created=lambda p: None)
            return RunOutcome(
                authorize_pending(selected, loaded.desired, services, hooks, reissue=reissue, require_scopes=require_scopes)
            )


# -- state commands ----------------------------------------------------------------------------------------------


def state_rm(
    ws: Workspace,
    patterns: list[str],
    *,
    lock_timeout: float,
    excludes: Collection[str] = (),
    allow_delete: Collection[str] = (),
) -> list[str]:
    """Forget addresses (globs, minus `excludes`) without revoking anything: their records and sealed credentials
    go. A protected installation goes only when an `allow_delete` glob names it (as for a planned delete);
    otherwise nothing is removed."""
    from reconciler.names import check_address_pattern

    for pattern in (*patterns, *excludes, *allow_delete):
        check_address_pattern(pattern)
    backend = open_backend(ws, load_root(ws.config_dir, environment=ws.environment))
    if backend.read() is None:  # before the lock, which would create the state directory
        raise UsageError("there is no state yet")
    with backend.lock("state rm", timeout=lock_timeout):
        doc = backend.read()
        if doc is None:
            raise UsageError("there is no state yet")
        gone = Selection(Globs.of(patterns), Globs.of(excludes)).pick(doc.resources) if patterns else []
        missing = Globs.of(patterns).unmatched(doc.resources)
        if missing:
            raise UsageError(f"not in state: {', '.join(missing)}", hint="`reconciler state list` shows what is")
        _refuse_protected(doc, gone, allow_delete)
        backend.write(doc.with_resources({a: r for a, r in doc.resources.items() if a not in gone}), expected_serial=doc.serial)
        store = backend.credential_store()
        for address in gone:
            store.delete(address)
        return gone


def _refuse_protected(doc: StateDocument, addresses: list[str], allow_delete: Collection[str]) -> None:
    """A UsageError naming the protected installations among `addresses` that no `allow_delete` glob names."""
    refused = [
        a for a in addresses
        if isinstance(record := doc.resources[a], InstallationRecord) and record.protected
        and not Globs.of(allow_delete).match(a)
    ]
    if refused:
        noun = "installation" if len(refused) == 1 else "installations"
        raise UsageError(
            f"refusing to forget protected {noun}: {', '.join(refused)}",
            hint="pass --allow-delete ADDRESS for each (globs such as 'installation.acme.*' work)",
        )


def state_mv(ws: Workspace, old: str, new: str, *, lock_timeout: float) -> None:
    """Rename an installation without re-authorizing: its record moves and its credentials are re-sealed for the
    new address (a blob opens only where it was sealed)."""
    from reconciler.names import check_address
    from reconciler.tokens.custodian import TokenCustodian
    from reconciler.tokens.vault import Vault

    check_address(old, kind="installation")
    parts = check_address(new, kind="installation")  # the configuration's name rules: no forged lines
    root = load_root(ws.config_dir, environment=ws.environment)
    backend = open_backend(ws, root)
    if backend.read() is None:  # before the lock, which would create the state directory
        raise UsageError(f"{old} is not an installation in state")
    with backend.lock("state mv", timeout=lock_timeout):
        doc = backend.read()
        record = doc.resources.get(old) if doc else None
        if doc is None or not isinstance(record, InstallationRecord):
            raise UsageError(f"{old} is not an installation in state")
        if new in doc.resources:
            raise UsageError(f"{new} is already in state")
        key = state_key(ws, root, backend, on_key_created=lambda source: None)
        vault = Vault(backend.credential_store(), key, lineage=doc.lineage, environment=ws.environment_name)
        moved = record.model_copy(update={"tenant": parts[1], "name": parts[2]})
        resources = {a: r for a, r in doc.resources.items() if a != old}
        written = doc.with_resources({**resources, new: moved})
        TokenCustodian(vault).move(
            old,
            new,
            record.client_id,
            record.pending.client_id if record.pending else None,
            lambda: backend.write(written, expected_serial=doc.serial),
        )


@dataclass
class StateCopy:
    """What `state pull`/`state push` did: the document copied, and per credential record whether it was copied
    or the destination's was kept (a later generation, or another one at the same generation, or one the copy
    does not have)."""

    doc: StateDocument
    copied: list[str] = field(default_factory=list)
    kept_newer: list[str] = field(default_factory=list)
    kept_diverged: list[str] = field(default_factory=list)
    kept_only_there: list[str] = field(default_factory=list)

    def notes(self) -> list[str]:
        """One line per kind of record kept from the destination (none when everything was copied)."""
        kinds = (
            (self.kept_newer, "newer credential record{s} from the destination (rotated after the copy was taken)"),
            (self.kept_diverged, "credential record{s} from the destination that differ at the same generation"),
            (self.kept_only_there, "credential record{s} found only in the destination"),
        )
        return [
            f"kept {len(names)} {text.format(s='' if len(names) == 1 else 's')}: {_some(names)}"
            for names, text in kinds
            if names
        ]


def _some(names: list[str], shown: int = 5) -> str:
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def state_pull(ws: Workspace, directory: Path, *, lock_timeout: float) -> StateCopy:
    """Copy the configured backend's state (document and sealed credentials, as they are) to a local directory."""
    source = open_backend(ws, load_root(ws.config_dir, environment=ws.environment))
    target = LocalBackend(directory, ws.environment_name)
    if source.read() is None:  # before the lock, which would create the state directory
        raise UsageError(f"there is no state at {source.describe()}")
    with source.lock("state pull", timeout=lock_timeout):
        return _copy_state(source, target, lock_timeout)


def state_push(ws: Workspace, directory: Path, *, lock_timeout: float) -> StateCopy:
    """Copy local state (document and sealed credentials) into the configured backend, keeping lineage and serial.
    Refused when the backend holds another lineage, a newer serial, or the same serial with other contents."""
    source = LocalBackend(directory, ws.environment_name)
    target = open_backend(ws, load_root(ws.config_dir, environment=ws.environment))
    return _copy_state(source, target, lock_timeout)


def _copy_state(source: StateBackend, target: StateBackend, lock_timeout: float) -> StateCopy:
    """The document, then each credential record that is a later generation than the destination's: a copy never
    moves a record back (its refresh token was spent when the destination's rotated)."""
    doc = source.read()
    if doc is None:
        raise UsageError(f"there is no state at {source.describe()}")
    with target.lock("state push", timeout=lock_timeout):
        target.import_document(doc)
        outcome = StateCopy(doc)
        sink, store = target.credential_store(), source.credential_store()
        pushed = store.addresses()
        for address in pushed:
            record = store.get(address)
            if record is not None:
                _copy_record(sink, address, record, outcome)
        outcome.kept_only_there = sorted(set(sink.addresses()) - set(pushed))
    return outcome


def _copy_record(sink: CredentialStore, address: str, record: SealedRecord, outcome: StateCopy) -> None:
    """Copy one record if it is a later generation (see `copy_record`), noting a record kept instead."""
    verdict = copy_record(sink, address, record)
    if verdict == "copy":
        outcome.copied.append(address)
    else:
        {"newer": outcome.kept_newer, "diverged": outcome.kept_diverged}.get(verdict, []).append(address)


def force_unlock(ws: Workspace, lock_id: str, *, confirm_live: Callable[[str], bool]) -> str:
    """Release a lock whose holder is stuck; returns who held it. A backend that can end a live holder (PostgreSQL)
    does so only when `confirm_live(holder)` says yes; a local lock's live holder is always refused."""
    backend = open_backend(ws, load_root(ws.config_dir, environment=ws.environment))
    if isinstance(backend, LocalBackend):
        return backend.force_unlock(lock_id)
    return backend.force_unlock(lock_id, confirm_live=confirm_live)  # type: ignore[call-arg]


# -- refresh -----------------------------------------------------------------------------------------------------


@dataclass
class RefreshOutcome:
    findings: list[Finding]
    plan: PlanResult | None = None
    recorded: int = 0  # records whose drift changed in state


def run_refresh(
    ws: Workspace,
    *,
    options: Options,
    settings: RefreshSettings,
    progress: Callable[[int, int], None],
    lock_timeout: float,
    record: bool,
) -> RefreshOutcome:
    """Refresh expiring tokens and check every authorized installation. With `record`, store what was found in
    state (`reconciler refresh`); otherwise plan with it (`plan --refresh`). Rotated tokens are stored either way."""
    from reconciler.auth.transport import Http
    from reconciler.refresh import refresh_all
    from reconciler.tokens.vault import Vault

    loaded = _load(ws)
    backend = open_backend(ws, loaded.root)
    with backend.lock("refresh" if record else "plan --refresh", timeout=lock_timeout):
        doc = backend.read()
        findings = []
        if doc is not None:
            selected = set(options.selection.pick(doc.resources))
            key = state_key(ws, loaded.root, backend, on_key_created=lambda source: None, create=False)
            if key is not None:
                vault = Vault(backend.credential_store(), key, lineage=doc.lineage, environment=ws.environment_name)
                with Http(timeout=ws.http_timeout) as http:
                    findings = refresh_all(
                        doc, loaded.desired, vault, http, load_catalog(),
                        now=ws.clock, settings=settings, addresses=selected, progress=progress,
                    )
        if record:
            return RefreshOutcome(findings, recorded=_record_drift(backend, findings, ws.clock()) if doc else 0)
        drift = {f.address: f.drift for f in findings if f.drift}
        plan = make_plan(
            loaded.desired,
            doc,
            now=ws.clock(),
            catalog=load_catalog(),
            state_location=backend.describe(),
            selection=options.selection,
            allow_delete=options.allow_delete,
            replace=options.replace,
            refreshed=drift,
        )
        warnings = [str(w) for w in loaded.warnings] + [
            f"{f.address}: {f.message}" for f in findings if f.outcome in ("transient", "partner", "skipped")
        ]
        return RefreshOutcome(findings, plan=PlanResult(loaded, backend, plan, to_document(plan, warnings=warnings)))


def _record_drift(backend: StateBackend, findings: list[Finding], now: dt.datetime) -> int:
    """Write what refresh found into the records (drift set, or cleared when the token works again)."""
    doc = backend.read()
    if doc is None:
        return 0
    resources = dict(doc.resources)
    changed = 0
    for finding in findings:
        record = resources.get(finding.address)
        if not isinstance(record, InstallationRecord) or finding.outcome not in ("ok", "refreshed", "revoked", "rejected"):
            continue
        if record.drift != finding.drift:
            changed += 1
            resources[finding.address] = record.model_copy(update={"drift": finding.drift, "checked_at": now})
    if changed:
        backend.write(doc.with_resources(resources), expected_serial=doc.serial)
    return changed
