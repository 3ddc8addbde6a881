"""The status report as one self-contained HTML page a team can publish: no external script, stylesheet, font or
image, and no script at all.

Owns: the page (summary counts per status word and per partner, then one table per tenant), every value escaped.
Must not: read anything but the status document (docs/status-json.md); show token material (it holds none).
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from reconciler.status import STATUS_WORDS

__all__ = ["render_status_html"]

_STYLE = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem;color:#1f2328;background:#fff}
h1{font-size:1.4rem;margin:0 0 .25rem}p.meta{color:#59636e;margin:0 0 1rem}
ul.summary{display:flex;gap:.75rem;list-style:none;padding:0;flex-wrap:wrap}
ul.summary li{border:1px solid #d1d9e0;border-radius:6px;padding:.5rem .9rem;min-width:7rem}
ul.summary .count{display:block;font-size:1.5rem;font-weight:600}
table{border-collapse:collapse;margin:.5rem 0 1.5rem;width:100%}
th,td{border:1px solid #d1d9e0;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right}
.healthy{color:#1a7f37}.expiring{color:#9a6700}.needs-reauthorization{color:#cf222e}.pending{color:#0969da}
.error{color:#cf222e;font-weight:600}code{font-size:.9em}
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def render_status_html(document: Mapping[str, Any]) -> str:
    """The page: `data-status-word` / `data-count` attributes carry the summary for automated checks."""
    summary = document["summary"]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Reconciler status · {_e(document['environment'])}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Reconciler status · environment <code>{_e(document['environment'])}</code></h1>",
        (f'<p class="meta">Generated <time datetime="{_e(document["generated_at"])}">{_e(document["generated_at"])}'
        f"</time> · {document['shown']} installations shown of {document['total']} in state · expiring means a "
        f"person is needed within {_e(document['window'])}</p>"),
        '<ul class="summary" id="summary">',
        *(f'<li class="{word}" data-status-word="{word}"><span class="count" data-count="{summary[word]}">'
          f"{summary[word]}</span>{word}</li>" for word in STATUS_WORDS),
        "</ul>",
    ]
    out += [f"<p class=\"note\">{_e(note)}</p>" for note in document["notes"]]
    if document["partners"]:
        out += ["<h2>Per partner</h2>", '<table id="partners"><thead><tr><th>Partner</th>',
                *(f"<th>{word}</th>" for word in STATUS_WORDS), "</tr></thead><tbody>"]
        for partner, counts in document["partners"].items():
            out.append(f"<tr><td><code>{_e(partner)}</code></td>"
                       + "".join(f'<td class="num">{counts[w]}</td>' for w in STATUS_WORDS) + "</tr>")
        out.append("</tbody></table>")
    tenants: dict[str, list[Mapping[str, Any]]] = {}
    for entry in document["installations"]:
        tenants.setdefault(entry["tenant"], []).append(entry)
    for tenant, entries in tenants.items():
        out += [f'<h2 id="tenant-{_e(tenant)}">Tenant <code>{_e(tenant)}</code></h2>',
                ('<table class="installations"><thead><tr><th>Installation</th><th>Status</th><th>Why</th>'
                "<th>Runs out</th><th>Checked</th><th>Next</th></tr></thead><tbody>")]
        for e in entries:
            deadline = e["deadline"]
            runs_out = f"{deadline['what']} {deadline['at']}" if deadline else e["access_token_expires_at"] or "-"
            checked = (e["checked_at"] or "never") + (" (stale)" if e["stale"] else "")
            step = _e(e["next_step"] or "-")
            pending = e["pending"]
            if pending is not None and pending["link"]:
                step += f' · <a href="{_e(pending["link"])}" rel="noreferrer">sign-in link</a>'
            out.append(
                f'<tr data-status="{_e(e["status"])}"><td><code>{_e(e["address"])}</code></td>'
                f'<td class="{_e(e["status"])}">{_e(e["status"])}</td><td>{_e(e["reason"])}</td>'
                f"<td>{_e(runs_out)}</td><td>{_e(checked)}</td><td>{step}</td></tr>"
            )
        out.append("</tbody></table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
