"""The plan memo around `reconciler plan`: a request answered from the memo, or a computed plan's output kept.

Owns: when the memo is used (the parse cache on; offline; no --out, no --split-dir) and asking the state for
the digests of the files it read, through the memo's own interface (`reconciler.memo.StateFiles`: local state
offers it, a shared backend does not, and is never memoised). Must not: import loading, planning or state code
(a hit runs in the time of a few file reads), print, or know about click.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reconciler.app.request import PlanRequest

if TYPE_CHECKING:
    from reconciler.app.planning import PlanResult
    from reconciler.memo import PlanMemo

__all__ = ["open_memo", "remember"]


def open_memo(request: PlanRequest) -> PlanMemo | None:
    """The memo entry for `request` (None: the memo does not apply to it)."""
    ws = request.workspace
    if not ws.cache or ws.refresh_catalog or request.refresh is not None or request.out is not None or request.split_dir is not None:
        return None
    if request.fail_on_warning:  # the memo keeps the output, not how many warnings it holds
        return None
    from reconciler.memo import PlanMemo

    return PlanMemo(
        config_dir=ws.config_dir,
        environment=ws.environment,
        environ=ws.environ,
        options=request.scope.patterns(),
        output_format=request.format,
        color=request.color,
    )


def remember(memo: PlanMemo, result: PlanResult, output: str) -> None:
    """Keep `output`, the rendered `result`, with the digests of the state files as they were read. Not on a
    platform: its plan also depends on the platform's connector list and on secret values (a ClientSecret pushed
    again when its value changes), which the memo does not record."""
    from reconciler.memo import StateFiles

    if result.loaded.desired.platform is not None:
        return
    digests = result.backend.read_digests() if isinstance(result.backend, StateFiles) else None
    if digests is not None:
        memo.store(
            manifest=result.loaded.manifest,
            state=digests,
            valid_until=result.valid_until,
            output=output,
            has_changes=result.document.has_changes,
        )
