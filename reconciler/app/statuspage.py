"""The status page the authorization service serves (`GET /status`): the status report of the state for the tenants
an API key may read, as the versioned JSON document (docs/status-json.md) or the self-contained HTML page.

Owns: narrowing the report to a key's tenant globs — what the key may not read is not counted either, so `total`
is the number of installations of its tenants — and the choice of form. Must not: check a key (the service does),
call a provider or a platform (the report is read from state alone), print, or know HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from reconciler.app.status import read_report
from reconciler.app.workspace import Workspace

__all__ = ["PageFormat", "status_page"]

PageFormat = Literal["html", "json"]


def status_page(ws: Workspace, tenants: Sequence[str], form: PageFormat) -> str:
    """The page (or document) of the installations whose tenant matches one of `tenants` (globs; none: no
    installation)."""
    from reconciler.addresses import Globs
    from reconciler.render.status import render_status_json, status_document
    from reconciler.render.status_html import render_status_html

    report = read_report(ws, tenants=Globs.of(tenants))
    report.total = len(report.rows)  # installations of other tenants are not the key's to count
    document = status_document(report)
    return render_status_json(document) if form == "json" else render_status_html(document)
