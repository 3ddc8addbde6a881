"""Terraform-like terminal rendering of a plan document. Pure: document in, string out; colour on request.
Every free text (reasons, warnings) is written on one line, escaped: a value recorded in state or answered by a
provider cannot forge lines of the plan."""

from __future__ import annotations

from reconciler.errors import one_line
from reconciler.plan import NOT_TARGETED
from reconciler.render.diff import attribute_lines, format_value
from reconciler.render.document import ChangeDoc, PlanDocument, by_tenant

__all__ = ["render_text", "summary_line"]

_PHRASE = {
    "create": "will be created",
    "update": "will be updated in place",
    "reauthorize": "must be re-authorized",
    "delete": "will be deleted (its tokens forgotten)",
}
_SYMBOL = {"create": "+", "update": "~", "reauthorize": "-/+", "delete": "-"}
_COLOUR = {"+": "32", "~": "33", "-/+": "35", "-": "31"}


def summary_line(doc: PlanDocument) -> str:
    s = doc.summary
    return f"Plan: {s.create} to create, {s.update} to update, {s.reauthorize} to reauthorize, {s.delete} to delete."


def unchanged_count(doc: PlanDocument) -> int:
    """No-ops that match the configuration: addresses left out by --target/--exclude are not among them."""
    return doc.summary.noop - _left_out(doc)


def _left_out(doc: PlanDocument) -> int:
    return sum(1 for c in doc.changes if c.action == "noop" and c.reasons == [NOT_TARGETED])


def unchanged_phrase(doc: PlanDocument) -> str:
    """"N resources match the configuration.", counting only the selected ones; then how many were left out."""
    count = unchanged_count(doc)
    phrase = f"{count} resource matches" if count == 1 else f"{count} resources match"
    left_out = _left_out(doc)
    tail = f" {left_out} left out by --target/--exclude." if left_out else ""
    return f"{phrase} the configuration.{tail}"


def header_line(doc: PlanDocument) -> str:
    state = doc.state
    if not state.exists:
        return f"Environment {doc.environment}: no state yet at {state.location}; everything will be created."
    return f"Environment {doc.environment}: state {state.location} (serial {state.serial})."


def render_text(doc: PlanDocument, *, color: bool = False) -> str:
    def paint(code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if color else text

    def bold(text: str) -> str:
        return paint("1", text)

    out = [header_line(doc), ""]
    changes = [c for c in doc.changes if c.action != "noop"]
    if changes:
        out += ["Reconciler will perform the following actions:", ""]
        for change in changes:
            out += _change_block(change, paint)
    pending = [c for c in doc.changes if c.pending]
    if pending:
        out.append(bold("Pending authorizations (complete them with `reconciler authorize`; --detailed-exitcode ignores them):"))
        for tenant, waiting in by_tenant(pending).items():
            out.append(f"  {tenant}:" if tenant else "  (no tenant):")
            for change in waiting:
                out.append(f"    {change.address}: {one_line(change.reasons[0])}")
                if change.link:  # the same link the Markdown plan's table and the JSON plan show
                    out.append(f"      open this link to sign in: {one_line(change.link)}")
        out.append("")
    if doc.admin_consents:
        out.append(bold("Admin consent needed first (an administrator of each tenant's directory opens its link once, "
                        "before its users sign in):"))
        for step in doc.admin_consents:
            out.append(f"  {step.tenant} (partner.{step.partner}: {', '.join(step.scopes)}):")
            out.append(f"    {one_line(step.url)}")
        out.append("")
    warnings = [f"{c.address}: {w}" for c in doc.changes for w in c.warnings] + list(doc.warnings)
    if warnings:
        out.append(paint("33", "Warnings:"))
        out += [f"  - {one_line(w)}" for w in warnings]
        out.append("")
    if changes:
        out.append(bold(summary_line(doc)))
    else:
        out.append(bold("No changes.") + f" {unchanged_phrase(doc)}")
    return "\n".join(out) + "\n"


def _deleted(change: ChangeDoc) -> str:
    """What a delete does to what the address holds: a partner and an account hold no tokens of ours; an
    installation on a platform leaves it with its account connector."""
    if change.kind == "account":
        return "will be deleted on the platform"
    if change.kind == "partner":
        return "will be deleted"
    return "will be deleted (its account connector removed)" if (change.before or {}).get("platform") else _PHRASE["delete"]


def _change_block(change: ChangeDoc, paint) -> list[str]:  # type: ignore[no-untyped-def]
    symbol = _SYMBOL[change.action]
    phrase = _deleted(change) if change.action == "delete" else _PHRASE[change.action]
    lines = [f"  # {change.address} {phrase}"]
    lines += [f"  #   {one_line(reason)}" for reason in change.reasons]
    attributes = list(attribute_lines(change))
    opening = f"{paint(_COLOUR[symbol], symbol.rjust(3))} {change.address}"
    if not attributes:
        return [*lines, opening, ""]
    lines.append(f"{opening} {{")
    width = max((len(a.key) for a in attributes), default=0)
    for attribute in attributes:
        key = attribute.key.ljust(width)
        if attribute.sign == "~":
            value = f"{format_value(attribute.old)} -> {format_value(attribute.new)}"
        else:
            value = format_value(attribute.new if attribute.sign == "+" else attribute.old)
        lines.append(f"      {paint(_COLOUR[attribute.sign], attribute.sign)} {key} = {value}")
    lines += ["    }", ""]
    return lines
