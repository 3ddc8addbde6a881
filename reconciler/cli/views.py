"""One renderer table for every command that renders: a format (`text`, `json`, `markdown`) names a view, and the
view renders what the command shows — a plan document (`plan`, `show`, apply's confirmation), one state record
(`state show`), the state listing (`state list`), the audit log (`audit`).

Owns: the table (`VIEWS`) and the record and listing views (the plan views are the pure renderers in
reconciler.render). Must not: import rendering at start-up (the render modules load when a plan is rendered),
hold planning or state logic, or show token material (records hold none).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from reconciler.errors import UsageError, one_line

if TYPE_CHECKING:
    from reconciler.render.document import PlanDocument
    from reconciler.state.model import StateDocument
    from reconciler.state.service_store import AuditEntry
    from reconciler.status import Status

__all__ = ["VIEWS", "iso", "view"]


class View:
    """What a format shows; a format without a form for a kind of output says so."""

    name = ""

    def plan(self, doc: PlanDocument) -> str:
        raise UsageError(f"a plan has no {self.name} form")

    def record(self, address: str, data: Mapping[str, Any]) -> str:
        raise UsageError(f"a state record has no {self.name} form")

    def listing(self, doc: StateDocument | None, statuses: Mapping[str, Status]) -> str:
        raise UsageError(f"the state listing has no {self.name} form")

    def audit(self, entries: Sequence[AuditEntry]) -> str:
        raise UsageError(f"the audit log has no {self.name} form")


class TextView(View):
    """For a terminal (colour only when asked)."""

    name = "text"

    def __init__(self, color: bool) -> None:
        self.color = color

    def plan(self, doc: PlanDocument) -> str:
        from reconciler.render import render_text

        return render_text(doc, color=self.color)

    def record(self, address: str, data: Mapping[str, Any]) -> str:
        width = max(len(k) for k in data)
        lines = [f"# {address}"]
        for key, value in data.items():
            shown = ", ".join(value) if isinstance(value, list) else json.dumps(value) if isinstance(value, dict) else value
            lines.append(f"{key.ljust(width)}  {one_line(str(shown))}")  # recorded values forge no lines
        return "\n".join(lines) + "\n"

    def listing(self, doc: StateDocument | None, statuses: Mapping[str, Status]) -> str:
        lines = [
            f"{address}\t{_status_line(statuses[address])}" if address in statuses else f"{address}\trecorded"
            for address in (doc.resources if doc else ())
        ]
        return "".join(line + "\n" for line in lines)

    def audit(self, entries: Sequence[AuditEntry]) -> str:
        """One line an entry, in aligned columns: when (to the second, UTC), kind, actor, address, detail."""
        rows = [(e.at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), e.kind, one_line(e.actor),
                 one_line(e.address), one_line(e.detail)) for e in entries]
        widths = [max((len(row[i]) for row in rows), default=0) for i in range(4)]
        lines = ("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[4]]).rstrip()
                 for row in rows)
        return "".join(line + "\n" for line in lines)


class JsonView(View):
    """For automation: the versioned plan document (docs/plan-json.md), records and listings as JSON."""

    name = "json"

    def plan(self, doc: PlanDocument) -> str:
        from reconciler.render import render_json

        return render_json(doc)

    def record(self, address: str, data: Mapping[str, Any]) -> str:
        return json.dumps({"address": address, **data}, indent=2) + "\n"

    def listing(self, doc: StateDocument | None, statuses: Mapping[str, Status]) -> str:
        entries = [_list_entry(a, r, statuses.get(a)) for a, r in (doc.resources.items() if doc else ())]
        return json.dumps(entries, indent=2) + "\n"

    def audit(self, entries: Sequence[AuditEntry]) -> str:
        """`{"entries": [{"at", "kind", "actor", "address", "detail"}]}`, oldest first."""
        from reconciler.state.service_store import audit_to_json

        return json.dumps({"entries": [audit_to_json(e) | {"at": iso(e.at)} for e in entries]}, indent=2) + "\n"


class MarkdownView(View):
    """For a pull request comment."""

    name = "markdown"

    def plan(self, doc: PlanDocument) -> str:
        from reconciler.render import render_markdown

        return render_markdown(doc)


VIEWS: dict[str, Callable[[bool], View]] = {
    "text": TextView,
    "json": lambda color: JsonView(),
    "markdown": lambda color: MarkdownView(),
}


def view(fmt: str, *, color: bool = False) -> View:
    """The view of `fmt` (one of `VIEWS`; click's choices keep each command to the formats it offers)."""
    return VIEWS[fmt](color)


def _list_entry(address: str, record: Any, status: Status | None) -> dict[str, Any]:
    """One `state list --json` entry: names, the derived status and times — records hold no token material."""
    from reconciler.state.model import InstallationRecord

    entry: dict[str, Any] = {"address": address, "kind": record.kind, "status": status.word if status else "recorded"}
    if isinstance(record, InstallationRecord):
        entry |= {"pending": record.pending is not None, "protected": record.protected, "drift": record.drift.words if record.drift else None}
        times = record.model_dump(mode="json", include={"authorized_at"})
        if status is not None:
            entry["reason"] = status.reason
            times |= {"checked_at": iso(status.checked_at), "expires_at": iso(status.expires_at)}
        entry |= {key: value for key, value in times.items() if value is not None}
        if record.placement is not None:
            entry |= {k: v for k, v in placed_fields(record).items() if k != "granted_scopes"}
    return entry


def placed_fields(record: Any) -> dict[str, Any]:
    """Where an installation on a platform lives, flat (`state show`, `state list --json`): the platform, account,
    account connector, platform connector (id and version), authentication entry, whether the platform says it is
    authenticated; where the platform holds the tokens, granted scopes are said to be held there."""
    from reconciler.placed import HELD_BY_PLATFORM

    placement, installed = record.placement, record.account_connector
    fields: dict[str, Any] = {"platform": placement.platform, "account_id": placement.account, "auth_via": placement.auth_via}
    if installed is not None:
        fields |= installed.model_dump(mode="json", exclude_none=True)
    if record.platform_holds_tokens:
        fields["granted_scopes"] = HELD_BY_PLATFORM
    return fields


def iso(moment: dt.datetime | None) -> str | None:
    """A time as the JSON state shows it (UTC written `Z`)."""
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def _status_line(status: Status) -> str:
    """`word<TAB>reason (checked <when>)`: a status says why, and when it was last established."""
    checked = iso(status.checked_at.replace(microsecond=0)) if status.checked_at else "never"
    return f"{status.word}\t{one_line(status.reason)} (checked {checked})"
