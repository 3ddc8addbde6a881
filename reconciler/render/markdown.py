"""Pull-request comment rendering of a plan document, in the Atlantis/tfcmt manner: summary counts first, a warning
block for deletes and re-authorizations, pending authorization links as a table, one collapsible section per
tenant (partners in their own), and — for comment size limits — numbered parts. Pure: document in, strings out.

Everything is built as a list of sections, each an opening, items (a change, a table row) and a closing; the whole
comment and its parts are two ways of laying out the same sections, so they always agree. Values shown come from
user configuration: they are kept on one line, and a diff fence is always longer than any backtick run inside it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from reconciler.addresses import tenant_of
from reconciler.render.diff import attribute_lines, format_value
from reconciler.render.document import ChangeDoc, PlanDocument
from reconciler.render.text import header_line, summary_line, unchanged_count, unchanged_phrase

__all__ = ["COMMENT_LIMIT", "render_markdown", "render_markdown_parts"]

COMMENT_LIMIT = 65536  # GitHub's maximum comment body, in characters
LISTED = 20  # addresses named in the warning block before "and N more"

_SYMBOL = {"create": "+", "update": "~", "reauthorize": "-/+", "delete": "-", "noop": " "}
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")
_PENDING = re.compile(r"^authorization pending since (?P<since>\S+) \(link valid until (?P<until>\S+)\)$")
_LINK_UNSAFE = " \"'<>()[]\\|`"


@dataclass(frozen=True)
class _Section:
    """Lines that open the section, its items (never split unless one alone outgrows a part), lines that close it.

    `reopening` starts the section again in a later part; `keep_together` moves a section that fits in a part by
    itself to the next part rather than splitting it."""

    opening: tuple[str, ...]
    items: tuple[tuple[str, ...], ...]
    closing: tuple[str, ...] = ()
    reopening: tuple[str, ...] | None = None
    keep_together: bool = False

    def lines(self) -> list[str]:
        return [*self.opening, *(line for item in self.items for line in item), *self.closing]


def render_markdown(doc: PlanDocument, links: Mapping[str, str] | None = None) -> str:
    """The whole comment as one string. `links` (address -> URL) are authorization links just issued (apply in
    defer mode); they join the pending authorizations table."""
    return _text([_title(doc), "", *(line for section in _sections(doc, links) for line in section.lines())])


def render_markdown_parts(
    doc: PlanDocument, limit: int = COMMENT_LIMIT, links: Mapping[str, str] | None = None
) -> list[str]:
    """The comment in numbered parts of at most `limit` characters each; just `[render_markdown(doc)]` when that
    fits. The summary and warnings come first, in part 1; a tenant section that fits in a part is never split, a
    larger one is split between changes, its `<details>` and code fence closed and reopened around the break.
    A `limit` too small to hold a section's opening and closing lines raises ValueError."""
    whole = render_markdown(doc, links)
    if len(whole) <= limit:
        return [whole]
    widest = 10 ** 6 - 1  # header and footer space is reserved for part numbers up to this
    reserve = _size([_part_title(doc, widest, widest), ""]) + len(_continued(widest, widest)) + 2
    bodies = _pack(_sections(doc, links), limit - reserve)
    count = len(bodies)
    parts = []
    for number, body in enumerate(bodies, start=1):
        text = _text([_part_title(doc, number, count), "", *body])
        if number < count:
            text += "\n" + _continued(number + 1, count) + "\n"
        parts.append(text)
    return parts


# -- sections ---------------------------------------------------------------------------------------------------


def _sections(doc: PlanDocument, links: Mapping[str, str] | None) -> list[_Section]:
    sections = [_Section((), (_summary(doc),))]
    alert = _alert(doc)
    if alert:
        sections.append(_Section((), (tuple(alert),)))
    warnings = [f"{_code(c.address)}: {_inline(w)}" for c in doc.changes for w in c.warnings]
    warnings += [_inline(w) for w in doc.warnings]
    if warnings:
        sections.append(_Section(("**Warnings**", ""), tuple((f"- {w}",) for w in warnings), ("",)))
    sections += _admin_consent_sections(doc)
    sections += _pending_sections(doc, links or {})
    sections += _change_sections(doc)
    return sections


def _admin_consent_sections(doc: PlanDocument) -> list[_Section]:
    """One row per tenant whose directory needs an administrator's consent before its users sign in."""
    if not doc.admin_consents:
        return []
    header = ("| Tenant | Partner | Scopes | Link |", "| --- | --- | --- | --- |")
    return [_Section(
        ("**Admin consent needed first** (an administrator of each tenant's directory opens its link once)", "",
         *header),
        tuple(
            (f"| {_cell(s.tenant)} | {_table_escape(_code(s.partner))} | {_cell(', '.join(s.scopes))} | {_link(s.url, 'admin consent')} |",)
            for s in doc.admin_consents
        ),
        ("",),
        reopening=("**Admin consent needed first** (continued)", "", *header),
    )]


