"""The status report as one self-contained HTML page a team can publish: no script, and no external stylesheet,
font, image or frame — a Content-Security-Policy in the page forbids them, so a browser loads nothing but the page.

Owns: the page — the summary first (counts per status word, per partner), then one table per tenant — with every
value escaped, and stable hooks for automated checks (`data-status-word` and `data-count` on the summary counts,
`data-partner` on the partner rows, `data-tenant` on each tenant's section, `data-status` and `data-address` on each
installation's row). The only links are the sign-in links of pending authorizations, and only when they are http(s)
and still valid (plain anchors, no referrer). Must not: read anything but the status document
(docs/status-json.md); show token material (it holds none).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import urlsplit

from reconciler.render.status import summary_line
from reconciler.status import STATUS_WORDS

__all__ = ["CONTENT_SECURITY_POLICY", "render_status_html"]

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem;color:#1f2328;background:#fff}
h1{font-size:1.4rem;margin:0 0 .25rem}h2{font-size:1.15rem;margin:1.5rem 0 .5rem}p.meta{color:#59636e;margin:0 0 1rem}
ul.counts{display:flex;gap:.75rem;list-style:none;padding:0;margin:.5rem 0 1rem;flex-wrap:wrap}
ul.counts li{border:1px solid #d1d9e0;border-left-width:6px;border-radius:6px;padding:.5rem .9rem;min-width:8rem}
ul.counts .count{display:block;font-size:1.5rem;font-weight:600}ul.counts li.none{color:#59636e}
table{border-collapse:collapse;margin:.5rem 0 1.5rem;width:100%}caption{text-align:left;font-weight:600;padding:.25rem 0}
th,td{border:1px solid #d1d9e0;padding:.3rem .5rem;text-align:left;vertical-align:top}
thead th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
ul.counts li.healthy{border-left-color:#1a7f37}ul.counts li.expiring{border-left-color:#9a6700}
ul.counts li.pending{border-left-color:#0969da}ul.counts li.needs-reauthorization,ul.counts li.error{border-left-color:#cf222e}
td.status{font-weight:600;white-space:nowrap}td.healthy{color:#1a7f37}td.expiring{color:#9a6700}
td.needs-reauthorization,td.error{color:#cf222e}td.pending{color:#0969da}
.notes{border-left:4px solid #9a6700;padding:.25rem .75rem;background:#fff8c5}code{font-size:.9em}
"""
# The page's policy: nothing is loaded or run — no script, frame, form target, base URL, font or image; its one
# stylesheet is allowed by its hash. Served pages send it as a header too (a `<meta>` cannot set frame-ancestors).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'sha256-"
    + base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
    + "'; base-uri 'none'; form-action 'none'"
)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _time(moment: str | None, fallback: str = "-") -> str:
    return f'<time datetime="{_e(moment)}">{_e(moment)}</time>' if moment else _e(fallback)


def render_status_html(document: Mapping[str, Any]) -> str:
    """The page of a status document (docs/status-json.md)."""
    environment = _e(document["environment"])
    by_tenant: dict[str, list[Mapping[str, Any]]] = {}
    for entry in document["installations"]:
        by_tenant.setdefault(str(entry["tenant"]), []).append(entry)
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">',
        '<meta name="referrer" content="no-referrer">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Reconciler status · {environment}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        "<header>",
        f"<h1>Reconciler status · environment <code>{environment}</code></h1>",
        (f'<p class="meta">Generated {_time(document["generated_at"])} · {_e(document["shown"])} installations '
         f"shown of {_e(document['total'])} in state · expiring means a person is needed within "
         f"{_e(document['window'])}</p>"),
        "</header>",
        "<main>",
        *_summary(document),
        *_notes(document),
        *(line for index, (tenant, entries) in enumerate(by_tenant.items())
          for line in _tenant(index, tenant, entries, str(document["generated_at"] or ""))),
        "</main>",
        "</body>",
        "</html>",
    ]
    return "\n".join(out) + "\n"


def _summary(document: Mapping[str, Any]) -> list[str]:
    """Counts per status word, then per partner (a table of the same words)."""
    summary = document["summary"]
    out = [
        '<section id="summary" aria-labelledby="summary-title">',
        '<h2 id="summary-title">Summary</h2>',
        f"<p>{_e(summary_line(document))}</p>",
        '<ul class="counts">',
    ]
    for word in STATUS_WORDS:
        count = _e(summary.get(word, 0))
        none = " none" if not summary.get(word) else ""
        out.append(f'<li class="{word}{none}" data-status-word="{word}"><span class="count" data-count="{count}">'
                   f'{count}</span> <span class="word">{word}</span></li>')
    out.append("</ul>")
    partners = document["partners"]
    if partners:
        out += ['<table id="partners">', "<caption>Per partner</caption>",
                '<thead><tr><th scope="col">Partner</th>'
                + "".join(f'<th scope="col">{word}</th>' for word in STATUS_WORDS) + "</tr></thead>", "<tbody>"]
        for partner, counts in partners.items():
            cells = "".join(f'<td class="num" data-status-word="{w}">{_e(counts.get(w, 0))}</td>' for w in STATUS_WORDS)
            out.append(f'<tr data-partner="{_e(partner)}"><th scope="row"><code>{_e(partner)}</code></th>{cells}</tr>')
        out += ["</tbody>", "</table>"]
    migrations = document.get("migrations") or []
    if migrations:
        out += ['<table id="migrations">', "<caption>Migrations</caption>",
                ('<thead><tr><th scope="col">From</th><th scope="col">To</th><th scope="col">migrated</th>'
                '<th scope="col">pending</th><th scope="col">failed</th></tr></thead>'), "<tbody>"]
        for moving in migrations:
            cells = "".join(f'<td class="num" data-progress="{p}">{_e(moving[p])}</td>'
                            for p in ("migrated", "pending", "failed"))
            out.append(f"<tr><td><code>{_e(moving['from'])}</code></td><td><code>{_e(moving['to'])}</code></td>"
                       f"{cells}</tr>")
        out += ["</tbody>", "</table>"]
    out.append("</section>")
    return out


