"""The state commands: list and show statuses, `state rm`, `state mv`, `state pull`, `state push`, `force-unlock`,
and reading the service's audit log (`audit`).

Owns: what each state command changes, under the state lock, and an installation's status as the listing shows
it (derived from the record and its stored tokens' expiry). Must not: print, prompt, read the clock or the
environment itself, reveal token material, or know about click.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.addresses import Globs, Selection
from reconciler.app.keys import no_note, state_key
from reconciler.app.workspace import Workspace, locked_state, open_backend, read_root
from reconciler.errors import UsageError
from reconciler.state.backend import StateBackend
from reconciler.state.local import LocalBackend
from reconciler.state.model import InstallationRecord, StateDocument
from reconciler.status import Status
from reconciler.tokens.model import SealedRecord
from reconciler.tokens.store import CredentialStore, copy_record

if TYPE_CHECKING:
    from reconciler.state.service_store import AuditEntry

__all__ = [
    "StateCopy", "force_unlock", "read_audit", "read_state", "read_statuses", "state_mv", "state_pull", "state_push",
    "state_rm",
]


def read_state(ws: Workspace) -> StateDocument | None:
    """The recorded state of the workspace (needs no secrets, except a shared backend's DSN)."""
    return open_backend(ws, read_root(ws)).read()


def read_audit(ws: Workspace, since: dt.timedelta | None = None) -> list[AuditEntry]:
    """The audit log beside the workspace's state (token reads and completions: who, what, when), oldest first;
    with `since`, only the entries of that last stretch of time. Needs no state key; no log yet reads as empty."""
    store = open_backend(ws, read_root(ws)).service_store()
    return store.audit(since=None if since is None else ws.clock() - since)


def read_statuses(ws: Workspace) -> tuple[StateDocument | None, dict[str, Status]]:
    """The recorded state with each installation's status, as `reconciler status` derives it (one rule for every
    command). Nothing is written; no secret leaves the vault."""
    from reconciler.app.status import assess

    backend = open_backend(ws, read_root(ws))
    doc = backend.read()
    if doc is None:
        return None, {}
    records = {a: r for a, r in doc.resources.items() if isinstance(r, InstallationRecord)}
    return doc, assess(ws, backend, doc, records, now=ws.clock())[0]


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
    backend = open_backend(ws, read_root(ws))
    with locked_state(backend, "state rm", timeout=lock_timeout, missing="there is no state yet") as doc:
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
    root = read_root(ws)
    backend = open_backend(ws, root)
    missing = f"{old} is not an installation in state"
    with locked_state(backend, "state mv", timeout=lock_timeout, missing=missing) as doc:
        record = doc.resources.get(old)
        if not isinstance(record, InstallationRecord):
            raise UsageError(missing)
        if new in doc.resources:
            raise UsageError(f"{new} is already in state")
        key = state_key(ws, root, backend, on_key_created=no_note)
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
    source = open_backend(ws, read_root(ws))
    target = LocalBackend(directory, ws.environment_name)
    with locked_state(source, "state pull", timeout=lock_timeout, missing=f"there is no state at {source.describe()}"):
        return _copy_state(source, target, lock_timeout)


def state_push(ws: Workspace, directory: Path, *, lock_timeout: float) -> StateCopy:
    """Copy local state (document and sealed credentials) into the configured backend, keeping lineage and serial.
    Refused when the backend holds another lineage, a newer serial, or the same serial with other contents."""
    source = LocalBackend(directory, ws.environment_name)
    target = open_backend(ws, read_root(ws))
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
    return open_backend(ws, read_root(ws)).force_unlock(lock_id, confirm_live=confirm_live)
