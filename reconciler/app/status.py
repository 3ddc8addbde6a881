"""`reconciler status`: every installation's status from state (and, with --refresh, after checking each at the
provider), with what runs out when and what to do next.

Owns: assessing a state document's installations — the partner facts each is judged by (its recorded partner and
auth flavour), the facts of its sealed tokens (expiry, refresh token and when it was issued; never a token) — the
filters (tenant globs, status words), and the report they make. `state list` and `state show` assess through the
same function, so every command says the same word. Must not: print, read the clock or the environment itself, or
write anything but what a refresh records.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING

from reconciler.app.keys import no_note, state_key
from reconciler.app.workspace import Workspace, open_backend, read_root
from reconciler.errors import ReconcilerError
from reconciler.state.model import InstallationRecord, PartnerRecord, StateDocument
from reconciler.status import (
    DEFAULT_WINDOW,
    PartnerFacts,
    Status,
    StatusReport,
    StatusRow,
    TokenFacts,
    installation_status,
    migration_of,
)

if TYPE_CHECKING:
    from reconciler.addresses import Globs
    from reconciler.catalog import Catalog
    from reconciler.refresh import RefreshSettings
    from reconciler.state.backend import StateBackend
    from reconciler.tokens.model import TokenTimes
    from reconciler.tokens.vault import Vault

__all__ = ["assess", "partner_facts", "read_report"]


def read_report(
    ws: Workspace,
    *,
    window: dt.timedelta = DEFAULT_WINDOW,
    tenants: Globs | None = None,
    words: Collection[str] = (),
    refresh: RefreshSettings | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
    lock_timeout: float = 0.0,
) -> StatusReport:
    """The status report of the workspace's state. With `refresh`, every authorized installation (of the tenants
    asked for) is refreshed when due and checked at the provider first, and what was found recorded — the only
    write, and the only network use."""
    if refresh is not None:
        from reconciler.addresses import Globs, Selection
        from reconciler.app.refresh import run_refresh
        from reconciler.app.request import PlanScope

        targets = [f"installation.{glob}.*" for glob in tenants.patterns] if tenants is not None else []
        scope = PlanScope(Selection.of(tuple(targets), ()), Globs.of(()), Globs.of(()))
        run_refresh(ws, scope=scope, settings=refresh, progress=progress, lock_timeout=lock_timeout, record=True)
    root = read_root(ws)
    backend = open_backend(ws, root)
    doc = backend.read()
    now = ws.clock()
    report = StatusReport(now, ws.environment_name, window, [], state_exists=doc is not None)
    if doc is None:
        return report

    def wanted(record: InstallationRecord) -> bool:
        return tenants is None or tenants.match(record.tenant)

    picked = {a: r for a, r in doc.resources.items() if isinstance(r, InstallationRecord)}
    report.total = len(picked)
    if tenants is not None:
        from reconciler.errors import UsageError

        missing = tenants.unmatched({r.tenant for r in picked.values()})
        if missing:
            raise UsageError(f"--tenant {missing[0]!r} matches no tenant in state",
                             hint="`reconciler state list` shows what is recorded")
    picked = {a: r for a, r in picked.items() if wanted(r)}
    statuses, note = assess(ws, backend, doc, picked, window=window, now=now)
    if note:
        report.notes.append(note)
    facts = partner_facts(doc)
    report.rows = [
        StatusRow(address, record, statuses[address], facts.get(record.partner),
                  migration_of(record, statuses[address], facts, now))
        for address, record in sorted(picked.items(), key=lambda item: (item[1].tenant, item[0]))
        if not words or statuses[address].word in words
    ]
    return report


def assess(
    ws: Workspace,
    backend: StateBackend,
    doc: StateDocument,
    records: dict[str, InstallationRecord],
    *,
    window: dt.timedelta = DEFAULT_WINDOW,
    now: dt.datetime,
) -> tuple[dict[str, Status], str]:
    """Each of `records`' status (and a note when the tokens could not be opened: no state key), derived from what
    state recorded, its partner's facts and the facts of its stored tokens (a refresh stores rotated tokens in the
    credential record only, never in the document). Without a state key the expiry the last apply recorded stands
    in. Nothing is written; no secret leaves the vault."""
    from reconciler.crypto import KeyMismatchError
    from reconciler.tokens.vault import Vault

    vault, mismatch, note = None, None, ""
    held = {a: r.client_id for a, r in records.items() if r.status == "authorized" and not r.platform_holds_tokens}
    if held:
        try:
            key = state_key(ws, read_root(ws), backend, on_key_created=no_note, create=False)
        except KeyMismatchError as exc:  # a key, but not the one: the tokens cannot be read, and the status says so
            key, mismatch = None, exc
        except ReconcilerError:
            key = None
            note = "no state key: token expiries are as the last apply recorded them, refresh-token ages unknown"
        if key is not None:
            vault = Vault(backend.credential_store(), key, lineage=doc.lineage, environment=ws.environment_name)
    opened = _times_of(vault, held) if vault is not None else None
    tokens = {address: _token_facts(opened, address, record, mismatch) for address, record in records.items()}
    facts = partner_facts(doc)
    checks = backend.service_store().checks() if records else {}
    return {
        address: installation_status(
            record, tokens[address], now=now, partner=facts.get(record.partner), window=window,
            check=checks.get(address),
        )
        for address, record in records.items()
    }, note


def _times_of(vault: Vault, held: dict[str, str]) -> Mapping[str, TokenTimes | ReconcilerError | None]:
    """`vault.current_times_of(held)`, its records read and opened on two cores where that pays (`in_halves`)."""
    from reconciler.app.halves import in_halves

    return in_halves(list(held), lambda chunk: vault.current_times_of({a: held[a] for a in chunk}),
                     _encode_times, _decode_times)


def _encode_times(times: TokenTimes | ReconcilerError | None) -> tuple[str | None, bool, str | None] | None:
    """Token times as plain data for `in_halves` (an error is not handed over: it is met again here)."""
    if times is None:
        return None
    if isinstance(times, ReconcilerError):
        raise TypeError("an error is not handed over")
    expires, issued = times.expires_at, times.refresh_issued_at
    return (expires.isoformat() if expires else None, times.refreshable, issued.isoformat() if issued else None)


def _decode_times(plain: tuple[str | None, bool, str | None] | None) -> TokenTimes | None:
    from reconciler.tokens.model import TokenTimes

    if plain is None:
        return None
    expires, refreshable, issued = plain
    return TokenTimes(dt.datetime.fromisoformat(expires) if expires else None, refreshable,
                      dt.datetime.fromisoformat(issued) if issued else None)


def partner_facts(doc: StateDocument, catalog: Catalog | None = None) -> dict[str, PartnerFacts]:
    """Per recorded partner: its declared client secret expiry and its flavour's refresh-token lifetimes."""
    if catalog is None:
        from reconciler.catalog.files import load_catalog

        catalog = load_catalog()
    out: dict[str, PartnerFacts] = {}
    for record in doc.resources.values():
        if not isinstance(record, PartnerRecord):
            continue
        connector = catalog.get(record.connector)
        flavour = connector.auth.get(record.auth) if connector is not None else None
        unused = fixed = None
        if flavour is not None:
            if record.app_type == "spa" and flavour.spa_refresh_token_hours:
                fixed = dt.timedelta(hours=flavour.spa_refresh_token_hours)
            elif flavour.refresh_token_unused_days:
                unused = dt.timedelta(days=flavour.refresh_token_unused_days)
        out[record.name] = PartnerFacts(record.name, record.client_secret_expires, unused, fixed, record.migrate_to)
    return out


def _token_facts(
    opened: Mapping[str, TokenTimes | ReconcilerError | None] | None,
    address: str,
    record: InstallationRecord,
    mismatch: ReconcilerError | None = None,
) -> TokenFacts | None:
    """The expiry and refreshability of the stored tokens, as the vault opened them (`opened` None: no vault to
    open them with; an error when the key at hand is not theirs: `mismatch`)."""
    if record.status != "authorized" or record.platform_holds_tokens:
        return None
    if mismatch is not None:
        return TokenFacts(error=f"stored tokens cannot be read: {mismatch.message}")
    if opened is None:
        return None
    times = opened[address]
    if isinstance(times, ReconcilerError):
        return TokenFacts(error=f"stored tokens cannot be read: {times.message}")
    if times is None:
        return TokenFacts(present=False)
    return TokenFacts(
        expires_at=times.expires_at,
        refreshable=times.refreshable,
        refresh_issued_at=times.refresh_issued_at,
    )
