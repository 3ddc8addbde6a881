"""What a command asks of the application layer, as frozen values the CLI builds: what to plan, and a plan request.

Owns: `PlanScope` (address globs to target, exclude, replace, allow deleting) and `PlanRequest` (everything
`reconciler plan` was asked). Light on purpose (no configuration models): the CLI builds a request, and the plan
memo answers it, before anything heavy is imported. Must not: import loading, planning or state code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.addresses import EVERYTHING, NO_GLOBS, Globs, Selection
from reconciler.app.workspace import Workspace

if TYPE_CHECKING:
    from reconciler.refresh import RefreshSettings

__all__ = ["PlanRequest", "PlanScope"]


@dataclass(frozen=True)
class PlanScope:
    """What to plan: address globs to target, exclude, force re-authorization of, and allow deleting."""

    selection: Selection = EVERYTHING
    replace: Globs = NO_GLOBS
    allow_delete: Globs = NO_GLOBS

    def patterns(self) -> tuple[tuple[str, ...], ...]:
        """Every glob, by option (a key for the plan memo)."""
        return (
            self.selection.targets.patterns,
            self.selection.excludes.patterns,
            self.replace.patterns,
            self.allow_delete.patterns,
        )


@dataclass(frozen=True)
class PlanRequest:
    """`reconciler plan`, as asked: where, what, in which format, and where else the plan goes. `refresh`: check
    tokens at the provider first (None: offline); `lock_timeout` applies to that only."""

    workspace: Workspace
    scope: PlanScope = PlanScope()
    format: str = "text"
    color: bool = False
    out: Path | None = None
    split_dir: Path | None = None
    refresh: RefreshSettings | None = None
    lock_timeout: float = 0.0
    detailed_exitcode: bool = False
    fail_on_warning: bool = False  # a plan with any warning (foresight included) exits 1
