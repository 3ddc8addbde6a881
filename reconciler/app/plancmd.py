"""`reconciler plan` served: a `PlanRequest` planned offline, or after a refresh (`plan --refresh`).

Owns: which of the two a request takes and what the command learns beyond the plan (partners whose client
credentials the provider rejected). Must not: print, prompt, render, or know about click.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from reconciler.app import planning
from reconciler.app.planning import PlanResult
from reconciler.app.request import PlanRequest

if TYPE_CHECKING:
    from reconciler.config.ahead import ParsedAhead

__all__ = ["PlanOutcome", "plan_request"]


@dataclass(frozen=True)
class PlanOutcome:
    result: PlanResult
    partner_faults: list[str] = field(default_factory=list)  # their installations were not re-planned


def plan_request(
    request: PlanRequest,
    *,
    ahead: ParsedAhead | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> PlanOutcome:
    """The plan `request` asks for (`ahead`: a parse-ahead worker the caller started; `progress`: of a refresh)."""
    if request.refresh is None:
        return PlanOutcome(planning.plan_config(request.workspace, request.scope, ahead=ahead))
    from reconciler.app.refresh import run_refresh

    refreshed = run_refresh(
        request.workspace,
        scope=request.scope,
        settings=request.refresh,
        progress=progress,
        lock_timeout=request.lock_timeout,
        record=False,
    )
    assert refreshed.plan is not None
    faults = sorted({f.partner for f in refreshed.findings if f.outcome == "partner" and f.partner})
    return PlanOutcome(refreshed.plan, faults)
