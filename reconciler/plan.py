"""Plan types: the closed `Action` set, `ResourceChange`, `Plan`. Pure data, no behaviour beyond summaries.

Reasons are display-only text explaining an action; nothing may branch on them — except `NOT_TARGETED`, the
documented reason (docs/plan-json.md) of an address left out by --target/--exclude, which summaries leave uncounted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from reconciler.declared import DeclaredInstallation, DeclaredPartner
from reconciler.placement import DeclaredAccount

__all__ = ["NOT_TARGETED", "Action", "Plan", "ResourceChange", "StateRef"]

NOT_TARGETED = "not targeted"


class Action(str, Enum):
    """What apply will do to one address. The value is the stable name in JSON and golden files."""

    CREATE = "create"
    UPDATE = "update"
    REAUTHORIZE = "reauthorize"
    DELETE = "delete"
    NOOP = "noop"

    @property
    def symbol(self) -> str:
        return _SYMBOLS[self]


_SYMBOLS = {Action.CREATE: "+", Action.UPDATE: "~", Action.REAUTHORIZE: "-/+", Action.DELETE: "-", Action.NOOP: " "}
CHANGE_ACTIONS = (Action.CREATE, Action.UPDATE, Action.REAUTHORIZE, Action.DELETE)


@dataclass(frozen=True)
class ResourceChange:
    """One address: the action, why (display only), warnings, the attributes before and after (display), and
    the declaration it moves to."""

    address: str
    action: Action
    reasons: tuple[str, ...]
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    warnings: tuple[str, ...] = ()
    pending: bool = False
    # What the address moves to — the declaration apply carries out (secrets by reference); None for a delete.
    target: DeclaredPartner | DeclaredAccount | DeclaredInstallation | None = None

    @property
    def kind(self) -> str:
        return self.address.split(".", 1)[0]

    @property
    def tenant(self) -> str | None:
        parts = self.address.split(".")
        return parts[1] if parts[0] in ("installation", "account") else None


@dataclass(frozen=True)
class StateRef:
    """The state a plan was made against: None lineage means no state existed."""

    location: str
    lineage: str | None = None
    serial: int | None = None

    @property
    def exists(self) -> bool:
        return self.lineage is not None


@dataclass(frozen=True)
class Plan:
    environment: str
    state: StateRef
    changes: tuple[ResourceChange, ...] = field(default_factory=tuple)

    def summary(self) -> dict[str, int]:
        counts = {action.value: 0 for action in Action}
        pending = 0
        for change in self.changes:
            counts[change.action.value] += 1
            pending += change.pending
        return {**counts, "pending": pending}

    @property
    def has_changes(self) -> bool:
        return any(change.action is not Action.NOOP for change in self.changes)
