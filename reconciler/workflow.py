"""Workflows shared by the CLI and tests: load the configuration, open the state backend, plan.

Owns: composing the layers for one command. Must not: print, prompt, read the clock or the environment
itself (both are passed in), or know about click.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from reconciler.apply import ApplyHooks, ApplyResult
from reconciler.auth.consent import ConsentStep
from reconciler.catalog import load_catalog
from reconciler.config import LoadedConfig, load_config
from reconciler.config.loader import display_path, load_root
from reconciler.config.schema import RootFile
from reconciler.errors import ReconcilerError, UsageError
from reconciler.plan import Plan
from reconciler.planner import make_plan
from reconciler.render.document import PlanDocument, to_document
from reconciler.state import LocalBackend, StateBackend, StateDocument

__all__ = ["PlanResult", "open_backend", "plan_config"]

DEFAULT_ENVIRONMENT = "default"


@dataclass(frozen=True)
class PlanResult:
    loaded: LoadedConfig
    backend: StateBackend
    plan: Plan
    document: PlanDocument


def open_backend(config_dir: Path, root: RootFile, environment: str = DEFAULT_ENVIRONMENT) -> LocalBackend:
    """The state backend the configuration names (local: `<config dir>/<backend.path>/<env>.json`)."""
    directory = config_dir / root.backend.path
    return LocalBackend(directory, environment, display_dir=display_path(directory))


def plan_config(config_dir: Path, *, environ: Mapping[str, str], now: dt.datetime) -> PlanResult:
    """Load, read state, plan: everything `reconciler plan` shows, as data."""
    loaded = load_config(config_dir, environ=environ, today=now.date())
    backend = open_backend(config_dir, loaded.root)
    plan = make_plan(loaded.desired, backend.read(), now=now, catalog=load_catalog(), state_location=backend.describe())
    document = to_document(plan, warnings=[str(w) for w in loaded.warnings])
    return PlanResult(loaded, backend, plan, document)


# -- apply and authorize ---------------------------------------------------------------------------------------


def open_vault(  # type: ignore[no-untyped-def]
    backend: StateBackend,
    key_dir: Path | None,
    environ: Mapping[str, str],
    *,
    lineage: str,
    environment: str,
    on_key_created: Callable[[str], None],
):
    """The vault of a state: its credential store and the state key, checked against what is already sealed.

    A key that is not the one the existing credentials were sealed with is refused before anything is written,
    and no key is generated for a state that already holds sealed credentials (its key file is lost)."""
    from reconciler.crypto import StateKeyError, load_state_key
    from reconciler.state.credentials import Vault

    store = backend.credential_store()
    sealed_kid = _sealed_key_id(store)
    key = load_state_key(
        environ,
        key_file=(key_dir or Path(".")) / f"{environment}.key",
        salt_file=(key_dir or Path(".")) / f"{environment}.kdf.json",
        create=sealed_kid is None,
        allow_key_file=key_dir is not None,
    )
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
        raise StateKeyError(
            f"{backend.describe()}: credentials are sealed with key id {sealed_kid}, but the current state key "
            f"(from {key.source}) is {key.key_id}",
            hint="use the key the state was written with; nothing was changed",
        )
    if key.created and key_dir is not None:
        _git_ignore_keys(key_dir)
        on_key_created(key.source)
    return Vault(store, key, lineage=lineage, environment=environment)


def _sealed_key_id(store) -> str | None:  # type: ignore[no-untyped-def]
    for address in store.addresses()[:1]:
        record = store.get(address)
        blob = (record.tokens or record.pending) if record else None
        if blob:
            return str(blob.get("kid"))
    return None


def _git_ignore_keys(directory: Path) -> None:
    ignore = directory / ".gitignore"
    lines = ignore.read_text().splitlines() if ignore.exists() else ["# state keys never go into git"]
    if "*.key" not in lines:
        ignore.write_text("\n".join([*lines, "*.key"]) + "\n")


def services_for(  # type: ignore[no-untyped-def]
    config_dir: Path,
    loaded: LoadedConfig,
    backend: StateBackend,
    *,
    environ: Mapping[str, str],
    http,
    consent,
    clock,
    on_key_created,
    environment: str = DEFAULT_ENVIRONMENT,
):
    """The executor's side effects for this configuration (the key is checked or created on first use)."""
    from reconciler.apply import Services

    key_dir = config_dir / loaded.root.backend.path if isinstance(backend, LocalBackend) else None

    def vault_for(lineage: str):  # type: ignore[no-untyped-def]
        return open_vault(
            backend, key_dir, environ, lineage=lineage, environment=environment, on_key_created=on_key_created
        )

    return Services(backend=backend, vault_for=vault_for, http=http, consent=consent, now=clock, catalog=load_catalog())