def _notes(document: Mapping[str, Any]) -> list[str]:
    notes = [_e(note) for note in document["notes"]]
    if not document["state_exists"]:
        notes.append("There is no state yet: <code>reconciler apply</code> records installations.")
    elif not document["installations"]:
        notes.append("No installation is shown.")
    if not notes:
        return []
    return ['<section class="notes" aria-label="Notes">', *(f"<p>{note}</p>" for note in notes), "</section>"]


def _tenant(index: int, tenant: str, entries: Sequence[Mapping[str, Any]], now: str) -> list[str]:
    """One tenant's section: a heading saying how many need attention, and a row per installation."""
    # An id from the name when it is one a configuration can declare; else by position ('.' is in no name).
    anchor = f"tenant-{tenant}" if _NAME.fullmatch(tenant) else f"tenant.{index}"
    attention = sum(1 for e in entries if e["status"] != "healthy")
    noun = "installation" if len(entries) == 1 else "installations"
    out = [
        f'<section class="tenant" id="{_e(anchor)}" data-tenant="{_e(tenant)}" aria-labelledby="{_e(anchor)}-title">',
        f'<h2 id="{_e(anchor)}-title">Tenant <code>{_e(tenant)}</code></h2>',
        f"<p>{len(entries)} {noun}, {attention} needing attention</p>",
        f'<table class="installations" aria-labelledby="{_e(anchor)}-title">',
        "<thead><tr>" + "".join(f'<th scope="col">{h}</th>' for h in (
            "Installation", "Partner", "Status", "Why", "Runs out", "Checked", "Next")) + "</tr></thead>",
        "<tbody>",
    ]
    out += [_row(entry, now) for entry in entries]
    out += ["</tbody>", "</table>", "</section>"]
    return out


def _row(entry: Mapping[str, Any], now: str) -> str:
    status = _e(entry["status"])
    deadline = entry["deadline"]
    if deadline:
        runs_out = f"{_e(deadline['what'])} {_time(deadline['at'])}"
    elif entry["access_token_expires_at"]:
        runs_out = f"access token {_time(entry['access_token_expires_at'])}"
    else:
        runs_out = "-"
    checked = _time(entry["checked_at"], "never") + (" (stale)" if entry["stale"] else "")
    return (
        f'<tr data-status="{status}" data-address="{_e(entry["address"])}">'
        f'<th scope="row"><code>{_e(entry["address"])}</code></th><td><code>{_e(entry["partner"])}</code></td>'
        f'<td class="status {status}">{status}</td><td>{_e(entry["reason"])}</td>'
        f"<td>{runs_out}</td><td>{checked}</td><td>{_next_step(entry, now)}</td></tr>"
    )


def _next_step(entry: Mapping[str, Any], now: str) -> str:
    """What to do next, and the pending authorization's sign-in link: an anchor only for an http(s) URL that is
    still valid; any other text is shown, escaped, and never made a link."""
    step = _e(entry["next_step"] or "-")
    pending = entry["pending"]
    link = pending.get("link") if pending else None
    if not link:
        return step
    expires = pending.get("expires_at")
    if _passed(expires, now):
        return f"{step} · sign-in link expired {_time(expires)}"
    if not _web_address(str(link)):
        return f"{step} · sign-in link (not a web address): <code>{_e(link)}</code>"
    return f'{step} · <a href="{_e(link)}" rel="noreferrer">sign-in link</a>'


def _passed(moment: str | None, now: str) -> bool:
    """Whether `moment` is at or before `now` (both ISO 8601; False when either is missing or unreadable)."""
    try:
        return bool(moment and now) and dt.datetime.fromisoformat(str(moment)) <= dt.datetime.fromisoformat(now)
    except (TypeError, ValueError):
        return False


def _web_address(url: str) -> bool:
    """An absolute http(s) URL with a host, and nothing a browser would strip or reinterpret (spaces, control
    characters, backslashes)."""
    if any(c.isspace() or not c.isprintable() or c == "\\" for c in url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