def _title(doc: PlanDocument) -> str:
    return f"### Reconciler plan · environment {_code(doc.environment)}"


def _part_title(doc: PlanDocument, number: int, count: int) -> str:
    return f"{_title(doc)} · part {number} of {count}"


def _continued(number: int, count: int) -> str:
    return f"_Continued in part {number} of {count}._"


def _summary(doc: PlanDocument) -> tuple[str, ...]:
    if doc.has_changes:
        counts = f"**{summary_line(doc)}** ({unchanged_count(doc)} unchanged)"
    else:
        counts = f"**No changes.** {unchanged_phrase(doc)}"
    return (counts, "", f"_{_inline(header_line(doc))}_", "")


def _alert(doc: PlanDocument) -> list[str]:
    """The GitHub warning block: what is deleted and what must be re-authorized, naming at most LISTED of each."""
    deleted = [c.address for c in doc.changes if c.action == "delete"]
    reauthorized = [c.address for c in doc.changes if c.action == "reauthorize"]
    paragraphs = []
    if deleted:
        paragraphs.append([
            f"> **This plan deletes {_count(len(deleted), 'resource')}:** {_listed(deleted)}.",
            "> Their tokens are forgotten; re-creating them needs a new sign-in.",
        ])
    if reauthorized:
        paragraphs.append([
            f"> **{_count(len(reauthorized), 'installation')} must be re-authorized:** {_listed(reauthorized)}.",
            "> Each needs a user to sign in again; a deferred one keeps its current authorization until then.",
        ])
    if not paragraphs:
        return []
    lines = ["> [!WARNING]"]
    for index, paragraph in enumerate(paragraphs):
        lines += ([">"] if index else []) + paragraph
    return [*lines, ""]


def _listed(addresses: Sequence[str]) -> str:
    shown = ", ".join(_code(a) for a in addresses[:LISTED])
    return shown + (f" and {len(addresses) - LISTED} more" if len(addresses) > LISTED else "")


def _pending_sections(doc: PlanDocument, links: Mapping[str, str]) -> list[_Section]:
    """One row per pending authorization in the plan and per link passed in (a link passed in wins), by tenant."""
    rows: dict[str, tuple[str, str, str]] = {}  # address -> (tenant, link cell, valid until)
    for change in doc.changes:
        if not change.pending:
            continue
        reason = change.reasons[0] if change.reasons else "authorization pending"
        match = _PENDING.match(reason)
        if match and change.link:
            rows[change.address] = (change.tenant or "", _link(change.link), match["until"])
        elif match:  # display only: the document carries the expiry inside its reason text
            rows[change.address] = (change.tenant or "", f"_not stored in the plan (pending since {match['since']})_", match["until"])
        else:
            rows[change.address] = (change.tenant or "", f"_{_cell(reason)}_", "—")
    for address, url in links.items():
        tenant, _, until = rows.get(address, (tenant_of(address), "", "—"))
        rows[address] = (tenant, _link(url), until)
    if not rows:
        return []
    header = ("| Tenant | Address | Link | Valid until |", "| --- | --- | --- | --- |")
    ranks = _first(rows)
    ordered = sorted(rows.items(), key=lambda item: ranks[item[1][0]])  # stable: plan order within a tenant
    table = _Section(
        ("**Pending authorizations**", "", *header),
        tuple(
            (f"| {_cell(tenant)} | {_table_escape(_code(address))} | {link} | {_cell(until)} |",)
            for address, (tenant, link, until) in ordered
        ),
        ("",),
        reopening=("**Pending authorizations** (continued)", "", *header),
    )
    sections = [table]
    if any(address not in links for address in rows):
        note = (
            "_Plans do not store authorization links: `reconciler authorize ADDRESS` completes a pending "
            "authorization, `reconciler authorize --reissue ADDRESS` issues a new link._"
        )
        sections.append(_Section((), ((note, ""),)))
    return sections


def _first(rows: Mapping[str, tuple[str, str, str]]) -> dict[str, int]:
    """Each tenant's rank by its first row: rows are grouped by tenant in the order tenants first appear."""
    ranks: dict[str, int] = {}
    for tenant, _, _ in rows.values():
        ranks.setdefault(tenant, len(ranks))
    return ranks


