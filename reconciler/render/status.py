"""The status report as a document (JSON, docs/status-json.md) and as text and Markdown.

Owns: the versioned status document built from a `StatusReport` (every other form is rendered from it, so the
forms cannot disagree), the summary (counts per status word, per partner), the terminal table, and the Markdown
comment in parts that each fit a GitHub comment. Must not: read state, the clock or the environment; show token
material (the report holds none).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from reconciler.durations import format_duration
from reconciler.errors import one_line
from reconciler.jsontext import dumps_indented
from reconciler.status import STALE_AFTER, STATUS_WORDS

if TYPE_CHECKING:
    from reconciler.status import StatusReport, StatusRow

__all__ = [
    "STATUS_FORMAT_VERSION",
    "render_status_json",
    "render_status_markdown_parts",
    "render_status_text",
    "status_document",
]

STATUS_FORMAT_VERSION = "1.0"
COMMENT_LIMIT = 65536  # GitHub's maximum comment body, in characters
_PROGRESS = ("migrated", "pending", "failed")
RICH_ROWS = 500  # a terminal gets a boxed table up to this many rows; more are aligned columns (fast at 10,000)
_MARK = {"healthy": "✅", "expiring": "⏳", "needs-reauthorization": "🔑", "pending": "🕓", "error": "❌"}


_ZERO = dt.timedelta()


def _iso(moment: dt.datetime | None) -> str | None:
    """`2026-12-04T14:36:50Z` (what `isoformat(timespec="seconds")` writes in UTC, formatted directly: a document
    holds several per installation)."""
    if not moment:
        return None
    utc = moment if moment.utcoffset() == _ZERO else moment.astimezone(dt.UTC)
    fields = (utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second)
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % fields  # noqa: UP031 - twice as fast as format specifiers here


def status_document(report: StatusReport) -> dict[str, Any]:
    """The versioned document: summary first, then one entry per installation shown (tenant, then address)."""
    rows = [_entry(row, report.generated_at) for row in report.rows]
    summary = dict.fromkeys(STATUS_WORDS, 0)
    partners: dict[str, dict[str, int]] = {}
    migrations: dict[tuple[str, str], dict[str, int]] = {}
    for row in rows:
        summary[row["status"]] += 1
        counts = partners.setdefault(row["partner"], dict.fromkeys(STATUS_WORDS, 0))
        counts[row["status"]] += 1
        moving = row["migration"]
        if moving is not None:
            progress = migrations.setdefault((moving["from"], moving["to"]), dict.fromkeys(_PROGRESS, 0))
            progress[moving["progress"]] += 1
    return {
        "format_version": STATUS_FORMAT_VERSION,
        "generated_at": _iso(report.generated_at),
        "environment": report.environment,
        "window": format_duration(report.window),
        "state_exists": report.state_exists,
        "total": report.total,
        "shown": len(rows),
        "summary": summary,
        "partners": dict(sorted(partners.items())),
        "migrations": [{"from": source, "to": target, **counts} for (source, target), counts in sorted(migrations.items())],
        "notes": list(report.notes),
        "installations": rows,
    }


def _entry(row: StatusRow, now: dt.datetime) -> dict[str, Any]:
    record, status = row.record, row.status
    placement = record.placement
    held_by_platform = record.platform_holds_tokens
    declared = sorted(record.scopes)
    granted = None if held_by_platform or record.status != "authorized" else sorted(record.granted_scopes)
    checked = status.checked_at
    refresh = status.refresh
    pending = record.pending
    return {
        "address": row.address,
        "tenant": record.tenant,
        "name": record.name,
        "partner": record.partner,
        "connector": record.connector,
        "platform": placement.platform if placement is not None else "local",
        "auth": record.auth,
        "status": status.word,
        "reason": status.reason,
        "next_step": status.next_step or None,
        "checked_at": _iso(checked),
        # A pending authorization waits for its tenant: no check establishes it, so it cannot go stale.
        "stale": status.word != "pending" and (checked is None or now - checked > STALE_AFTER),
        "scopes": _scopes_entry(declared, granted),
        "access_token_expires_at": _iso(status.expires_at),
        "refresh_token": None if refresh is None else {
            "issued_at": _iso(refresh.issued_at),
            "age": format_duration(now - refresh.issued_at) if refresh.issued_at else None,
            "lifetime": format_duration(refresh.lifetime),
            "counted_from": "sign-in" if refresh.fixed else "last use",
            "lapses_at": _iso(refresh.lapses_at),
        },
        "client_secret_expires": (
            row.partner.client_secret_expires.isoformat()
            if row.partner is not None and row.partner.client_secret_expires and record.credentials_source == "partner"
            else None
        ),
        "deadline": None if status.deadline is None else {"what": status.deadline.what, "at": _iso(status.deadline.at)},
        "pending": None if pending is None else {  # link: what the tenant opens (the service's, else the provider's)
            "since": _iso(pending.since), "expires_at": _iso(pending.expires_at),
            "link": pending.link or pending.authorize_url,
        },
        "authorized_at": _iso(record.authorized_at),
        "authorized_by": record.authorized_by,
        "migration": None if row.migration is None else {
            "from": row.migration.source, "to": row.migration.target, "progress": row.migration.progress,
        },
    }


def _scopes_entry(declared: list[str], granted: list[str] | None) -> dict[str, Any]:
    if granted is None or granted == declared:  # nothing missing or extra (the usual case: no sets to build)
        return {"declared": declared, "granted": granted, "missing": [], "extra": []}
    return {"declared": declared, "granted": granted, "missing": sorted(set(declared) - set(granted)),
            "extra": sorted(set(granted) - set(declared))}


def render_status_json(document: Mapping[str, Any]) -> str:
    return dumps_indented(document, ensure_ascii=False) + "\n"


# -- text --------------------------------------------------------------------------------------------------------


def summary_line(document: Mapping[str, Any]) -> str:
    """`12 installations: 9 healthy, 1 expiring, ...` (words with no installation left out)."""
    shown = document["shown"]
    counts = ", ".join(f"{n} {word}" for word, n in document["summary"].items() if n)
    noun = "installation" if shown == 1 else "installations"
    of = f" (of {document['total']} in state)" if document["total"] != shown else ""
    return f"{shown} {noun}{of}" + (f": {counts}" if counts else "")


_MINUTE, _HOUR, _TWO_DAYS = dt.timedelta(minutes=1), dt.timedelta(hours=1), dt.timedelta(days=2)


def _ago(moment: str | None, now: dt.datetime) -> str:
    if moment is None:
        return "never"
    span = now - dt.datetime.fromisoformat(moment)
    if span < _MINUTE:
        return "just now"
    if span < _HOUR:
        return f"{int(span.total_seconds() // 60)}m ago"
    if span < _TWO_DAYS:
        return f"{int(span.total_seconds() // 3600)}h ago"
    return f"{span.days}d ago"


def _checked(entry: Mapping[str, Any], now: dt.datetime) -> str:
    text = _ago(entry["checked_at"], now)
    return text + (" (stale)" if entry["stale"] else "")


def _expires(entry: Mapping[str, Any]) -> str:
    deadline = entry["deadline"]
    if deadline is not None:
        return f"{deadline['what']} {deadline['at']}"
    return entry["access_token_expires_at"] or "-"


def _scopes(entry: Mapping[str, Any]) -> str:
    scopes = entry["scopes"]
    if scopes["granted"] is None:
        return ", ".join(scopes["declared"]) + (" (held by the platform)" if entry["platform"] != "local" else "")
    text = ", ".join(scopes["granted"]) or "none"
    if scopes["missing"]:
        text += f" (missing {', '.join(scopes['missing'])})"
    return text


_COLUMNS = ("TENANT", "ADDRESS", "STATUS", "WHY", "EXPIRES", "CHECKED", "NEXT")


def _cells(entry: Mapping[str, Any], now: dt.datetime) -> tuple[str, ...]:
    return tuple([one_line(str(cell)) for cell in (
        entry["tenant"], entry["address"], entry["status"], entry["reason"], _expires(entry), _checked(entry, now),
        entry["next_step"] or "-",
    )])


def render_status_text(document: Mapping[str, Any], *, terminal: bool, color: bool = False, width: int = 160) -> str:
    """A summary, per-partner counts, then the installations by tenant: a table on a terminal (rich), aligned
    plain columns when piped."""
    now = dt.datetime.fromisoformat(document["generated_at"])
    lines = [(f"Status of environment {document['environment']} at {document['generated_at']} "
             f"(expiring: within {document['window']})"), summary_line(document)]
    for partner, counts in document["partners"].items():
        shown = ", ".join(f"{n} {word}" for word, n in counts.items() if n)
        lines.append(f"  partner {one_line(partner)}: {shown}")
    lines += [f"  {_migration_line(m)}" for m in document["migrations"]]
    lines += [f"Note: {one_line(note)}" for note in document["notes"]]
    if not document["state_exists"]:
        lines.append("There is no state yet: `reconciler apply` records installations.")
    entries = document["installations"]
    if not entries:
        return "\n".join(lines) + "\n"
    rows = [_cells(entry, now) for entry in entries]
    if terminal and len(rows) <= RICH_ROWS:
        return "\n".join(lines) + "\n\n" + _rich_table(rows, color=color, width=width)
    links = _links(entries, now)
    return "\n".join([*lines, "", *_aligned([_COLUMNS, *rows]), *links]) + "\n"


def _aligned(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Plain columns: every cell but the last padded to its column's widest, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    line = "  ".join(f"{{:{width}}}" for width in widths) + "  {}"  # one format per row (left-aligned, as ljust)
    return [line.format(*row).rstrip() for row in rows]


def _migration_line(moving: Mapping[str, Any]) -> str:
    return (f"migration {one_line(moving['from'])} -> {one_line(moving['to'])}: {moving['migrated']} migrated, "
            f"{moving['pending']} pending, {moving['failed']} failed")


def _open_link(entry: Mapping[str, Any], now: dt.datetime) -> str | None:
    """The sign-in link of a pending authorization, while it is still valid (an expired one is reissued, not
    opened)."""
    pending = entry["pending"]
    if pending is None or not pending["link"] or dt.datetime.fromisoformat(pending["expires_at"]) <= now:
        return None
    return str(pending["link"])


def _links(entries: Sequence[Mapping[str, Any]], now: dt.datetime) -> list[str]:
    """Sign-in links of pending authorizations, per tenant (a table cell is no place for a long URL)."""
    out: list[str] = []
    tenant = None
    for entry in entries:
        link = _open_link(entry, now)
        if link is None:
            continue
        if not out:
            out += ["", "Sign-in links:"]
        if entry["tenant"] != tenant:
            tenant = entry["tenant"]
            out.append(f"  tenant {one_line(tenant)}:")
        out.append(f"    {entry['address']}  {one_line(link)}  (valid until {entry['pending']['expires_at']})")
    return out


def _rich_table(rows: Sequence[tuple[str, ...]], *, color: bool, width: int) -> str:
    import io

    from rich.console import Console
    from rich.table import Table

    styles = {"healthy": "green", "expiring": "yellow", "needs-reauthorization": "red", "pending": "cyan",
              "error": "bold red"}
    from rich.text import Text

    table = Table(show_lines=False, header_style="bold", expand=False)
    for column in _COLUMNS:
        table.add_column(column, overflow="fold")
    for row in rows:  # cells as Text: a reason is the provider's words, never markup
        status = row[2]
        table.add_row(*(Text(cell) for cell in row[:2]), Text(status, style=styles[status] if color else ""),
                      *(Text(cell) for cell in row[3:]))
    out = io.StringIO()
    Console(file=out, width=width, color_system="standard" if color else None, force_terminal=color,
            highlight=False, markup=False).print(table)
    return out.getvalue()


# -- markdown ----------------------------------------------------------------------------------------------------


_MARKUP = str.maketrans({char: "\\" + char for char in "\\`*_[]<>|"})


def _md(text: str) -> str:
    """Inline text safe in a table cell: one line, pipes and markup characters escaped."""
    return one_line(text).translate(_MARKUP)


def _title(document: Mapping[str, Any]) -> str:
    return f"### Reconciler status · environment `{_md(document['environment'])}`"


def _md_summary(document: Mapping[str, Any]) -> list[str]:
    counts = " · ".join(f"{_MARK[word]} {n} {word}" for word, n in document["summary"].items())
    lines = [f"**{_md(summary_line(document))}**", "", counts, ""]
    if document["partners"]:
        lines += ["| Partner | " + " | ".join(STATUS_WORDS) + " |", "|---|" + "---:|" * len(STATUS_WORDS)]
        lines += [f"| `{_md(p)}` | " + " | ".join(str(c[w]) for w in STATUS_WORDS) + " |"
                  for p, c in document["partners"].items()]
        lines.append("")
    lines += [f"- {_md(_migration_line(m))}" for m in document["migrations"]]
    lines += [""] if document["migrations"] else []
    lines += [f"> {_md(note)}" for note in document["notes"]]
    return lines


def _md_tenant(tenant: str, entries: Sequence[Mapping[str, Any]], now: dt.datetime) -> list[str]:
    attention = sum(1 for e in entries if e["status"] != "healthy")
    lines = [(f"<details{' open' if attention else ''}><summary>Tenant <code>{_md(tenant)}</code> · "
             f"{len(entries)} installation{'s' if len(entries) != 1 else ''}, {attention} needing attention</summary>"),
             "", "| Installation | Status | Why | Runs out | Checked | Next |", "|---|---|---|---|---|---|"]
    for e in entries:
        next_step = _md(e["next_step"] or "-")
        link = _open_link(e, now)
        if link is not None and e["status"] in ("pending", "needs-reauthorization"):
            next_step += f" · [sign-in link]({_link(link)})"
        lines.append(f"| `{_md(e['address'])}` | {_MARK[e['status']]} {e['status']} | {_md(e['reason'])} | "
                     f"{_md(_expires(e))} | {_md(_checked(e, now))} | {next_step} |")
    lines += ["", "</details>", ""]
    return lines


def _link(url: str) -> str:
    return "".join(c if c not in " \"'<>()[]\\|`" else f"%{ord(c):02X}" for c in url)


def render_status_markdown_parts(document: Mapping[str, Any], limit: int = COMMENT_LIMIT) -> list[str]:
    """The comment, in numbered parts of at most `limit` characters when it does not fit one: the summary first,
    then one collapsible section per tenant (a tenant too large for a part is split between installations)."""
    now = dt.datetime.fromisoformat(document["generated_at"])
    by_tenant: dict[str, list[Mapping[str, Any]]] = {}
    for entry in document["installations"]:
        by_tenant.setdefault(entry["tenant"], []).append(entry)
    head = _md_summary(document)
    sections = [_md_tenant(tenant, entries, now) for tenant, entries in by_tenant.items()]
    whole = "\n".join([_title(document), "", *head, *(line for s in sections for line in s)]).rstrip() + "\n"
    if len(whole) <= limit:
        return [whole]
    reserve = len(_title(document)) + 80
    room = limit - reserve
    chunks: list[list[str]] = [[*head]]
    for tenant, entries in by_tenant.items():
        for section in _fitting(tenant, entries, now, room):
            if _size(chunks[-1]) + _size(section) > room:
                chunks.append([])
            chunks[-1] += section
    count = len(chunks)
    parts = []
    for number, chunk in enumerate(chunks, start=1):
        text = "\n".join([f"{_title(document)} · part {number} of {count}", "", *chunk]).rstrip() + "\n"
        if number < count:
            text += f"\n_Continued in part {number + 1} of {count}._\n"
        parts.append(text)
    return parts


def _fitting(tenant: str, entries: Sequence[Mapping[str, Any]], now: dt.datetime, room: int) -> list[list[str]]:
    """A tenant's section, or as many sections of consecutive installations as it takes for each to fit `room`."""
    section = _md_tenant(tenant, entries, now)
    if _size(section) <= room or len(entries) == 1:
        return [section]
    half = len(entries) // 2
    return _fitting(tenant, entries[:half], now, room) + _fitting(tenant, entries[half:], now, room)


def _size(lines: Sequence[str]) -> int:
    return sum(len(line) + 1 for line in lines)
