"""The state backend interface: read, write-with-serial, lock. Implementations: `local` and `postgres`.

Owns: the protocol the rest of the program codes against, and lock-holder information.
Must not: know the configuration or the plan.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import socket
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from reconciler.errors import StateLockedError
from reconciler.state.model import StateDocument
from reconciler.state.service_store import ServiceStore

__all__ = ["LockInfo", "StateBackend", "wait_for_lock"]


@dataclass(frozen=True)
class LockInfo:
    """Who holds a state lock, for the message another writer sees."""

    id: str
    operation: str
    pid: int
    host: str
    user: str
    created: str

    @classmethod
    def for_current_process(cls, operation: str, *, now: dt.datetime | None = None) -> LockInfo:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
        created = (now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds")
        return cls(str(uuid.uuid4()), operation, os.getpid(), socket.gethostname(), user, created)

    def describe(self) -> str:
        return (
            f"held by pid {self.pid} on {self.host} as {self.user} since {self.created} "
            f"(operation: {self.operation}, lock id {self.id})"
        )

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class StateBackend(Protocol):
    """Where one environment's state lives."""

    def describe(self) -> str:
        """Where the state is, as shown to the user (e.g. `state/default.json`)."""

    def read(self) -> StateDocument | None:
        """The current document, or None when no state exists yet. Never creates anything."""

    def write(
        self, doc: StateDocument, *, expected_serial: int | None, changed: set[str] | None = None
    ) -> StateDocument:
        """Persist `doc` atomically as the next serial, if the stored serial still equals `expected_serial`
        (None: no state may exist yet). `changed` names the addresses that differ from the stored document, so a
        backend may persist just those. Call with the lock held. Returns the document as written."""

    def lock(self, operation: str, *, timeout: float = 0.0) -> AbstractContextManager[LockInfo]:
        """Hold the state lock for `operation`; raise `StateLockedError` naming the holder on contention."""

    def import_document(self, doc: StateDocument) -> None:
        """Store `doc` with its own serial (moving state between backends). Lock held."""

    def force_unlock(self, lock_id: str, *, confirm_live: Callable[[str], bool] | None = None) -> str:
        """Release the lock `lock_id` whose holder is stuck; returns who held it. A backend that can end a live
        holder does so only when `confirm_live(holder)` says yes; one that cannot refuses a live holder."""

    def credential_store(self) -> Any:
        """The sealed credentials of this state."""

    def service_store(self) -> ServiceStore:
        """What the authorization service keeps beside this state: sign-in attempts and the audit log."""


def wait_for_lock(deadline: float, locked: str, holder: str, *, gone: str = "is gone") -> None:
    """Before trying a held lock again: a short pause, or — once `deadline` (time.monotonic) has passed — a
    `StateLockedError` saying what (`locked`) is held by whom."""
    now = time.monotonic()
    if now >= deadline:
        raise StateLockedError(
            f"{locked} is locked: {holder}",
            hint=f"wait and retry, pass --lock-timeout, or force-unlock if that process {gone}",
        )
    time.sleep(min(0.1, deadline - now))