@dataclass
class RunOutcome:
    """What an apply or authorize run achieved (None: nothing was attempted)."""

    result: ApplyResult | None


def read_state(config_dir: Path, *, environ: Mapping[str, str]) -> StateDocument | None:
    """The recorded state of the configuration in `config_dir` (needs no secrets)."""
    return open_backend(config_dir, load_root(config_dir)).read()


def run_apply(
    config_dir: Path,
    *,
    environ: Mapping[str, str],
    clock: Callable[[], dt.datetime],
    consent: ConsentStep | None,
    hooks: ApplyHooks,
    confirm: Callable[[PlanDocument], bool],
    require_scopes: bool,
    lock_timeout: float,
    on_key_created: Callable[[str], None],
) -> RunOutcome:
    """Load, lock, plan, confirm (the callback shows the plan), and carry it out."""
    from reconciler.apply import ApplyResult, apply_plan

    now = clock()
    loaded = load_config(config_dir, environ=environ, today=now.date())
    backend = open_backend(config_dir, loaded.root)
    with backend.lock("apply", timeout=lock_timeout):
        plan = make_plan(loaded.desired, backend.read(), now=now, catalog=load_catalog(), state_location=backend.describe())
        document = to_document(plan, warnings=[str(w) for w in loaded.warnings])
        if not confirm(document):
            if document.has_changes:
                raise ReconcilerError("apply cancelled; nothing was changed")
            return RunOutcome(ApplyResult(state=None, pending=[(c.address, "") for c in plan.changes if c.pending]))
        with httpx.Client(timeout=30.0) as http:
            services = services_for(
                config_dir, loaded, backend, environ=environ, http=http, consent=consent, clock=clock,
                on_key_created=on_key_created,
            )
            return RunOutcome(apply_plan(plan, loaded.desired, services, hooks, require_scopes=require_scopes))


def run_authorize(
    config_dir: Path,
    patterns: list[str],
    *,
    environ: Mapping[str, str],
    clock: Callable[[], dt.datetime],
    consent: ConsentStep | None,
    hooks: ApplyHooks,
    reissue: bool,
    require_scopes: bool,
    lock_timeout: float,
) -> RunOutcome:
    """Complete (or reissue) pending authorizations matching `patterns` (all pending ones when empty)."""
    from reconciler.apply import authorize_pending
    from reconciler.state.model import InstallationRecord

    loaded = load_config(config_dir, environ=environ, today=clock().date())
    backend = open_backend(config_dir, loaded.root)
    with backend.lock("authorize", timeout=lock_timeout):
        doc = backend.read()
        pending = [
            a for a, r in (doc.resources.items() if doc else ()) if isinstance(r, InstallationRecord) and r.pending
        ]
        selected = [a for a in pending if not patterns or any(fnmatch.fnmatchcase(a, p) for p in patterns)]
        unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(a, p) for a in pending)]
        if unmatched:
            raise UsageError(f"no pending authorization matches {', '.join(unmatched)}")
        if not selected:
            return RunOutcome(None)
        with httpx.Client(timeout=30.0) as http:
            services = services_for(
                config_dir, loaded, backend, environ=environ, http=http, consent=consent, clock=clock,
                on_key_created=lambda path: None,
            )
            return RunOutcome(
                authorize_pending(selected, loaded.desired, services, hooks, reissue=reissue, require_scopes=require_scopes)
            )