def _change_sections(doc: PlanDocument) -> list[_Section]:
    """One `<details>` per tenant in plan order, and one for all partners (created, changed or deleted)."""
    groups: dict[str, list[ChangeDoc]] = {}
    for change in doc.changes:
        if change.action != "noop" or change.pending:
            groups.setdefault(change.tenant or "", []).append(change)
    sections = []
    for group, changes in groups.items():
        items = tuple(tuple(_change_lines(change)) for change in changes)
        fence = _fence(line for item in items for line in item)
        title = f"tenant <code>{html.escape(group)}</code>" if group else "partners"
        summary = f"<b>{title}</b> — {_counts(changes)}"
        sections.append(
            _Section(
                (f"<details><summary>{summary}</summary>", "", f"{fence}diff"),
                items,
                (fence, "", "</details>", ""),
                reopening=(f"<details><summary>{summary} (continued)</summary>", "", f"{fence}diff"),
                keep_together=True,
            )
        )
    return sections


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
    lines = [f"{_SYMBOL[change.action]} {change.address}" if change.action != "noop" else f"  {change.address}"]
    lines += [f"#   {reason}" for reason in change.reasons]
    for attribute in attribute_lines(change):
        if attribute.sign == "~":
            value = f"{format_value(attribute.old)} -> {format_value(attribute.new)}"
            lines.append(f"!     {attribute.key} = {value}")
        else:
            value = format_value(attribute.new if attribute.sign == "+" else attribute.old)
            lines.append(f"{attribute.sign}     {attribute.key} = {value}")
    return [_one_line(line) for line in lines]


# -- packing into parts -----------------------------------------------------------------------------------------


def _pack(sections: Sequence[_Section], capacity: int) -> list[list[str]]:
    """Lay sections out into part bodies of at most `capacity` characters (each line counted with its newline)."""
    parts: list[list[str]] = [[]]
    used = 0

    def new_part() -> None:
        nonlocal used
        parts.append([])
        used = 0

    for section in sections:
        closing = _size(section.closing)
        reopening = section.reopening if section.reopening is not None else section.opening
        if section.keep_together and used and used + _size(section.lines()) > capacity >= _size(section.lines()):
            new_part()
        opened = False  # the section is open in the current part
        started = False  # the section has been opened in some part
        room = capacity - max(_size(section.opening), _size(reopening)) - closing
        if room < 1:
            raise ValueError(f"a part of {capacity} characters cannot hold a section's opening and closing")
        for piece in (chunk for item in section.items for chunk in _chunks(item, room)):
            head: Sequence[str] = () if opened else (reopening if started else section.opening)
            if used + _size(head) + _size(piece) + closing > capacity and parts[-1]:
                if opened:
                    parts[-1] += section.closing
                new_part()
                opened, head = False, reopening
            parts[-1] += [*head, *piece]
            used += _size(head) + _size(piece)
            opened = started = True
        if opened:
            parts[-1] += section.closing
            used += closing
    return [body for body in parts if body]


def _chunks(item: Sequence[str], room: int) -> list[list[str]]:
    """An item as one chunk when it fits in `room`, else split between lines; a line longer than a whole part
    (which configuration limits make impossible in practice) is cut short rather than breaking the limit."""
    if _size(item) <= room:
        return [list(item)]
    chunks: list[list[str]] = [[]]
    used = 0
    for line in item:
        if len(line) + 1 > room:
            line = line[: max(room - 2, 0)] + "…"
        if used + len(line) + 1 > room:
            chunks.append([])
            used = 0
        chunks[-1].append(line)
        used += len(line) + 1
    return [chunk for chunk in chunks if chunk]


def _size(lines: Sequence[str]) -> int:
    return sum(len(line) + 1 for line in lines)


def _text(lines: Sequence[str]) -> str:
    return "\n".join(lines).rstrip("\n") + "\n"


# -- escaping ---------------------------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    """Control characters (line breaks above all) shown escaped, so a value never starts a line of its own."""
    return _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _inline(text: str) -> str:
    """Text placed in Markdown outside code: one line, no raw HTML."""
    return html.escape(_one_line(text), quote=False)


def _cell(text: str) -> str:
    return _table_escape(_inline(text))


def _table_escape(markdown: str) -> str:
    """A pipe escaped so it cannot end a table cell (GitHub honours the escape inside code spans too)."""
    return markdown.replace("|", "\\|")


def _code(text: str) -> str:
    """Inline code whose delimiter is longer than any backtick run inside it."""
    text = _one_line(text)
    ticks = "`" * (_longest_backtick_run([text]) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _fence(lines) -> str:  # type: ignore[no-untyped-def]
    """A code fence no line inside can close: three backticks, or one more than the longest run in the lines."""
    return "`" * max(3, _longest_backtick_run(lines) + 1)


def _longest_backtick_run(lines) -> int:  # type: ignore[no-untyped-def]
    return max((len(run) for line in lines for run in re.findall(r"`+", line)), default=0)


def _link(url: str, label: str = "sign in") -> str:
    """A Markdown link for an http(s) URL (characters Markdown or tables would take as syntax percent-encoded);
    anything else is shown as code, never as a clickable link."""
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        return _code(url)
    safe = "".join(chr(c) for c in range(33, 127) if chr(c) not in _LINK_UNSAFE)
    return f"[{label}]({quote(_one_line(url), safe=safe)})"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
