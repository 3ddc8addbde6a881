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


def state_key(config_dir: Path, loaded: LoadedConfig, environ: Mapping[str, str], *, create: bool, environment: str = DEFAULT_ENVIRONMENT):  # type: ignore[no-untyped-def]
    """The state key (see `reconciler.crypto`): from the environment, or the local key file beside the state."""
    from reconciler.crypto import load_state_key

    directory = config_dir / loaded.root.backend.path
    key = load_state_key(
        environ, key_file=directory / f"{environment}.key", salt_file=directory / f"{environment}.kdf.json", create=create
    )
    if key is not None and key.created:
        ignore = directory / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# state keys never go into git\n*.key\n")
    return key


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
    """The executor's side effects for this configuration (the key is created lazily, on the first seal)."""
    from reconciler.apply import Services
    from reconciler.catalog import load_catalog
    from reconciler.state.credentials import LocalCredentialStore, Vault

    directory = config_dir / loaded.root.backend.path

    def vault_for(lineage: str) -> Vault:
        key = state_key(config_dir, loaded, environ, create=True, environment=environment)
        if key.created:
            on_key_created(key.source)
        return Vault(LocalCredentialStore(directory, environment), key, lineage=lineage, environment=environment)

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
