"""Planning for a command: load, read state, plan; saved plans written, read and checked for freshness.

Owns: the one `make_plan` call every command plans through (plan, apply, plan --refresh), what a plan result
carries, and the rule that a saved plan applies only to the state it was made against. Must not: print, prompt,
read the clock or the environment itself, or know about click.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.app.keys import no_note, state_key
from reconciler.app.request import PlanScope
from reconciler.app.source import config_source, paused_gc
from reconciler.app.workspace import Workspace, open_backend, read_root
from reconciler.catalog import Catalog
from reconciler.catalog.files import load_catalog
from reconciler.config import LoadedConfig
from reconciler.config.loader import resolve_reference
from reconciler.config.schema import RootFile
from reconciler.errors import ReconcilerError
from reconciler.plan import Plan
from reconciler.planner import make_plan
from reconciler.render.document import PlanDocument, to_document
from reconciler.state.backend import StateBackend
from reconciler.state.model import Drift, InstallationRecord, StateDocument

if TYPE_CHECKING:
    from reconciler.config.ahead import ParsedAhead
    from reconciler.planfile import SavedPlan

__all__ = [
    "PlanResult", "check_fresh", "plan_config", "plan_of", "plan_warnings", "read_saved", "save_plan", "show_plan",
]


@dataclass(frozen=True)
class PlanResult:
    loaded: LoadedConfig
    backend: StateBackend
    plan: Plan
    document: PlanDocument
    valid_until: dt.datetime | None = None  # when the clock alone changes this plan (a pending link expires)


def plan_of(
    ws: Workspace,
    loaded: LoadedConfig,
    backend: StateBackend,
    scope: PlanScope,
    recorded: StateDocument | None,
    *,
    now: dt.datetime | None = None,
    refreshed: Mapping[str, Drift] | None = None,
) -> Plan:
    """The plan of `loaded` against `recorded` for `scope` (`refreshed`: drift found by a refresh just now). On a
    platform, every installation is first checked against the platform's connector list."""
    if loaded.desired.platform is not None:
        from reconciler.app.platform import check_platform

        check_platform(ws, loaded.desired, recorded)
    with paused_gc():
        return make_plan(
            loaded.desired,
            recorded,
            now=now or ws.clock(),
            catalog=load_catalog(),
            state_location=backend.describe(),
            selection=scope.selection,
            allow_delete=scope.allow_delete,
            replace=scope.replace,
            refreshed=refreshed,
        )


def plan_config(ws: Workspace, scope: PlanScope | None = None, ahead: ParsedAhead | None = None) -> PlanResult:
    """Load, read state, plan: everything `reconciler plan` shows, as data (`scope` None: everything; `ahead`: a
    parse-ahead worker the caller started). A plan shows and compares secret references, never their values: a secret not available
    here is only noted (`loaded.unchecked`)."""
    early: list[tuple[object, StateBackend, StateDocument | None]] = []

    def read_state() -> None:  # while a worker parses: the state named by the root file (and overlay) alone
        try:
            backend = open_backend(ws, root := read_root(ws))
            early.append((root.backend, backend, backend.read()))
        except (ReconcilerError, OSError):
            pass  # read again below, so that problems come in their usual order: the configuration's first

    with paused_gc():
        loaded = config_source(ws, unchecked_secrets=True, ahead=ahead, meanwhile=read_state).load()
        if early and early[0][0] == loaded.root.backend:
            _, backend, recorded = early[0]
        else:
            backend = open_backend(ws, loaded.root)
            recorded = backend.read()
        now = ws.clock()
        plan = plan_of(ws, loaded, backend, scope or PlanScope(), recorded, now=now)
        document = to_document(plan, warnings=plan_warnings(loaded, recorded, now, backend))
        return PlanResult(loaded, backend, plan, document, _valid_until(recorded, now))


def plan_warnings(
    loaded: LoadedConfig, recorded: StateDocument | None, now: dt.datetime, backend: StateBackend | None = None
) -> list[str]:
    """The configuration's warnings, then foresight: what will need a person before the next change (with
    `backend`, refresh tokens that lapse unused, from the checks kept beside the state)."""
    from reconciler.foresight import foresight

    desired, catalog = loaded.desired, load_catalog()
    used = _last_used(backend, recorded, catalog) if backend is not None else None
    ahead = foresight(desired.partners, desired.installations, recorded, catalog, now=now, used=used)
    return [str(w) for w in loaded.warnings] + ahead


def _last_used(backend: StateBackend, recorded: StateDocument | None, catalog: Catalog) -> dict[str, dt.datetime] | None:
    """When each installation's tokens were last found working (the checks beside the state), read only when some
    recorded installation's refresh tokens lapse unused (Entra ID); None when they cannot be read."""
    if recorded is None:
        return None
    lapsing = False
    for record in recorded.resources.values():
        if isinstance(record, InstallationRecord):
            connector = catalog.get(record.connector)
            flavour = connector.auth.get(record.auth) if connector is not None else None
            if flavour is not None and flavour.refresh_token_unused_days:
                lapsing = True
                break
    if not lapsing:
        return None
    try:
        checks = backend.service_store().checks()
    except ReconcilerError:
        return None
    return {address: check.at for address, check in checks.items() if check.outcome in ("ok", "refreshed")}


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
    key = state_key(ws, result.loaded.root, result.backend, on_key_created=no_note)
    write_plan_file(path, result.plan, result.document, result.loaded.desired, key)


def show_plan(ws: Workspace, path: Path) -> PlanDocument:
    """The document of a saved plan, after checking its signature (no secret is read: it only renders)."""
    return read_saved(ws, path, read_root(ws), secrets=False).document


def read_saved(ws: Workspace, path: Path, root: RootFile, *, secrets: bool = True) -> SavedPlan:
    """A saved plan, its signature checked; with `secrets` False its desired state carries empty secret values
    (for rendering only, never for applying)."""
    from reconciler.planfile import read_plan_file

    backend = open_backend(ws, root)
    key = state_key(ws, root, backend, on_key_created=no_note, create=False)

    def resolve(ref: str) -> str:
        return resolve_reference(ref, config_dir=ws.config_dir, environ=ws.environ, where=path) if secrets else ""

    return read_plan_file(path, key=key, environment=ws.environment_name, resolve_secret=resolve)


def check_fresh(path: Path, plan: Plan, backend: StateBackend) -> None:
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
