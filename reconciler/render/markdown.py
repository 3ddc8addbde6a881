"""Pull-request comment rendering of a plan document: summary first, warnings, one collapsible section per
tenant (partners in their own). Pure: document in, string out."""

from __future__ import annotations

from itertools import groupby

from reconciler.render.diff import attribute_lines, format_value
from reconciler.render.document import ChangeDoc, PlanDocument
from reconciler.render.text import header_line, summary_line

__all__ = ["render_markdown"]

_SYMBOL = {"create": "+", "update": "~", "reauthorize": "-/+", "delete": "-", "noop": " "}


def render_markdown(doc: PlanDocument) -> str:
    out = [f"### Reconciler plan · environment `{doc.environment}`", ""]
    if doc.has_changes:
        out.append(f"**{summary_line(doc)}** ({doc.summary.noop} unchanged)")
    else:
        out.append(f"**No changes.** {doc.summary.noop} resources match the configuration.")
    out += ["", f"_{header_line(doc)}_", ""]
    deleted = [c.address for c in doc.changes if c.action == "delete"]
    if deleted:
        listed = ", ".join(f"`{a}`" for a in deleted[:20]) + (f" and {len(deleted) - 20} more" if len(deleted) > 20 else "")
        out += [
            "> [!WARNING]",
            f"> **This plan deletes {len(deleted)} resource{'s' if len(deleted) != 1 else ''}:** {listed}.",
            "> Their tokens are forgotten; re-creating them needs a new sign-in.",
            "",
        ]
    reauth = [c.address for c in doc.changes if c.action == "reauthorize"]
    if reauth:
        out += [f"> [!NOTE]\n> {len(reauth)} installation(s) must be re-authorized (a user signs in again).", ""]
    warnings = [f"`{c.address}`: {w}" for c in doc.changes for w in c.warnings] + list(doc.warnings)
    if warnings:
        out += ["**Warnings**", ""] + [f"- {w}" for w in warnings] + [""]
    changes = [c for c in doc.changes if c.action != "noop" or c.pending]
    for group, items in groupby(changes, key=lambda c: c.tenant or ""):
        section = list(items)
        title = f"tenant <code>{group}</code>" if group else "partners"
        out += [f"<details><summary><b>{title}</b> — {_counts(section)}</summary>", "", "```diff"]
        for change in section:
            out += _change_lines(change)
        out += ["```", "", "</details>", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def _counts(changes: list[ChangeDoc]) -> str:
    parts = []
    for action in ("create", "update", "reauthorize", "delete"):
        n = sum(1 for c in changes if c.action == action)
        if n:
            parts.append(f"{n} to {action}")
    pending = sum(1 for c in changes if c.pending)
    if pending:
        parts.append(f"{pending} pending")
    return ", ".join(parts)


def _change_lines(change: ChangeDoc) -> list[str]:
    lines = [f"{_SYMBOL[change.action]} {change.address}".rstrip() if change.action != "noop" else f"  {change.address}"]
    lines += [f"#   {reason}" for reason in change.reasons]
    for attribute in attribute_lines(change):
        if attribute.sign == "~":
            value = f"{format_value(attribute.old)} -> {format_value(attribute.new)}"
            lines.append(f"!     {attribute.key} = {value}")
        else:
            value = format_value(attribute.new if attribute.sign == "+" else attribute.old)
            lines.append(f"{attribute.sign}     {attribute.key} = {value}")
    return lines
